"""`ipt-edge score`: add predictions and probabilities to every row of a file, streaming."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ipt_edge.cli.app import (
    BatchSizeOption,
    BundleOption,
    PrecisionOption,
    ProviderOption,
    ThreadsOption,
    app,
    fail,
    open_bundle,
    say,
)
from ipt_edge.tables import TableError, finite_or_none, require_columns, row_label, row_text


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for item in rows:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@app.command()
def score(
    input_file: Annotated[Path, typer.Argument(help="Rows to score: .csv, .tsv or .jsonl with a header.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file; written whole or not at all.")],
    bundle: BundleOption = Path("bundle"),
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task in the bundle.")] = None,
    text_column: Annotated[str, typer.Option(help="Column with the text.")] = "text",
    text_pair_column: Annotated[
        str | None, typer.Option(help="Column with the second text (pair tasks).")
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(help="If the rows are labelled: report accuracy (a label the task lacks is an error)."),
    ] = None,
    batch_size: BatchSizeOption = 32,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows read at a time; batches are sorted by length within a chunk.")
    ] = 4096,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
) -> None:
    """Score a file: adds `prediction` and one `prob_<label>` column per label, same format as the input.

    Every input field is kept as it was (JSONL: each row's own keys, with their JSON types). Streams:
    memory does not grow with the file. The output appears only once every row is scored; an
    interrupted run leaves no partial file and a previous output untouched.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ipt_edge.tables import AtomicTableWriter, TableReader, detect_format

    if out.is_dir():
        fail(f"{out}: is a folder; -o needs a file name")
    if out.resolve() == input_file.resolve():
        fail(f"{out}: the output would overwrite the input; choose another -o")
    _, (classifier,) = open_bundle(bundle, [task] if task else None, False, provider, threads, precision)
    if classifier.task.text_pair and not text_pair_column:
        fail(f"task {classifier.task_name!r} takes text pairs: pass --text-pair-column")
    labels = classifier.labels
    added = ["prediction"] + [f"prob_{label}" for label in labels]
    rows_done = correct = truncated = 0
    try:
        with TableReader(input_file) as reader:
            try:
                out_format = detect_format(out)
            except TableError:
                out_format = reader.format
            rows = iter(reader)
            first = next(rows, None)
            if first is None:
                fail(f"{input_file}: no rows to score")
            wanted = {
                "--text-column": text_column,
                "--text-pair-column": text_pair_column,
                "--label-column": label_column,
            }
            require_columns(input_file, reader.columns, wanted)
            progress = Progress(TextColumn("scoring"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[rows]} rows"), transient=True)  # fmt: skip
            with AtomicTableWriter(out, reader.columns + added, out_format) as writer, progress:
                job = progress.add_task("score", total=reader.size, rows=0)
                for chunk in _chunks(itertools.chain([first], rows), chunk_rows):
                    texts = []
                    for line, row in chunk:
                        clash = [c for c in added if c in row]
                        if clash:
                            raise TableError(
                                f"{input_file}:{line}: already has field(s) {clash}, which score adds"
                            )
                        texts.append(row_text(input_file, line, row, text_column, text_pair_column))
                        if label_column:
                            gold = row_label(input_file, line, row, label_column)
                            if gold not in classifier.label_index:
                                raise TableError(
                                    f"{input_file}:{line}: label {gold!r} is not one of task "
                                    f"{classifier.task_name!r}'s labels ({', '.join(classifier.task.label_values)}"
                                    f" or {', '.join(labels)})"
                                )
                    result = classifier.classify(texts, batch_size=batch_size)
                    probabilities = result.probabilities
                    truncated += int(result.truncated.sum())
                    for (_, row), scores in zip(chunk, probabilities, strict=True):
                        best = int(scores.argmax())
                        row["prediction"] = labels[best]
                        for name, p in zip(labels, scores, strict=True):
                            # JSONL keeps numbers as numbers; CSV/TSV get a fixed 6-decimal text.
                            row[f"prob_{name}"] = (
                                finite_or_none(round(float(p), 6)) if out_format == "jsonl" else f"{p:.6f}"
                            )
                        if label_column:
                            correct += (
                                classifier.label_index[row_label(input_file, 0, row, label_column)] == best
                            )
                        writer.write(row)
                    rows_done += len(chunk)
                    progress.update(job, completed=reader.bytes_read, rows=rows_done)
    except TableError as error:
        fail(f"{error} (no output was written)")
    say(f"scored {rows_done} rows -> {out}")
    if truncated:
        say(
            f"note: {truncated} row(s) were longer than {classifier.task.max_length} tokens and were truncated"
        )
    if label_column:
        typer.echo(
            f"accuracy {correct / rows_done:.4f} ({correct}/{rows_done}) against column {label_column!r}"
        )
