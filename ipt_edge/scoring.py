"""The scoring job: every row of a table gets `prediction` and one `prob_<label>` per label.

One code path turns rows into prediction columns, for `ipt-edge score` (local or `--engine ray`)
and for `ipt_edge.ray`'s predictor: `chunk_texts` checks a chunk's rows (tables.row_text /
row_label) and `scored_rows` / `scored_table` add the columns.

`score_file` streams a file (or a folder of Parquet files) in chunks of `chunk_rows` rows and
commits each chunk: progress survives SIGKILL, and `resume=True` continues after the last
committed chunk. The partial state lives in a hidden sidecar beside the output:

    .<out>.ipt-edge-resume/
        progress.json          written atomically after each chunk: input identity, options,
                               rows committed, and where the committed bytes or parts end
        .<out>.XXXX.partial    CSV/TSV/JSONL: the output so far (a resume cuts it back to the
                               committed size and appends)
        part-000000.parquet    Parquet: one file per committed chunk, joined at the end (one row
                               group each) into the output

The output appears by one rename once complete, then the sidecar is removed. A run that is
stopped (Ctrl-C, SIGTERM) or fails removes its sidecar unless it was started with `resume=True`;
a run killed outright leaves it, and a later run without `resume` refuses to start over it.
Chunks are the same on a resume (the run's chunk_rows and batch_size are recorded and reused),
so a resumed output is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipt_edge.atomic import write_text_atomic
from ipt_edge.tables import (
    AtomicTableWriter,
    Chunk,
    TableError,
    TableReader,
    arrow_schema_for_rows,
    detect_format,
    finite_or_none,
    parquet_files,
    pyarrow_modules,
    require_columns,
    row_label,
    row_text,
    rows_to_arrow,
)
from ipt_edge.tokenization import Text

if TYPE_CHECKING:
    import pyarrow as pa

SIDECAR_SUFFIX = ".ipt-edge-resume"
PROGRESS_FILE = "progress.json"
PROGRESS_VERSION = 1
HEAD_BYTES = 1 << 20  # an input's identity hashes its first MiB


def added_columns(labels: list[str]) -> list[str]:
    return ["prediction"] + [f"prob_{label}" for label in labels]


# ---- rows -> texts -> prediction columns (shared by every engine) -------------------------------


def chunk_texts(
    path: Path,
    chunk: Chunk,
    text_column: str,
    text_pair_column: str | None,
    labels: list[str],
    label_column: str | None = None,
    label_index: dict[str, int] | None = None,
    task_name: str = "",
    label_values: list[str] | None = None,
) -> tuple[list[Text], list[int]]:
    """A chunk's texts (checked) and, with `label_column`, the index of each row's gold label."""
    added = added_columns(labels)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c]
    texts: list[Text] = []
    golds: list[int] = []
    for line, row in zip(chunk.lines, chunk.fields(wanted), strict=True):
        if chunk.table is None:
            clash = [c for c in added if c in row]
            if clash:
                raise TableError(f"{path}:{line}: already has field(s) {clash}, which score adds")
        texts.append(row_text(path, line, row, text_column, text_pair_column))
        if label_column:
            gold = row_label(path, line, row, label_column)
            if label_index is None or gold not in label_index:
                raise TableError(
                    f"{path}:{line}: label {gold!r} is not one of task {task_name!r}'s labels "
                    f"({', '.join(label_values or [])} or {', '.join(labels)})"
                )
            golds.append(label_index[gold])
    return texts, golds


def probabilities(classifier: Any, texts: list[Text], batch_size: int) -> tuple[np.ndarray, int]:
    """[N, C] float32 probabilities, columns in `classifier.labels` order, and how many of the
    texts were truncated."""
    result = classifier.classify(texts, batch_size=batch_size)
    return np.asarray(result.probabilities, dtype=np.float32), int(result.truncated.sum())


def scored_rows(rows: list[dict[str, Any]], labels: list[str], probs: np.ndarray, fmt: str) -> list[dict]:
    """Rows with `prediction` and `prob_<label>` added: JSON numbers (6 decimals) for JSONL,
    6-decimal text for CSV/TSV."""
    best = probs.argmax(axis=1)
    for row, scores, index in zip(rows, probs, best, strict=True):
        row["prediction"] = labels[int(index)]
        for name, p in zip(labels, scores, strict=True):
            row[f"prob_{name}"] = finite_or_none(round(float(p), 6)) if fmt == "jsonl" else f"{p:.6f}"
    return rows


def scored_table(table: pa.Table, labels: list[str], probs: np.ndarray) -> pa.Table:
    """An Arrow table with `prediction` (string) and `prob_<label>` (float32) columns appended."""
    import pyarrow as pa

    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    table = table.append_column("prediction", pa.array([labels[int(i)] for i in best], type=pa.string()))
    for column, name in enumerate(labels):
        table = table.append_column(f"prob_{name}", pa.array(probs[:, column], type=pa.float32()))
    return table


def output_schema(input_schema: pa.Schema, labels: list[str]) -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field("prediction", pa.string())] + [pa.field(f"prob_{n}", pa.float32()) for n in labels]
    schema = input_schema
    for f in fields:
        schema = schema.append(f)
    return schema


# ---- the resumable job ---------------------------------------------------------------------------


def sidecar_path(out: Path) -> Path:
    return out.parent / f".{out.name}{SIDECAR_SUFFIX}"


def input_identity(path: Path) -> dict[str, Any]:
    """What a resume checks the input against: each file's path, size, mtime and first MiB's sha256."""
    files = parquet_files(path) if path.is_dir() else [path]
    identity = []
    for file in files:
        try:
            stat = file.stat()
            with file.open("rb") as handle:
                head = hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()
        except OSError as error:
            raise TableError(f"{file}: cannot read it ({error.strerror or error})") from None
        identity.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns, head])
    return {"files": identity}


def bundle_identity(bundle: Path) -> str:
    """The sha256 of the bundle's manifest (which holds every file's sha256)."""
    try:
        return hashlib.sha256((Path(bundle) / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return "unknown"


@dataclass
class ScoreReport:
    rows: int = 0
    resumed_rows: int = 0  # rows a resume found already committed
    correct: int = 0
    truncated: int = 0
    already_complete: bool = False  # a resume that found the output finished and only published it


@dataclass
class _State:
    """The progress record (progress.json)."""

    input: dict[str, Any]
    options: dict[str, Any]
    layout: dict[str, int]
    rows: int = 0
    correct: int = 0
    truncated: int = 0
    parts: int = 0  # Parquet
    temp: str | None = None  # CSV/TSV/JSONL: the growing output file
    bytes: int = 0
    final: str | None = None  # set once the complete output waits in the sidecar for its rename
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"version": PROGRESS_VERSION, **self.__dict__}
        data.pop("extra")
        return json.dumps(data, indent=1)


def _read_state(sidecar: Path) -> _State | None:
    try:
        data = json.loads((sidecar / PROGRESS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise TableError(
            f"{sidecar / PROGRESS_FILE}: unreadable ({error}); pass --restart to discard the unfinished run"
        ) from None
    if not isinstance(data, dict) or data.pop("version", None) != PROGRESS_VERSION:
        raise TableError(
            f"{sidecar / PROGRESS_FILE}: written by another version; pass --restart to discard the unfinished run"
        )
    try:
        return _State(**data)
    except TypeError as error:
        raise TableError(f"{sidecar / PROGRESS_FILE}: {error}; pass --restart to discard it") from None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{key} was {json.dumps(old.get(key))}, now {json.dumps(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


class Scorer:
    """Where probabilities come from: one Classifier in this process. `ipt_edge.ray` has another.

    `submit(texts)` sees every chunk's texts first when `needs_all_texts` (a cluster ships them
    all before results come back in order); `probabilities(texts)` returns each chunk's [N, C]."""

    needs_all_texts = False

    def __init__(self, classifier: Any, batch_size: int = 32):
        self.classifier = classifier
        self.batch_size = batch_size
        self.labels: list[str] = list(classifier.labels)
        self.label_index: dict[str, int] = dict(classifier.label_index)
        self.last_truncated = 0

    def submit(self, texts: list[Text]) -> None:  # pragma: no cover - only for needs_all_texts
        pass

    def run(self) -> None:
        pass

    def probabilities(self, texts: list[Text]) -> np.ndarray:
        probs, self.last_truncated = probabilities(self.classifier, texts, self.batch_size)
        return probs

    def close(self) -> None:
        pass


def score_file(
    scorer: Scorer,
    input_file: Path,
    out: Path,
    *,
    bundle: Path,
    task: str | None = None,
    task_name: str = "",
    label_values: list[str] | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 32,
    chunk_rows: int = 4096,
    precision: str = "fp32",
    resume: bool = False,
    restart: bool = False,
    on_progress: Callable[[int, int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ScoreReport:
    """Score `input_file` into `out`, committing every chunk; see the module's docstring.

    `on_progress(rows_done, done, total)` after each chunk (done/total: bytes, or rows for
    Parquet input); `on_note(message)` for what the user should know (a resume, say).
    TableError for bad input, a refused resume, or an unwritable output."""
    input_file, out = Path(input_file), Path(out)
    note = on_note or (lambda message: None)
    if out.is_dir():
        raise TableError(f"{out}: is a folder; -o needs a file name")
    if out.resolve() == input_file.resolve():
        raise TableError(f"{out}: the output would overwrite the input; choose another -o")
    labels = scorer.labels
    added = added_columns(labels)
    sidecar = sidecar_path(out)
    owned = False  # whether this run may remove the sidecar when it stops
    report = ScoreReport()
    writer: AtomicTableWriter | None = None
    try:
        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(TableReader(input_file))
            try:
                out_format = detect_format(out)
            except TableError:
                out_format = reader.format
            if out_format == "parquet" and out.suffix.lower() not in (".parquet", ".pq"):
                raise TableError(f"{out}: a Parquet output needs a .parquet name")
            chunks = reader.chunks(chunk_rows)
            first = next(chunks, None)
            if first is None:
                raise TableError(f"{input_file}: no rows to score")
            wanted = {"--text-column": text_column, "--text-pair-column": text_pair_column,
                      "--label-column": label_column}  # fmt: skip
            require_columns(input_file, reader.columns, wanted)
            clash = [c for c in added if c in reader.columns and reader.format == "parquet"]
            if clash:
                raise TableError(f"{input_file}: already has column(s) {clash}, which score adds")
            schema = as_json = None
            if out_format == "parquet":
                if reader.schema is not None:
                    schema, as_json = reader.schema, set()
                else:
                    schema, as_json = arrow_schema_for_rows(input_file, reader.format, reader.columns)
                    clash = [c for c in added if c in schema.names]
                    if clash:
                        raise TableError(f"{input_file}: already has field(s) {clash}, which score adds")
            options = {
                "bundle_manifest_sha256": bundle_identity(bundle),
                "task": task,
                "labels": labels,
                "text_column": text_column,
                "text_pair_column": text_pair_column,
                "label_column": label_column,
                "precision": precision,
                "output": str(out.resolve()),
                "output_format": out_format,
            }
            identity = input_identity(input_file)
            state = _adopt_sidecar(sidecar, out, identity, options, resume, restart, note)
            owned = True
            if state is None:
                state = _State(identity, options, {"chunk_rows": chunk_rows, "batch_size": batch_size})
            else:
                layout = state.layout
                if (layout["chunk_rows"], layout["batch_size"]) != (chunk_rows, batch_size):
                    note(
                        f"resuming with the unfinished run's --chunk-rows {layout['chunk_rows']} and "
                        f"--batch-size {layout['batch_size']}, so that its chunks are scored as before"
                    )
                chunk_rows, batch_size = layout["chunk_rows"], layout["batch_size"]
                scorer.batch_size = batch_size
                report.resumed_rows = state.rows
                if state.final is not None:
                    return _publish(sidecar, out, state, report)
                note(f"resuming {out}: {state.rows} row(s) already committed")
                reader = stack.enter_context(TableReader(input_file))  # read again, in the run's chunks
                chunks = reader.chunks(chunk_rows)
                first = next(chunks)
            check = lambda chunk: chunk_texts(  # noqa: E731
                input_file, chunk, text_column, text_pair_column, labels, label_column,
                scorer.label_index, task_name, label_values,
            )  # fmt: skip
            if scorer.needs_all_texts:  # a first pass ships every text, results come back in order
                with TableReader(input_file) as first_pass:
                    for chunk in _after(first_pass.chunks(chunk_rows), state.rows, sidecar):
                        scorer.submit(check(chunk)[0])
                scorer.run()
            try:
                if out_format != "parquet" and state.temp is not None:
                    temp = sidecar / state.temp
                    if not temp.is_file() or temp.stat().st_size < state.bytes:
                        raise TableError(f"{temp}: shorter than its committed size; pass --restart")
                    writer = AtomicTableWriter(
                        out, reader.columns + added, out_format, append_to=(temp, state.bytes)
                    )
                for chunk in _after(_chain(first, chunks), state.rows, sidecar):
                    texts, golds = check(chunk)
                    probs = scorer.probabilities(texts)
                    state.truncated += scorer.last_truncated
                    if golds:
                        state.correct += int((probs.argmax(axis=1) == np.asarray(golds)).sum())
                    if out_format == "parquet":
                        table = (
                            chunk.table if chunk.table is not None else _arrow(chunk, schema, as_json, out)
                        )
                        part = AtomicTableWriter(
                            sidecar / f"part-{state.parts:06d}.parquet", [], "parquet",
                            schema=output_schema(schema, labels), temp_dir=sidecar,
                        )  # fmt: skip
                        try:
                            part.write_table(scored_table(table, labels, probs))
                        except BaseException:
                            part.abort()
                            raise
                        part.commit()
                        state.parts += 1
                    else:
                        if writer is None:
                            sidecar.mkdir(exist_ok=True)
                            writer = AtomicTableWriter(
                                out, reader.columns + added, out_format, temp_dir=sidecar
                            )
                            state.temp = writer.temp.name
                        for row in scored_rows(chunk.rows, labels, probs, out_format):
                            writer.write(row)
                        state.bytes = writer.checkpoint()
                    state.rows += len(chunk)
                    _save(sidecar, state)
                    if on_progress:
                        on_progress(state.rows, reader.bytes_read, reader.size)
                # Complete: the output waits in the sidecar, recorded, then one rename publishes it.
                if out_format == "parquet":
                    writer = AtomicTableWriter(
                        out, [], "parquet", schema=output_schema(schema, labels), temp_dir=sidecar
                    )
                    _, pq = pyarrow_modules(out)
                    for index in range(state.parts):
                        writer.write_table(pq.read_table(sidecar / f"part-{index:06d}.parquet"))
                writer.finish()
                state.final = writer.temp.name
                writer = None
                _save(sidecar, state)
            finally:
                if writer is not None:
                    if resume:
                        writer.release()  # keep what was committed for the next --resume
                    else:
                        writer.abort()
            return _publish(sidecar, out, state, report)
    except BaseException:
        if owned and not resume:
            shutil.rmtree(sidecar, ignore_errors=True)
        raise


def _after(chunks: Iterator[Chunk], committed: int, sidecar: Path) -> Iterator[Chunk]:
    """The chunks after the `committed` rows (those are read again and skipped, not checked)."""
    seen = 0
    for chunk in chunks:
        if seen + len(chunk) <= committed:
            seen += len(chunk)
            continue
        if seen < committed:
            raise TableError(f"{sidecar}: the committed rows end inside a chunk; pass --restart")
        seen += len(chunk)
        yield chunk


def _chain(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest


def _arrow(chunk: Chunk, schema: pa.Schema, as_json: set[str], out: Path) -> pa.Table:
    try:
        return rows_to_arrow(chunk.rows, schema, as_json)
    except (
        ValueError,
        TypeError,
        UnicodeError,
        OverflowError,
    ) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise TableError(
            f"{out}: the rows at {chunk.lines[0]}..{chunk.lines[-1]} hold a value Parquet cannot store "
            f"({str(error)[:200]}); write a .jsonl output instead"
        ) from None


def _save(sidecar: Path, state: _State) -> None:
    try:
        sidecar.mkdir(exist_ok=True)
        write_text_atomic(sidecar / PROGRESS_FILE, state.to_json())
    except OSError as error:
        raise TableError(f"{sidecar}: cannot write it ({error.strerror or error})") from None


def _adopt_sidecar(
    sidecar: Path,
    out: Path,
    identity: dict[str, Any],
    options: dict[str, Any],
    resume: bool,
    restart: bool,
    note: Callable[[str], None],
) -> _State | None:
    """The unfinished run to continue (None: start afresh), after every check; or a TableError."""
    if not sidecar.exists():
        return None
    if restart:
        note(f"discarding the unfinished run in {sidecar}")
        shutil.rmtree(sidecar)
        return None
    state = _read_state(sidecar)
    if state is None:  # killed before its first commit: nothing to keep
        shutil.rmtree(sidecar)
        return None
    if not resume:
        raise TableError(
            f"{out}: an unfinished run of score left {state.rows} committed row(s) in {sidecar}; "
            "pass --resume to continue it, or --restart to discard it and start over"
        )
    differ = _differences(state.input, identity) and ["the input file changed (path, size, mtime or content)"]
    differ = (differ or []) + _differences(state.options, options)
    if differ:
        raise TableError(
            f"{out}: cannot resume the unfinished run in {sidecar}: {'; '.join(differ)}; "
            "rerun it as it was, or pass --restart to discard it and start over"
        )
    keep = {PROGRESS_FILE, state.temp, state.final} | {f"part-{i:06d}.parquet" for i in range(state.parts)}
    for path in sidecar.iterdir():  # a part or temporary file a kill left half-written
        if path.name not in keep:
            path.unlink()
    return state


def _publish(sidecar: Path, out: Path, state: _State, report: ScoreReport) -> ScoreReport:
    final = sidecar / state.final if state.final else None
    if final is not None and final.exists():
        try:
            os.replace(final, out)
        except OSError as error:
            raise TableError(f"{out}: cannot write it ({error.strerror or error})") from None
    else:
        report.already_complete = True  # renamed by the run that was killed before cleaning up
    shutil.rmtree(sidecar, ignore_errors=True)
    report.rows, report.correct, report.truncated = state.rows, state.correct, state.truncated
    return report
