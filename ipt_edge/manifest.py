"""The bundle format (manifest.json, format version 3): what is in a bundle folder, and the
checks before any of it is used.

    bundle/
      manifest.json                  this schema (FORMAT_VERSION), sha256 and size of every file
      tokenizer.json                 shared
      embed.onnx                     shared: input_ids [B,T] -> token_embeds [B,T,H]
      encoder.onnx                   shared, the one backbone graph: token_embeds, masks and every
                                     layer's prefix_kv.l [2,B,heads,P,head_dim] -> hidden [B,T,H]
      encoder.int8.onnx              shared, optional: the same graph, quantized
      tasks/<name>/generator.onnx    per task: input_ids, token_embeds, attention_mask -> prefix_kv.0..L-1
      tasks/<name>/head.safetensors  per task: weight [C,H], bias [C]

The graphs' inputs and outputs are in ipt_edge/graphs.py. The export side (ipt_edge_export)
writes bundles with these classes; the runtime reads them. The JavaScript runtime reads these
tables (format_table()) from js/src/format.js, written from here by js/scripts/write_format.py.
A bundle may come from elsewhere, so reading trusts nothing: other versions are refused, every
path must stay inside the folder, and each file's size and sha256 must match before it is opened.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ipt_edge.atomic import write_text_atomic
from ipt_edge.errors import BundleError

FORMAT = "ipt-edge-bundle"
FORMAT_VERSION = 3
# Earlier formats, refused with the re-export command: what changed since (checkpoints still load).
OLDER_FORMATS = {
    1: "two encoder graphs, prepended prompts",
    2: "prefix keys and values as two [B, L, ...] tensors, not one prefix_kv tensor per layer",
}
MANIFEST = "manifest.json"
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_MANIFEST_BYTES = 1 << 20
# Upper bounds on the manifest's numbers: far above any real model, low enough that a hostile or
# damaged manifest cannot make the runtime allocate absurd arrays (MemoryError) or overflow.
LIMITS = {
    "hidden_size": 1 << 16, "num_layers": 1 << 10, "num_heads": 1 << 10, "vocab_size": 1 << 24, "max_positions": 1 << 20,
    "position_offset": 1 << 10, "parameters": 1 << 40, "prompt_length": 1 << 12,
    "max_length": 1 << 20, "tuned_parameters": 1 << 40, "size": 1 << 40, "rows": 1 << 40,
}  # fmt: skip
DEFAULT_LIMIT = 1 << 40  # of any other whole number
POOLINGS = ("mean", "cls")  # over the real tokens, or the first token (the export side reads it here)
INT8_FIELDS = {"fp32_accuracy": float, "int8_accuracy": float, "rows": int, "file": str}


@dataclass
class FileRecord:
    size: int
    sha256: str


@dataclass
class BackboneInfo:
    name: str
    model_type: str
    sha256: str  # of the source weights the graphs were exported from
    hidden_size: int
    num_layers: int
    num_heads: int
    vocab_size: int
    max_positions: int
    position_offset: int  # RoBERTa: positions start after padding_idx
    parameters: int


@dataclass
class EncoderInfo:
    """The one backbone graph every task runs through."""

    file: str  # encoder.onnx
    int8_file: str  # encoder.int8.onnx, or "" when the bundle has no int8 encoder
    fusions: dict  # ONNX Runtime fusions applied at export, e.g. {"Attention": 6, ...}


@dataclass
class TaskInfo:
    generator: str  # the generator family: prefix | lookup-prefix | mlp-prefix | ... (export/model.py)
    prompt_length: int  # P: prefix keys/values per layer
    prefix_from_layer: int  # layers below this one get no prefix
    pooling: str  # mean | cls, over the real tokens
    labels: list[str]  # display names, in logit order
    label_values: list[str]  # the same labels as written in the training data (e.g. "0", "1")
    text_pair: bool
    max_length: int  # token budget of the text
    tuned_parameters: int
    parity_max_abs_diff: float  # PyTorch vs ONNX Runtime logits, measured at export
    generator_file: str
    head_file: str
    # {} or the int8 encoder's accuracy on a labelled file: fp32_accuracy, int8_accuracy, rows, file
    int8: dict


@dataclass
class Manifest:
    backbone: BackboneInfo
    encoder: EncoderInfo
    tokenizer_file: str = "tokenizer.json"
    embed_file: str = "embed.onnx"
    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data = {"format": data.pop("format"), "format_version": data.pop("format_version"), **data}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def shared_files(self) -> list[str]:
        files = [self.tokenizer_file, self.embed_file, self.encoder.file, self.encoder.int8_file]
        return [f for f in files if f]

    def task(self, name: str | None) -> tuple[str, TaskInfo]:
        """The task called `name`; with None, the only task (an error if there are several)."""
        if name is None:
            if len(self.tasks) != 1:
                raise BundleError(
                    f"the bundle has {len(self.tasks)} tasks ({', '.join(sorted(self.tasks)) or 'none'}); "
                    "choose one with task=... (CLI: --task)"
                )
            name = next(iter(self.tasks))
        if name not in self.tasks:
            raise BundleError(
                f"no task {name!r} in the bundle; it has: {', '.join(sorted(self.tasks)) or 'none'}"
            )
        return name, self.tasks[name]


def format_table() -> dict[str, Any]:
    """The format's tables as JSON data: what the JavaScript runtime reads (js/src/format.js)."""

    def kinds(cls: type) -> dict[str, str]:  # "str", "int", "float", "bool", "dict", "list[str]"
        return dict(cls.__annotations__)

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "older_formats": {str(version): change for version, change in OLDER_FORMATS.items()},
        "manifest": MANIFEST,
        "max_manifest_bytes": MAX_MANIFEST_BYTES,
        "task_name": TASK_NAME.pattern,
        "poolings": list(POOLINGS),
        "limits": LIMITS,
        "default_limit": DEFAULT_LIMIT,
        "records": {
            "backbone": kinds(BackboneInfo),
            "encoder": kinds(EncoderInfo),
            "task": kinds(TaskInfo),
            "int8": {name: kind.__name__ for name, kind in INT8_FIELDS.items()},
            "file": kinds(FileRecord),
        },
    }


# --------------------------------------------------------------------------------------------
# Reading: every field checked, with the field's path in the message.


def _field(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise BundleError(f"{MANIFEST}: missing field {where}{key}")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(
            f"{MANIFEST}: field {where}{key} should be {getattr(kind, '__name__', kind)}, got {value!r:.80}"
        )
    if kind is int and isinstance(value, int) and not 0 <= value <= LIMITS.get(key, DEFAULT_LIMIT):
        raise BundleError(
            f"{MANIFEST}: field {where}{key} = {str(value)[:24]} is out of range (0 to {LIMITS.get(key, DEFAULT_LIMIT)})"
        )
    return value


def _fields_of(kinds: dict[str, Any], data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BundleError(f"{MANIFEST}: {where.rstrip('.')} should be an object")
    values = {}
    for name, kind in kinds.items():
        values[name] = _field(data, name, list if kind == "list[str]" else kind, where)
        if kind == "list[str]" and not all(isinstance(v, str) for v in values[name]):
            raise BundleError(f"{MANIFEST}: field {where}{name} should be a list of strings")
    return values


def _fields(cls: type, data: Any, where: str) -> Any:
    """Every field of the dataclass `cls`, each required and checked, from the object `data`."""
    types = {"str": str, "int": int, "bool": bool, "float": float, "list[str]": "list[str]", "dict": dict}
    return cls(**_fields_of({n: types[a] for n, a in cls.__annotations__.items()}, data, where))


def check_relative_path(path: str, where: str) -> str:
    """A path inside the bundle: relative, forward slashes, no '..', nothing hidden."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") or part.startswith(".") for part in path.split("/"))
    ):
        raise BundleError(f"{MANIFEST}: {where} path {path!r} is not a plain relative path inside the bundle")
    return path


class _Repeated:
    """Stands, in the parsed manifest, for an object that names `key` twice."""

    def __init__(self, key: str):
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict | _Repeated:
    """json's object_pairs_hook. JSON readers keep one of a repeated key's values silently (Python's
    and JavaScript's the last), so a wrong first entry (a sha256, a task) would never be checked."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Repeated(key)
        seen.add(key)
    return dict(pairs)


def _refuse_repeated_keys(data: Any) -> None:
    """Raise naming the first repeated key found and the object that repeats it (a loop, not
    recursion: the manifest may nest as deep as json allows)."""
    stack = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Repeated):
            where = f"in {path}" if path else "at the top level"
            raise BundleError(
                f"{MANIFEST}: key {json.dumps(value.key, ensure_ascii=False)} appears twice {where}"
            )
        if isinstance(value, dict):
            stack.extend((item, f"{path}.{key}" if path else key) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))


def parse_manifest(text: str) -> Manifest:
    try:
        data = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as error:
        raise BundleError(f"{MANIFEST} is not valid JSON ({error.msg}, line {error.lineno})") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of thousands of digits
        raise BundleError(f"{MANIFEST} is not a usable manifest ({str(error)[:120]})") from None
    _refuse_repeated_keys(data)
    _check_format(data)
    backbone = _fields(BackboneInfo, _field(data, "backbone", dict, ""), "backbone.")
    files = {}
    for path, record in _field(data, "files", dict, "").items():
        check_relative_path(path, f"files.{path}")
        files[path] = _fields(FileRecord, record, f"files.{path}.")
        if not re.fullmatch(r"[0-9a-f]{64}", files[path].sha256) or files[path].size < 0:
            raise BundleError(f"{MANIFEST}: files.{path} needs a size >= 0 and a 64-hex sha256")
    tasks = {name: _task(name, info, backbone) for name, info in _field(data, "tasks", dict, "").items()}
    if backbone.hidden_size < 1 or backbone.num_layers < 1 or backbone.parameters < 1:
        raise BundleError(f"{MANIFEST}: backbone needs hidden_size, num_layers and parameters >= 1")
    if backbone.num_heads < 1 or backbone.hidden_size % backbone.num_heads:
        raise BundleError(f"{MANIFEST}: backbone.num_heads must divide hidden_size {backbone.hidden_size}")
    encoder = _fields(EncoderInfo, _field(data, "encoder", dict, ""), "encoder.")
    if not encoder.file:
        raise BundleError(f"{MANIFEST}: encoder.file is empty; every bundle has its backbone graph")
    for name, info in tasks.items():
        if info.int8 and not encoder.int8_file:
            raise BundleError(
                f"{MANIFEST}: tasks.{name}.int8 measures an int8 encoder the bundle does not have"
            )
    manifest = Manifest(backbone=backbone, encoder=encoder, tasks=tasks, files=files)
    manifest.tokenizer_file = _field(data, "tokenizer_file", str, "")
    manifest.embed_file = _field(data, "embed_file", str, "")
    for name, info in tasks.items():
        # num_layers itself: no layer reads the prefix (a linear probe on the frozen backbone).
        if info.prefix_from_layer < 0 or info.prefix_from_layer > backbone.num_layers:
            raise BundleError(
                f"{MANIFEST}: task {name!r}: prefix_from_layer {info.prefix_from_layer} is not a layer "
                f"(0..{backbone.num_layers - 1}), nor {backbone.num_layers} (no prefix)"
            )
    listed = manifest.shared_files() + [f for t in tasks.values() for f in (t.generator_file, t.head_file)]
    for path in listed:
        check_relative_path(path, "a graph")
        if path not in files:
            raise BundleError(f"{MANIFEST}: {path} is used but has no entry in files (size, sha256)")
    return manifest


def _check_format(data: Any) -> None:
    """An ipt-edge bundle of this format version; an older one is refused with the re-export command."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST}: not an ipt-edge bundle (format should be {FORMAT!r})")
    version = data.get("format_version")
    if version in OLDER_FORMATS:
        raise BundleError(
            f"{MANIFEST}: format_version {version}, from an older ipt-edge ({OLDER_FORMATS[version]}); "
            f"this ipt-edge reads version {FORMAT_VERSION}. Re-export each task from its checkpoint into a "
            "new bundle: ipt-edge export CHECKPOINT -o NEW_BUNDLE --task NAME"
        )
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{MANIFEST}: format_version {version!r} is not understood by this ipt-edge, which reads "
            f"version {FORMAT_VERSION}; re-export the bundle, or use a matching ipt-edge"
        )


def _task(name: str, data: Any, backbone: BackboneInfo) -> TaskInfo:
    """One entry of `tasks`, checked on its own and against the backbone's positions."""
    if not TASK_NAME.fullmatch(name):  # not match: its `$` would let a final newline through
        raise BundleError(f"{MANIFEST}: task name {name!r} is not allowed (letters, digits, _ . -)")
    info = _fields(TaskInfo, data, f"tasks.{name}.")
    if len(info.labels) < 2 or len(info.label_values) != len(info.labels) or info.prompt_length < 1:
        raise BundleError(f"{MANIFEST}: task {name!r} needs 2+ labels, one value per label, and a prompt")
    for field_name, values in (("labels", info.labels), ("label_values", info.label_values)):
        if len(set(values)) != len(values):  # each names one column of the output
            raise BundleError(f"{MANIFEST}: tasks.{name}.{field_name} repeats a name: {values}")
    if info.pooling not in POOLINGS:
        raise BundleError(
            f"{MANIFEST}: tasks.{name}.pooling should be one of {POOLINGS}, got {info.pooling!r}"
        )
    if info.max_length < 1:
        raise BundleError(f"{MANIFEST}: task {name!r} needs max_length >= 1")
    needed = info.max_length + backbone.position_offset  # the prefix takes no positions
    if needed > backbone.max_positions:
        raise BundleError(
            f"{MANIFEST}: task {name!r} needs {needed} positions (max_length {info.max_length}, "
            f"offset {backbone.position_offset}), but the backbone has {backbone.max_positions}"
        )
    if info.int8:
        _fields_of(INT8_FIELDS, info.int8, f"tasks.{name}.int8.")
    return info


def read_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: no such bundle folder")
    if not path.is_file():
        raise BundleError(f"{path}: missing; not a bundle, or an export that did not finish")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; refusing to parse it")
    try:
        return parse_manifest(path.read_text(encoding="utf-8"))
    except BundleError as error:  # its message starts with "manifest.json: "
        raise BundleError(f"{bundle_dir}/{error}") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise BundleError(f"{path}: cannot read it ({error.strerror or error})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(bundle_dir: str | Path, manifest: Manifest, relative: str) -> tuple[Path, FileRecord]:
    root = Path(bundle_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise BundleError(f"{root / relative}: resolves outside the bundle ({path}); refusing it")
    record = manifest.files[relative]
    if not path.is_file():
        raise BundleError(f"{root / relative}: missing (the manifest lists it)")
    size = path.stat().st_size
    if size != record.size:
        raise BundleError(
            f"{root / relative}: {size} bytes, the manifest says {record.size}; the file is damaged"
        )
    return path, record


def _mismatch(relative: str) -> BundleError:
    return BundleError(f"{relative}: sha256 does not match the manifest; the file is damaged or was changed")


def verified_path(bundle_dir: str | Path, manifest: Manifest, relative: str) -> Path:
    """The file's absolute path, once it is inside the bundle and its size and sha256 match."""
    path, record = _inside(bundle_dir, manifest, relative)
    if sha256_file(path) != record.sha256:
        raise _mismatch(relative)
    return path


def verified_bytes(bundle_dir: str | Path, manifest: Manifest, relative: str) -> bytes:
    """The file's bytes, read once and checked (inside the bundle, size, sha256): what is used is
    exactly what was checked, even if the file changes on disk afterwards."""
    path, record = _inside(bundle_dir, manifest, relative)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BundleError(f"{path}: cannot read it ({error.strerror or error})") from None
    if len(data) != record.size or hashlib.sha256(data).hexdigest() != record.sha256:
        raise _mismatch(relative)
    return data


def file_record(path: Path) -> FileRecord:
    return FileRecord(size=path.stat().st_size, sha256=sha256_file(path))


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Replace manifest.json in one rename: readers see the old bundle or the new one."""
    write_text_atomic(Path(bundle_dir) / MANIFEST, manifest.to_json())
