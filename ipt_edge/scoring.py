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
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipt_edge.atomic import commit, write_text_atomic
from ipt_edge.parquet import arrow_schema_for_rows, parquet_files, pyarrow_modules, rows_to_arrow
from ipt_edge.tables import (
    AtomicTableWriter,
    Chunk,
    TableError,
    TableReader,
    detect_format,
    finite_or_none,
    require_columns,
    row_label,
    row_text,
)
from ipt_edge.tokenizer import Text, TextError

if TYPE_CHECKING:
    import pyarrow as pa

SIDECAR_SUFFIX = ".ipt-edge-resume"
PROGRESS_FILE = "progress.json"
PROGRESS_VERSION = 1
HEAD_BYTES = 1 << 20  # an input's identity hashes its first MiB


@dataclass
class Outputs:
    """The columns score adds, in groups: each group is a `prediction` column and one
    `prob_<label>` column per label.

    one task:                 prediction, prob_<label>...                  (`Outputs.single`)
    several tasks, every row: <task>_prediction, <task>_prob_<label>... per task
    a task per row (column):  prediction, prob_<label> for every label of every task; a row
                              fills its own task's labels and leaves the others empty (null)

    A chunk's results are one float matrix [N, K] over the K probability columns (NaN: empty)."""

    groups: list[tuple[str, list[str]]]  # (column prefix, labels): "" or "<task>_"
    tasks: dict[str, list[int]]  # task -> the probability columns (of K) its labels fill
    task_column: str | None = None  # the column naming each row's task

    @classmethod
    def single(cls, task: str, labels: list[str]) -> Outputs:
        return cls([("", list(labels))], {task: list(range(len(labels)))})

    @classmethod
    def for_tasks(cls, labels: dict[str, list[str]], task_column: str | None = None) -> Outputs:
        """`labels`: each task's labels, in output order. Several tasks and no task column: a
        group per task; with a task column: one group over the union of their labels."""
        if len(labels) == 1 and task_column is None:
            ((task, names),) = labels.items()
            return cls.single(task, names)
        if task_column is None:
            groups, tasks, start = [], {}, 0
            for task, names in labels.items():
                groups.append((f"{task}_", list(names)))
                tasks[task] = list(range(start, start + len(names)))
                start += len(names)
            return cls(groups, tasks)
        union = list(dict.fromkeys(name for names in labels.values() for name in names))
        tasks = {task: [union.index(name) for name in names] for task, names in labels.items()}
        return cls([("", union)], tasks, task_column)

    @property
    def added(self) -> list[str]:
        return [
            name
            for prefix, labels in self.groups
            for name in [f"{prefix}prediction"] + [f"{prefix}prob_{label}" for label in labels]
        ]

    @property
    def width(self) -> int:
        return sum(len(labels) for _, labels in self.groups)

    def predictions(self, probs: np.ndarray) -> list[list[str | None]]:
        """Per group, each row's most probable label among its filled columns (None: none filled)."""
        out, start = [], 0
        for _, labels in self.groups:
            block = probs[:, start : start + len(labels)]
            filled = ~np.isnan(block).all(axis=1)
            best = np.nanargmax(np.where(np.isnan(block), -np.inf, block), axis=1) if len(block) else []
            out.append([labels[int(b)] if f else None for b, f in zip(best, filled, strict=True)])
            start += len(labels)
        return out


# ---- rows -> texts -> prediction columns (shared by every engine) -------------------------------


def chunk_texts(
    path: Path,
    chunk: Chunk,
    text_column: str,
    text_pair_column: str | None,
    outputs: Outputs,
    label_column: str | None = None,
    label_indexes: dict[str, dict[str, int]] | None = None,
) -> tuple[list[Text], list[str], list[int]]:
    """A chunk's texts (checked), each row's task (one task, or the task column's), and with
    `label_column` each row's gold label as a probability column index."""
    added = outputs.added
    wanted = [c for c in (text_column, text_pair_column, label_column, outputs.task_column) if c]
    texts: list[Text] = []
    tasks: list[str] = []
    golds: list[int] = []
    only = next(iter(outputs.tasks)) if len(outputs.tasks) == 1 else None
    for line, row in zip(chunk.lines, chunk.fields(wanted), strict=True):
        if chunk.table is None:
            clash = [c for c in added if c in row]
            if clash:
                raise TableError(f"{path}:{line}: already has field(s) {clash}, which score adds")
        texts.append(row_text(path, line, row, text_column, text_pair_column))
        task = only
        if outputs.task_column:
            task = row_label(path, line, row, outputs.task_column)
            if task not in outputs.tasks:
                raise TableError(
                    f"{path}:{line}: no task {task!r} in the bundle (column {outputs.task_column!r}); "
                    f"it has: {', '.join(outputs.tasks)}"
                )
        tasks.append(task or "")
        if label_column and task:
            gold = row_label(path, line, row, label_column)
            index = (label_indexes or {}).get(task, {})
            if gold not in index:
                raise TableError(
                    f"{path}:{line}: label {gold!r} is not one of task {task!r}'s labels ({', '.join(sorted(index))})"
                )
            golds.append(outputs.tasks[task][index[gold]])
    return texts, tasks, golds


def refused_row(error: TextError, path: Path, chunk: Chunk, columns: list[str | None]) -> TableError:
    """The first text the runtime refused (of a chunk's texts, in order), named as the input names
    it: the file, the row and the column (`columns`: the text's, the pair's)."""
    refused = error.refused[0]
    return TableError(
        f"{path}:{chunk.lines[refused.index]}: column {columns[refused.part]!r} {refused.problem}"
    )


def probabilities(
    bundle: Any, texts: list[Text], tasks: list[str], outputs: Outputs, batch_size: int
) -> tuple[np.ndarray, int]:
    """The chunk's [N, K] float32 probability matrix (NaN where a row's task has no such label),
    and how many texts were truncated. Rows of every task share batches (Bundle.run)."""
    matrix = np.full((len(texts), outputs.width), np.nan, dtype=np.float32)
    if outputs.task_column:
        result = bundle.run(texts, tasks, batch_size)
        for row, (task, p) in enumerate(zip(tasks, result.probabilities, strict=True)):
            matrix[row, outputs.tasks[task]] = p
        return matrix, int(result.truncated.sum())
    answers = bundle.predict_tasks(texts, list(outputs.tasks), batch_size)  # every task on every row
    for name, block in answers.probabilities.items():
        matrix[:, outputs.tasks[name]] = block
    return matrix, int(answers.truncated.sum())


def scored_rows(rows: list[dict[str, Any]], outputs: Outputs, probs: np.ndarray, fmt: str) -> list[dict]:
    """Rows with the prediction and probability columns added: JSON numbers (6 decimals) or null
    for JSONL, 6-decimal text or empty for CSV/TSV."""
    predictions = outputs.predictions(probs)
    names = [(prefix, labels) for prefix, labels in outputs.groups]
    for index, row in enumerate(rows):
        column = 0
        for (prefix, labels), predicted in zip(names, predictions, strict=True):
            row[f"{prefix}prediction"] = predicted[index] if fmt == "jsonl" else predicted[index] or ""
            for label in labels:
                p = float(probs[index, column])
                if fmt == "jsonl":
                    row[f"{prefix}prob_{label}"] = finite_or_none(round(p, 6))
                else:
                    row[f"{prefix}prob_{label}"] = "" if p != p else f"{p:.6f}"
                column += 1
    return rows


def scored_table(table: pa.Table, outputs: Outputs, probs: np.ndarray) -> pa.Table:
    """An Arrow table with the prediction (string) and probability (float32, null where empty)
    columns appended."""
    import pyarrow as pa

    column = 0
    for (prefix, labels), predicted in zip(outputs.groups, outputs.predictions(probs), strict=True):
        table = table.append_column(f"{prefix}prediction", pa.array(predicted, type=pa.string()))
        for label in labels:
            values = probs[:, column]
            table = table.append_column(
                f"{prefix}prob_{label}", pa.array(values, type=pa.float32(), mask=np.isnan(values))
            )
            column += 1
    return table


def output_schema(input_schema: pa.Schema, outputs: Outputs) -> pa.Schema:
    import pyarrow as pa

    schema = input_schema
    for prefix, labels in outputs.groups:
        schema = schema.append(pa.field(f"{prefix}prediction", pa.string()))
        for label in labels:
            schema = schema.append(pa.field(f"{prefix}prob_{label}", pa.float32()))
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

    def to_json(self) -> str:
        return json.dumps({"version": PROGRESS_VERSION, **self.__dict__}, indent=1)


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
    """Where probabilities come from: a Bundle in this process. `ipt_edge.ray` has another.

    `submit(texts)` sees every chunk's texts first when `needs_all_texts` (a cluster ships them
    all before results come back in order); `probabilities(texts, tasks)` returns each chunk's
    [N, K] matrix over `outputs`' probability columns, and how many of the texts were truncated."""

    needs_all_texts = False

    def __init__(
        self, bundle: Any, outputs: Outputs, label_indexes: dict[str, dict[str, int]], batch_size: int = 32
    ):
        self.bundle = bundle
        self.outputs = outputs
        self.label_indexes = label_indexes  # task -> gold label (name or training value) -> index
        self.batch_size = batch_size

    def submit(self, texts: list[Text]) -> None:  # pragma: no cover - only for needs_all_texts
        pass

    def run(self) -> None:
        pass

    def probabilities(self, texts: list[Text], tasks: list[str]) -> tuple[np.ndarray, int]:
        return probabilities(self.bundle, texts, tasks, self.outputs, self.batch_size)

    def close(self) -> None:
        pass


def score_file(
    scorer: Scorer,
    input_file: Path,
    out: Path,
    *,
    bundle: Path,
    task: str | list[str] | None = None,
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
    outputs = scorer.outputs
    added = outputs.added
    sidecar = sidecar_path(out)
    owned = False  # whether this run may remove the sidecar when it stops
    report = ScoreReport()
    writer: Any = None
    try:
        with contextlib.ExitStack() as stack:
            reader: Any = stack.enter_context(TableReader(input_file))
            try:
                out_format = detect_format(out)
            except TableError:
                out_format = reader.format
            if out_format == "parquet" and out.suffix.lower() not in (".parquet", ".pq"):
                raise TableError(f"{out}: a Parquet output needs a .parquet name")
            chunks = reader.chunks(chunk_rows)
            first = next(chunks, None)  # None: a header and no rows (an empty partition of a data job)
            if first is None and reader.format == "jsonl":  # no header either: nothing says what it holds
                raise TableError(f"{input_file}: no rows to score")
            wanted = {"--text-column": text_column, "--text-pair-column": text_pair_column,
                      "--label-column": label_column, "--task-column": outputs.task_column}  # fmt: skip
            require_columns(input_file, reader.columns, wanted)
            clash = [c for c in added if c in reader.columns and reader.format == "parquet"]
            if clash:
                raise TableError(f"{input_file}: already has column(s) {clash}, which score adds")
            schema = None
            as_json: set[str] = set()  # columns stored as JSON text (read for a Parquet output only)
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
                "task_column": outputs.task_column,
                "columns": added,
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
            text_columns = [text_column, text_pair_column]
            check = lambda chunk: chunk_texts(  # noqa: E731
                input_file, chunk, text_column, text_pair_column, outputs, label_column, scorer.label_indexes
            )  # fmt: skip
            if scorer.needs_all_texts:  # a first pass ships every text, results come back in order
                with TableReader(input_file) as first_pass:
                    for chunk in _after(first_pass.chunks(chunk_rows), state.rows, sidecar):
                        try:
                            scorer.submit(check(chunk)[0])
                        except TextError as error:
                            raise refused_row(error, input_file, chunk, text_columns) from None
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
                    texts, tasks, golds = check(chunk)
                    try:
                        probs, truncated = scorer.probabilities(texts, tasks)
                    except TextError as error:
                        raise refused_row(error, input_file, chunk, text_columns) from None
                    state.truncated += truncated
                    if golds:  # one group of columns: a row's prediction is its best filled column
                        predicted = np.argmax(np.where(np.isnan(probs), -np.inf, probs), axis=1)
                        state.correct += int((predicted == np.asarray(golds)).sum())
                    if out_format == "parquet":
                        table = (
                            chunk.table if chunk.table is not None else _arrow(chunk, schema, as_json, out)
                        )
                        part: Any = AtomicTableWriter(
                            sidecar / f"part-{state.parts:06d}.parquet", [], "parquet",
                            schema=output_schema(schema, outputs), temp_dir=sidecar,
                        )  # fmt: skip
                        try:
                            part.write_table(scored_table(table, outputs, probs))
                        except BaseException:
                            part.abort()
                            raise
                        part.commit()
                        state.parts += 1
                    else:
                        if writer is None:
                            _make(sidecar)
                            writer = AtomicTableWriter(
                                out, reader.columns + added, out_format, temp_dir=sidecar
                            )
                            state.temp = writer.temp.name
                        for row in scored_rows(chunk.rows, outputs, probs, out_format):
                            writer.write(row)
                        state.bytes = writer.checkpoint()
                    state.rows += len(chunk)
                    _save(sidecar, state)
                    if on_progress:
                        on_progress(state.rows, reader.bytes_read, reader.size)
                # Complete: the output waits in the sidecar, recorded, then one rename publishes it.
                if out_format == "parquet":
                    writer = AtomicTableWriter(
                        out, [], "parquet", schema=output_schema(schema, outputs), temp_dir=sidecar
                    )
                    _, pq = pyarrow_modules(out)
                    for index in range(state.parts):
                        writer.write_table(pq.read_table(sidecar / f"part-{index:06d}.parquet"))
                if writer is None:  # no rows: the header and the added columns alone
                    _make(sidecar)
                    writer = AtomicTableWriter(out, reader.columns + added, out_format, temp_dir=sidecar)
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


def _chain(first: Chunk | None, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    if first is not None:
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


def _make(sidecar: Path) -> None:
    try:
        sidecar.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TableError(f"{sidecar}: cannot write it ({error.strerror or error})") from None


def _save(sidecar: Path, state: _State) -> None:
    _make(sidecar)
    try:
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
            commit(final, out)
        except OSError as error:
            raise TableError(f"{out}: cannot write it ({error.strerror or error})") from None
    else:
        report.already_complete = True  # renamed by the run that was killed before cleaning up
    shutil.rmtree(sidecar, ignore_errors=True)
    report.rows, report.correct, report.truncated = state.rows, state.correct, state.truncated
    return report
