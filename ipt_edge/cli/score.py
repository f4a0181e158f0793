"""`ipt-edge score`: add predictions and probabilities to every row of a file, streaming."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ipt_edge.cli.app import (
    AllTasksOption,
    BatchSizeOption,
    BundleOption,
    PrecisionOption,
    ProviderOption,
    TasksOption,
    ThreadsOption,
    app,
    fail,
    open_bundle,
    say,
)
from ipt_edge.tables import TableError

if TYPE_CHECKING:
    from ipt_edge.bundle import Bundle
    from ipt_edge.scoring import Scorer, ScoreReport
    from ipt_edge.task import Task


@app.command()
def score(
    input_file: Annotated[
        Path,
        typer.Argument(
            help="Rows to score: .csv, .tsv or .jsonl with a header, a .parquet file, or a folder of "
            ".parquet files (read in name order as one dataset)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output file (.csv, .tsv, .jsonl or .parquet); written whole or not at all."
        ),
    ],
    bundle: BundleOption = Path("bundle"),
    task: TasksOption = None,
    all_tasks: AllTasksOption = False,
    task_column: Annotated[
        str | None,
        typer.Option(
            help="Score each row with the task this column names (rows of different tasks share "
            "batches); adds `prediction` and `prob_<label>` for every label of the bundle's tasks, "
            "empty where a label is not the row's task's."
        ),
    ] = None,
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
        int,
        typer.Option(
            min=1,
            help="Rows read, scored and committed at a time; batches are sorted by length within a chunk.",
        ),
    ] = 4096,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an unfinished run (killed, or stopped while --resume was on) after its last "
            "committed chunk; with none, start one. Ctrl-C then keeps the committed chunks.",
        ),
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an unfinished run's committed chunks and start over.")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="local: this process. ray: Ray Data actors, each opening the bundle once "
            '(pip install "ipt-edge\\[ray]").'
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="--engine ray: the cluster to join (e.g. ray://head:10001 or auto); "
            "default: start a local one on this machine."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="--engine ray: actors, each with --threads CPUs (default 1) and as many ONNX Runtime "
            "threads; default: the cluster's CPUs / threads.",
        ),
    ] = None,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
) -> None:
    """Score a file: adds `prediction` and one `prob_<label>` column per label.

    Several tasks in one pass: --task A --task B (or --all-tasks) adds `A_prediction`,
    `A_prob_<label>`, ... per task; --task-column COL scores each row with the task it names.

    The output's format follows its suffix (default: the input's), so CSV in, Parquet out works.
    Every input field is kept as it was (JSONL: each row's own keys with their JSON types; Parquet:
    every column with its Arrow type; probabilities are float32 columns in Parquet).

    Streams: memory does not grow with the file. Each chunk of rows is committed to a hidden
    `.OUT.ipt-edge-resume/` folder beside the output: after a crash or kill -9, rerun with --resume
    to continue where the last committed chunk ended (a different input or options is refused).
    The output appears only once every row is scored; a previous output stays untouched until then.

    Examples:

      ipt-edge score reviews.parquet -o scored.parquet -b bundle

      ipt-edge score big.csv -o scored.parquet --resume      (rerun the same line after a kill)

      ipt-edge score data/ -o scored.parquet --engine ray --address auto --workers 8 --threads 2
    """
    from ipt_edge.progress import Progress
    from ipt_edge.scoring import score_file

    _refuse_option_clashes(
        engine, address, workers, resume, restart, bool(task_column), bool(task or all_tasks)
    )
    try:  # a bar on a terminal, a line every 30 s in a log; Parquet input counts rows, the others bytes
        parquet_in = input_file.is_dir() or input_file.suffix.lower() in (".parquet", ".pq")
        progress = Progress("scoring", unit="rows" if parquet_in else "bytes")
    except ValueError as error:
        fail(str(error))
    loaded, tasks = open_bundle(bundle, task, all_tasks or bool(task_column), provider, threads, precision)
    _check_tasks(tasks, bool(task or all_tasks or task_column), task_column, text_pair_column, label_column)
    scorer = _scorer(
        loaded, tasks, task_column, engine, bundle, address, workers, threads, batch_size, precision, provider
    )

    def on_progress(rows: int, done: int, total: int) -> None:
        progress.update(done, total=total, rows=rows)

    try:
        with progress:
            report = score_file(
                scorer, input_file, out, bundle=bundle, task=[t.name for t in tasks], text_column=text_column,
                text_pair_column=text_pair_column, label_column=label_column, batch_size=batch_size,
                chunk_rows=chunk_rows, precision=precision, resume=resume, restart=restart,
                on_progress=on_progress, on_note=say,
            )  # fmt: skip
    except TableError as error:
        kept = " (committed chunks kept for --resume)" if resume else " (no output was written)"
        fail(f"{error}{kept}")
    finally:
        scorer.close()
    _say_done(report, out, label_column)


def _refuse_option_clashes(
    engine: str,
    address: str | None,
    workers: int | None,
    resume: bool,
    restart: bool,
    task_column: bool,
    tasks: bool,
) -> None:
    if engine not in ("local", "ray"):
        fail(f"--engine must be local or ray, got {engine!r}")
    if engine == "local" and (address is not None or workers is not None):
        fail("--address and --workers are for --engine ray")
    if resume and restart:
        fail(
            "--resume and --restart exclude each other: --resume continues an unfinished run, --restart discards it"
        )
    if task_column and tasks:
        fail("--task-column scores each row with its own task; leave out --task and --all-tasks")


def _check_tasks(
    tasks: list[Task],
    chosen: bool,
    task_column: str | None,
    text_pair_column: str | None,
    label_column: str | None,
) -> None:
    """The tasks fit the run: chosen where the bundle has several, each reading the texts given
    (pairs or single), and gold labels that say which task they are for."""
    if not chosen and len(tasks) > 1:
        names = ", ".join(t.name for t in tasks)
        fail(
            f"the bundle has {len(tasks)} tasks ({names}): choose with --task (repeatable), --all-tasks, or --task-column"
        )
    for one in tasks:
        if one.text_pair != bool(text_pair_column):
            fail(
                f"task {one.name!r} takes {'text pairs: pass --text-pair-column' if one.text_pair else 'single texts: leave out --text-pair-column'}"
            )
    if label_column and len(tasks) > 1 and not task_column:
        fail("--label-column with several tasks needs --task-column (which task each gold label is for)")


def _scorer(
    loaded: Bundle,
    tasks: list[Task],
    task_column: str | None,
    engine: str,
    bundle: Path,
    address: str | None,
    workers: int | None,
    threads: int | None,
    batch_size: int,
    precision: str,
    provider: str,
) -> Scorer:
    """Where the probabilities come from: the bundle in this process, or Ray Data's actors."""
    from ipt_edge.scoring import Outputs, Scorer

    if engine == "local":
        outputs = Outputs.for_tasks({t.name: t.labels for t in tasks}, task_column)
        return Scorer(loaded, outputs, {t.name: t.label_index for t in tasks}, batch_size)
    if len(tasks) > 1 or task_column:
        fail("--engine ray scores one task per run; pass one --task (no --task-column)")
    from ipt_edge.ray import RayScorer, RayUnavailable

    try:
        return RayScorer(
            bundle, tasks[0], address=address, workers=workers, threads=threads or 1,
            batch_size=batch_size, precision=precision, provider=provider,
        )  # fmt: skip
    except RayUnavailable as error:
        fail(str(error))


def _say_done(report: ScoreReport, out: Path, label_column: str | None) -> None:
    if report.already_complete:
        say(f"the unfinished run had completed {out}; nothing left to do")
    resumed = f" ({report.resumed_rows} of them committed before this run)" if report.resumed_rows else ""
    say(f"scored {report.rows} row{'' if report.rows == 1 else 's'} -> {out}{resumed}")
    if report.truncated:
        say(f"note: {report.truncated} row(s) were longer than their task's token budget and were truncated")
    if label_column and report.rows:
        typer.echo(
            f"accuracy {report.correct / report.rows:.4f} ({report.correct}/{report.rows}) against column {label_column!r}"
        )
