"""The scoring job: every row of a table gets `prediction` and one `prob_<label>` per label.

One code path turns rows into prediction columns, for `ipt-edge score` (local or `--engine ray`)
and for `ipt_edge.ray`'s predictor: `chunk_texts` reads a chunk's fields (tables.row_text /
row_label), the bundle checks the texts (a refused one is named by its row: `refused_row`), and
`scored_rows` / `scored_table` add the columns.

`score_file` streams a file (or a folder of Parquet files) in chunks of `chunk_rows` rows: it
prepares (the output's format and schema, the columns), starts or resumes, then per chunk runs
and commits, the output's sink writing the chunk (_TextSink: appended to one growing file;
_ParquetSink: a part file) before progress.json records it. Progress survives SIGKILL, and
`resume=True` continues after the last committed chunk. The partial state lives in a hidden
sidecar beside the output:

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

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipt_edge.atomic import commit, write_text_atomic
from ipt_edge.parquet import (
    ParquetWriter,
    arrow_schema_for_rows,
    parquet_files,
    pyarrow_modules,
    rows_to_arrow,
)
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

    from ipt_edge.delimited import DelimitedWriter
    from ipt_edge.jsonl import JsonlWriter

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
    outputs = scorer.outputs
    job = _prepare(input_file, out, outputs, text_column, text_pair_column, label_column, chunk_rows)
    options = {  # what a resume must find unchanged
        "bundle_manifest_sha256": bundle_identity(bundle), "task": task, "task_column": outputs.task_column,
        "columns": outputs.added, "text_column": text_column, "text_pair_column": text_pair_column,
        "label_column": label_column, "precision": precision, "output": str(out.resolve()),
        "output_format": job.out_format,
    }  # fmt: skip
    identity = input_identity(input_file)
    sidecar = sidecar_path(out)
    owned = False  # whether this run may remove the sidecar when it stops
    try:
        state = _adopt_sidecar(sidecar, out, identity, options, resume, restart, note)
        owned = True
        layout = {"chunk_rows": chunk_rows, "batch_size": batch_size}
        resumed, report = state is not None, ScoreReport(resumed_rows=state.rows if state else 0)
        if state is None:
            state = _State(identity, options, layout)
        elif state.layout != layout:
            note(
                f"resuming with the unfinished run's --chunk-rows {state.layout['chunk_rows']} and "
                f"--batch-size {state.layout['batch_size']}, so that its chunks are scored as before"
            )
        scorer.batch_size = state.layout["batch_size"]
        if state.final is None:  # else the output is complete, waiting for its rename
            if resumed:
                note(f"resuming {out}: {state.rows} row(s) already committed")
            _score_chunks(scorer, job, state, sidecar, resume, on_progress)
        return _publish(sidecar, out, state, report)
    except BaseException:
        if owned and not resume:
            shutil.rmtree(sidecar, ignore_errors=True)
        raise


@dataclass
class _Job:
    """What a run reads and writes, settled before any row is scored."""

    input: Path
    out: Path
    out_format: str
    columns: list[str]  # the output's: the input's, then the ones score adds (CSV/TSV)
    text_column: str
    text_pair_column: str | None
    label_column: str | None
    schema: pa.Schema | None = None  # Parquet output: the input rows' Arrow schema
    as_json: set[str] = field(default_factory=set)  # ...and its columns stored as JSON text

    @property
    def text_columns(self) -> list[str | None]:
        return [self.text_column, self.text_pair_column]


def _prepare(
    input_file: Path,
    out: Path,
    outputs: Outputs,
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
    chunk_rows: int,
) -> _Job:
    """Every check that needs no row scored: the output's name and format (default: the input's),
    the columns asked for, and for a Parquet output the schema its rows take."""
    if out.is_dir():
        raise TableError(f"{out}: is a folder; -o needs a file name")
    if out.resolve() == input_file.resolve():
        raise TableError(f"{out}: the output would overwrite the input; choose another -o")
    with TableReader(input_file) as reader:
        try:
            out_format = detect_format(out)
        except TableError:
            out_format = reader.format
        if out_format == "parquet" and out.suffix.lower() not in (".parquet", ".pq"):
            raise TableError(f"{out}: a Parquet output needs a .parquet name")
        first = next(reader.chunks(chunk_rows), None)  # None: a header and no rows (an empty partition)
        if first is None and reader.format == "jsonl":  # no header either: nothing says what it holds
            raise TableError(f"{input_file}: no rows to score")
        wanted = {"--text-column": text_column, "--text-pair-column": text_pair_column,
                  "--label-column": label_column, "--task-column": outputs.task_column}  # fmt: skip
        require_columns(input_file, reader.columns, wanted)  # JSONL: the first row's keys
        if reader.format == "parquet" and (clash := [c for c in outputs.added if c in reader.columns]):
            raise TableError(f"{input_file}: already has column(s) {clash}, which score adds")
        columns = reader.columns + outputs.added
        job = _Job(input_file, out, out_format, columns, text_column, text_pair_column, label_column)
        job.schema, in_format, in_columns = reader.schema, reader.format, reader.columns
    if out_format == "parquet" and job.schema is None:  # CSV/TSV/JSONL rows into Parquet
        job.schema, job.as_json = arrow_schema_for_rows(input_file, in_format, in_columns)
        if clash := [c for c in outputs.added if c in job.schema.names]:
            raise TableError(f"{input_file}: already has field(s) {clash}, which score adds")
    return job


def _score_chunks(
    scorer: Scorer,
    job: _Job,
    state: _State,
    sidecar: Path,
    keep: bool,
    on_progress: Callable[[int, int, int], None] | None,
) -> None:
    """The rows after the committed ones, a chunk at a time: run, then commit (the sink writes the
    chunk, progress.json records it). Then the complete output waits in the sidecar, recorded as
    such, for the one rename that publishes it. A writer left open by a failure or a stop is kept
    for --resume (`keep`) or removed."""
    chunk_rows = state.layout["chunk_rows"]
    if scorer.needs_all_texts:  # a first pass ships every text, results come back in order
        with TableReader(job.input) as first_pass:
            for chunk in _after(first_pass.chunks(chunk_rows), state.rows, sidecar):
                texts = _chunk_texts(scorer, job, chunk)[0]
                try:
                    scorer.submit(texts)
                except TextError as error:
                    raise refused_row(error, job.input, chunk, job.text_columns) from None
        scorer.run()
    sink_of = _ParquetSink if job.out_format == "parquet" else _TextSink
    sink = sink_of(job, scorer.outputs, sidecar, state)
    try:
        with TableReader(job.input) as reader:
            for chunk in _after(reader.chunks(chunk_rows), state.rows, sidecar):
                sink.write(chunk, _run(scorer, job, chunk, state))
                state.rows += len(chunk)
                _save(sidecar, state)
                if on_progress:
                    on_progress(state.rows, reader.bytes_read, reader.size)
        state.final = sink.finish()
        _save(sidecar, state)
    finally:
        sink.close(keep)


def _chunk_texts(scorer: Scorer, job: _Job, chunk: Chunk) -> tuple[list[Text], list[str], list[int]]:
    return chunk_texts(
        job.input, chunk, job.text_column, job.text_pair_column, scorer.outputs,
        job.label_column, scorer.label_indexes,
    )  # fmt: skip


def _run(scorer: Scorer, job: _Job, chunk: Chunk, state: _State) -> np.ndarray:
    """A chunk's [N, K] probabilities; its truncated texts, and with gold labels its correct
    predictions, are counted into `state`."""
    texts, tasks, golds = _chunk_texts(scorer, job, chunk)
    try:
        probs, truncated = scorer.probabilities(texts, tasks)
    except TextError as error:
        raise refused_row(error, job.input, chunk, job.text_columns) from None
    state.truncated += truncated
    if golds:  # one group of columns: a row's prediction is its best filled column
        predicted = np.argmax(np.where(np.isnan(probs), -np.inf, probs), axis=1)
        state.correct += int((predicted == np.asarray(golds)).sum())
    return probs


class _TextSink:
    """The sink of a CSV/TSV/JSONL output: one growing file in the sidecar. Each chunk's rows are
    appended and made durable, and the size they end at recorded (state.bytes); a resume cuts the
    file back to that size and appends. Finished, it is the output, waiting for its rename."""

    def __init__(self, job: _Job, outputs: Outputs, sidecar: Path, state: _State):
        self.job, self.outputs, self.sidecar, self.state = job, outputs, sidecar, state
        self.writer: DelimitedWriter | JsonlWriter | None = None
        if state.temp is not None:  # a resume: append after the committed bytes
            temp = sidecar / state.temp
            if not temp.is_file() or temp.stat().st_size < state.bytes:
                raise TableError(f"{temp}: shorter than its committed size; pass --restart")
            self.writer = self._opened(append_to=(temp, state.bytes))

    def _opened(self, **where: Any) -> DelimitedWriter | JsonlWriter:
        writer = AtomicTableWriter(self.job.out, self.job.columns, self.job.out_format, **where)
        assert not isinstance(writer, ParquetWriter)  # a text format, as the sink is made for
        return writer

    def _writer(self) -> DelimitedWriter | JsonlWriter:
        if self.writer is None:  # made with the first chunk, so that a run that fails before leaves none
            _make(self.sidecar)
            self.writer = self._opened(temp_dir=self.sidecar)
            self.state.temp = self.writer.temp.name
        return self.writer

    def write(self, chunk: Chunk, probs: np.ndarray) -> None:
        writer = self._writer()
        for row in scored_rows(chunk.rows, self.outputs, probs, self.job.out_format):
            writer.write(row)
        self.state.bytes = writer.checkpoint()

    def finish(self) -> str:
        """Complete the output (with no rows: the header and the added columns alone); its name."""
        writer = self._writer()
        writer.finish()
        self.writer = None
        return writer.temp.name

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release() if keep else self.writer.abort()


class _ParquetSink:
    """The sink of a Parquet output: each chunk one part file in the sidecar, renamed there whole
    (part-000000.parquet, ...) and counted (state.parts); finished, the parts are joined into the
    output, one row group each, which waits for its rename."""

    def __init__(self, job: _Job, outputs: Outputs, sidecar: Path, state: _State):
        assert job.schema is not None
        self.job, self.outputs, self.sidecar, self.state = job, outputs, sidecar, state
        self.schema = output_schema(job.schema, outputs)
        self.writer: ParquetWriter | None = None  # the joined output, while it is assembled

    def write(self, chunk: Chunk, probs: np.ndarray) -> None:
        table = (
            chunk.table
            if chunk.table is not None
            else _arrow(chunk, self.job.schema, self.job.as_json, self.job.out)
        )
        part = ParquetWriter(
            self.sidecar / f"part-{self.state.parts:06d}.parquet", self.schema, temp_dir=self.sidecar
        )
        with part:  # renamed into place once written, removed if not
            part.write_table(scored_table(table, self.outputs, probs))
        self.state.parts += 1

    def finish(self) -> str:
        _, pq = pyarrow_modules(self.job.out)
        self.writer = ParquetWriter(self.job.out, self.schema, temp_dir=self.sidecar)
        for index in range(self.state.parts):
            self.writer.write_table(pq.read_table(self.sidecar / f"part-{index:06d}.parquet"))
        self.writer.finish()
        name, self.writer = self.writer.temp.name, None
        return name

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release() if keep else self.writer.abort()


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
