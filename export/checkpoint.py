"""Backbones and checkpoints: where the frozen model comes from, and how a trained task is saved.

A checkpoint is a folder with `config.json` (IPTConfig, backbone identity, training record, a few
real sample inputs for export's parity check) and `weights.safetensors` (generator and head only;
no pickle). The backbone is named, not copied: export finds it again and checks its sha256.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ipt_edge.atomic import commit, share_files, temp_dir_beside
from ipt_edge.manifest import sha256_file
from ipt_edge_export import backbones
from ipt_edge_export.architectures import ARCHITECTURES, architecture
from ipt_edge_export.backbones import DEFAULT_BACKBONE
from ipt_edge_export.model import REMOVED_GENERATORS, IPTConfig, IPTModel, check_generator

CHECKPOINT_FORMAT = "ipt-edge-checkpoint"
CHECKPOINT_VERSION = 2  # 2: every generator a prefix family, feature extractors as modules


class CheckpointError(ValueError):
    """A checkpoint or backbone that cannot be used; the message says why and what to do."""


def resolve_backbone_dir(name_or_path: str) -> Path:
    """A local Hugging Face model folder, or a packaged backbone's (export/backbones.py), with a
    CheckpointError the commands already report as bad input."""
    try:
        return backbones.resolve_backbone_dir(name_or_path)
    except backbones.BackboneError as error:
        raise CheckpointError(str(error)) from None


@dataclass
class Backbone:
    name: str  # what the user called it (the default name, or a path)
    path: Path
    model: torch.nn.Module  # the Hugging Face encoder, eval mode, eager attention
    identity: dict  # written into checkpoints and bundle manifests

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"


def check_architecture(path: Path) -> None:
    """Refuse a backbone folder ipt-edge has no adapter for (export/architectures.py), from its
    config.json alone. Read as plain JSON first: for a config without model_type transformers
    lists every model type it knows (~400), and a type it knows but we do not (gpt2) would load
    its weights, with transformers' advice to train them, before being refused."""
    config_file = path / "config.json"
    try:
        kind = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (UnicodeDecodeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{config_file}: not a JSON object ({error})") from None
    if kind not in ARCHITECTURES:
        what = f"model_type {kind!r}" if kind else "names no model_type"
        raise CheckpointError(
            f"{config_file}: {what}; ipt-edge supports the model types {', '.join(sorted(ARCHITECTURES))}"
        )
    from transformers import AutoConfig

    try:  # the adapter's checks of a variant (decoder, relative positions, DeBERTa's convolution)
        architecture(AutoConfig.from_pretrained(path))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_backbone(name_or_path: str = DEFAULT_BACKBONE) -> Backbone:
    path = resolve_backbone_dir(name_or_path)
    weights = path / "model.safetensors"
    for required in ("config.json", "tokenizer.json"):
        if not (path / required).is_file():
            raise CheckpointError(f"{path}: no {required}; a backbone folder needs it")
    if not weights.is_file():
        raise CheckpointError(f"{path}: no model.safetensors (pickled .bin weights are not loaded)")
    check_architecture(path)  # before transformers' model code is even imported (seconds)
    from transformers import AutoModel

    # Eager attention: ONNX Runtime's transformer optimizer fuses attention only in this form.
    model = AutoModel.from_pretrained(path, attn_implementation="eager", use_safetensors=True)
    model.eval()
    config = model.config
    local = Path(name_or_path).expanduser().is_dir()
    identity = {
        "name": path.name if local else name_or_path,
        "source": str(path) if local else name_or_path,  # how export finds it again
        "model_type": config.model_type,
        "sha256": sha256_file(weights),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "max_positions": config.max_position_embeddings,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return Backbone(name_or_path, path, model, identity)


def text_budget(backbone_identity: dict, config: IPTConfig, position_offset: int) -> int:
    """Tokens the text may have: the prefix takes no positions, so all of the backbone's (RoBERTa:
    those after padding_idx)."""
    return min(config.max_length, backbone_identity["max_positions"] - position_offset)


def is_checkpoint(path: Path) -> bool:
    """A folder `ipt-edge train` wrote: config.json of our format beside weights.safetensors."""
    config = path / "config.json"
    if not (path.is_dir() and config.is_file() and (path / "weights.safetensors").is_file()):
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_out_dir(out_dir: str | Path, replace: bool) -> None:
    """Refuse an output that exists, unless `replace` and it is a checkpoint (never anything else),
    and one whose folder cannot be written (found now, not after training)."""
    out_dir = Path(out_dir)
    try:
        temp_dir_beside(out_dir).rmdir()
    except OSError as error:
        raise CheckpointError(
            f"{out_dir}: cannot write a checkpoint there ({error.strerror or error})"
        ) from None
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not replace:
        raise CheckpointError(
            f"{out_dir} already exists; pass --replace to replace the checkpoint there (it is replaced only "
            "once the new one is complete), or choose another -o"
        )
    if out_dir.is_symlink() or not is_checkpoint(out_dir):
        raise CheckpointError(
            f"{out_dir} exists and is not a checkpoint (config.json + weights.safetensors of ipt-edge); "
            "refusing to replace it: choose another -o"
        )


def save_checkpoint(
    out_dir: str | Path,
    model: IPTModel,
    backbone: Backbone,
    training: dict,
    samples: list,
    replace: bool = False,
) -> Path:
    """Write the checkpoint folder atomically: a temp folder renamed into place when complete.

    An existing `out_dir` is refused unless `replace` and it is a checkpoint; the old one is then
    moved aside, the new one renamed in, and only then the old one deleted."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, replace)
    temp = temp_dir_beside(out_dir)
    old = None
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.tuned_state().items()}
        save_file(tensors, temp / "weights.safetensors")
        config = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "ipt": model.config.to_dict(),
            "backbone": backbone.identity,
            "tuned_parameters": model.tuned_parameter_count(),
            "training": training,
            "samples": samples,  # real inputs export runs through both PyTorch and ONNX Runtime
        }
        (temp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        share_files(temp)  # safetensors writes 0600
        check_out_dir(out_dir, replace)  # again: it may have appeared while we trained
        if out_dir.exists():
            old = temp_dir_beside(out_dir)
            os.replace(out_dir, old / out_dir.name)
        commit(temp, out_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        if old is not None and not out_dir.exists():
            os.replace(old / out_dir.name, out_dir)  # put the old checkpoint back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir


@dataclass
class Checkpoint:
    path: Path
    config: IPTConfig
    meta: dict  # the whole config.json
    weights: dict[str, torch.Tensor]


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    config_file, weights_file = path / "config.json", path / "weights.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint (expected config.json and weights.safetensors)")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_file}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{config_file}: not an {CHECKPOINT_FORMAT!r} config")
    ipt = meta.get("ipt")
    generator = ipt.get("generator") if isinstance(ipt, dict) else None
    if isinstance(generator, str) and generator in REMOVED_GENERATORS:  # says what to retrain it as
        try:
            check_generator(generator)
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
    version = meta.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{config_file}: version {version!r}; this version reads {CHECKPOINT_FORMAT!r} version "
            f"{CHECKPOINT_VERSION} (retrain an older checkpoint with `ipt-edge train`)"
        )
    for key, inner in (("ipt", ()), ("backbone", ("name", "source", "sha256")), ("samples", ())):
        if (
            key not in meta
            or (inner and not isinstance(meta[key], dict))
            or any(k not in meta[key] for k in inner)
        ):
            raise CheckpointError(
                f"{config_file}: missing field {key} (with {', '.join(inner) or 'its contents'})"
            )
    if not isinstance(ipt, dict):
        raise CheckpointError(f"{config_file}: field ipt should be an object (IPTConfig's fields)")
    try:
        weights = load_file(weights_file)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise CheckpointError(
            f"{weights_file}: not a readable safetensors file ({str(error)[:200]})"
        ) from None
    try:
        config = IPTConfig(**meta["ipt"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: field ipt is not a valid IPTConfig ({error})") from None
    return Checkpoint(path, config, meta, weights)


def check_weight_names(path: Path, generator: str, wanted: set[str], found: set[str]) -> None:
    """Refuse weights that are not exactly the ones a `generator` model owns, naming the difference."""
    if wanted != found:
        raise CheckpointError(
            f"{path}: weights do not match the {generator} generator "
            f"(missing: {sorted(wanted - found)}, unexpected: {sorted(found - wanted)})"
        )


def model_from_checkpoint(
    checkpoint: Checkpoint, backbone_name: str | None = None
) -> tuple[IPTModel, Backbone]:
    """Rebuild the trained model on its backbone; refuses a backbone with other weights."""
    wanted = checkpoint.meta["backbone"]
    backbone = load_backbone(backbone_name or wanted["source"])
    if backbone.identity["sha256"] != wanted["sha256"]:
        raise CheckpointError(
            f"{checkpoint.path} was trained on backbone {wanted['name']!r} with weights sha256 "
            f"{wanted['sha256'][:12]}…, but {backbone.path} has {backbone.identity['sha256'][:12]}…"
        )
    model = IPTModel(backbone.model, checkpoint.config)
    check_weight_names(
        checkpoint.path, checkpoint.config.generator, set(model.tuned_state()), set(checkpoint.weights)
    )
    model.load_state_dict(checkpoint.weights, strict=False)
    model.eval()
    return model, backbone
