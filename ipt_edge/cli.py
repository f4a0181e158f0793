"""The `ipt-edge` command line: train, export, predict, score, info.

`train` and `export` need the PyTorch side (`pip install 'ipt-edge[export]'`) and import it only
when called; `predict`, `score` and `info` run on the torch-free runtime.
"""

from __future__ import annotations

import importlib
import itertools
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ipt_edge.tables import TableError

app = typer.Typer(
    help="Instance-wise prompt-tuned classifiers: train on a frozen backbone, export to ONNX, run anywhere.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BundleOption = Annotated[
    Path,
    typer.Option("--bundle", "-b", envvar="IPT_EDGE_BUNDLE", help="Bundle folder (or set IPT_EDGE_BUNDLE)."),
]
TaskOption = Annotated[
    str | None, typer.Option("--task", "-t", help="Task in the bundle; may be left out when it has one.")
]
ProviderOption = Annotated[
    str,
    typer.Option("--provider", help="cpu or cuda. cuda fails clearly when ONNX Runtime cannot use it."),
]
PrecisionOption = Annotated[
    str, typer.Option(help="fp32, or int8 where the bundle was exported with --quantize int8.")
]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", help="Intra-op threads (default: ONNX Runtime's, one per core).")
]


def _version(value: bool) -> None:
    if value:
        from ipt_edge import __version__

        typer.echo(f"ipt-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Instance-wise prompt-tuned classifiers: train on a frozen backbone, export to ONNX, run anywhere."""
    # The commands report truncation themselves, with a count; the library's warning would say it twice.
    warnings.filterwarnings("ignore", message=r".*were truncated")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def say(message: str) -> None:
    typer.echo(message, err=True)


def _export_side(module: str):
    """Import a module of the PyTorch side (which imports torch); say how to install it if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        fail(
            f"this command needs the PyTorch side, which is not installed ({error.name} is missing): "
            "pip install 'ipt-edge[export]'"
        )


@app.command()
def train(
    train_file: Annotated[Path, typer.Argument(help="Labelled rows: .csv, .tsv or .jsonl with a header.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write.")],
    dev: Annotated[Path | None, typer.Option(help="Labelled dev rows; the best step on it is kept.")] = None,
    text_column: Annotated[str, typer.Option(help="Column with the text.")] = "text",
    text_pair_column: Annotated[
        str | None, typer.Option(help="Column with the second text, for pair tasks (e.g. entailment).")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Column with the label.")] = "label",
    labels: Annotated[
        str | None,
        typer.Option(help="Label order and names, 'neg,pos' or '0=negative,1=positive'. Default: as found."),
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="A local Hugging Face model folder, or all-MiniLM-L6-v2 (packaged).")
    ] = "all-MiniLM-L6-v2",
    generator: Annotated[
        str,
        typer.Option(
            help="static | lookup | mlp | lstm | cnn; all but lookup also as <kind>-deep (prompts in every "
            "layer). mlp-deep measured best; docs/accuracy.md compares them. Prefix kinds give every layer's "
            "attention P keys/values instead of P positions (faster): prefix (static, P-tuning v2), "
            "mlp-prefix, attn-prefix (per input)."
        ),
    ] = "mlp-deep",
    prompt_length: Annotated[int, typer.Option(help="P, prompt vectors per input.")] = 16,
    pooling: Annotated[str, typer.Option(help="mean (over real tokens) or cls.")] = "mean",
    max_length: Annotated[int, typer.Option(help="Token budget of the text; longer texts are cut.")] = 128,
    epochs: Annotated[float, typer.Option(help="Passes over the training rows (fractions allowed).")] = 2.0,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (warm-up, then linear decay).")] = 5e-3,
    seed: Annotated[int, typer.Option()] = 0,
    max_train_rows: Annotated[int | None, typer.Option(help="Train on a seeded subsample.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Steps between dev evaluations.")] = None,
    threads: ThreadsOption = None,
    init_generator: Annotated[
        Path | None,
        typer.Option(help="Start from the generator of this checkpoint (pretrained on another corpus)."),
    ] = None,
    prefix_from_layer: Annotated[
        int, typer.Option(help="Prefix kinds: the first layer given a prefix (layers below get none).")
    ] = 0,
) -> None:
    """Train a task's prompt generator and head on the frozen backbone; saves a checkpoint."""
    training = _export_side("ipt_edge_export.train")
    from ipt_edge_export.checkpoint import CheckpointError

    TrainOptions, run_training = training.TrainOptions, training.train

    options = TrainOptions(
        train_file=train_file, out_dir=out, dev_file=dev, text_column=text_column,
        text_pair_column=text_pair_column, label_column=label_column, labels=labels,
        backbone=backbone, generator=generator, prompt_length=prompt_length, pooling=pooling,
        max_length=max_length, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        max_train_rows=max_train_rows, eval_every=eval_every, threads=threads,
        init_generator=init_generator, prefix_from_layer=prefix_from_layer,
    )  # fmt: skip
    try:
        run_training(options, progress=say)
    except (TableError, CheckpointError, ValueError) as error:
        fail(str(error))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder written by `ipt-edge train`.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Bundle folder: created, or the task is added to it.")
    ],
    task: Annotated[
        str | None, typer.Option(help="Task name in the bundle (default: the checkpoint's folder name).")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Backbone folder, if not where the checkpoint names it.")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a task of the same name.")] = False,
    tolerance: Annotated[
        float, typer.Option(help="Largest |logit difference| ONNX Runtime vs PyTorch accepted.")
    ] = 1e-4,
    optimize: Annotated[
        bool, typer.Option(help="Fuse attention, GELU and layer norms in the backbone graph (new bundles).")
    ] = True,
    quantize: Annotated[
        str | None,
        typer.Option(help="int8: also build a dynamically quantized encoder (needs --calibration)."),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Labelled file the int8 encoder's accuracy is measured on.")
    ] = None,
    int8_tolerance: Annotated[float, typer.Option(help="Accuracy points int8 may lose against fp32.")] = 0.5,
    text_column: Annotated[str, typer.Option(help="Calibration file: text column.")] = "text",
    text_pair_column: Annotated[
        str | None, typer.Option(help="Calibration file: second text column.")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Calibration file: label column.")] = "label",
) -> None:
    """Export a checkpoint to a bundle: shared backbone graphs once, one generator graph per task.

    Export first runs ONNX Runtime on the checkpoint's real sample inputs and compares the logits with
    PyTorch; beyond --tolerance it refuses and writes nothing.
    """
    _export_side("ipt_edge_export.onnx_export")
    from ipt_edge.bundle import BundleError
    from ipt_edge_export.checkpoint import CheckpointError
    from ipt_edge_export.onnx_export import Calibration, ExportError, export_checkpoint

    if quantize not in (None, "int8"):
        fail(f"--quantize takes int8, got {quantize!r}")
    if quantize and calibration is None:
        fail("--quantize int8 needs --calibration FILE: a labelled file to measure what int8 costs")
    int8 = None
    if quantize:
        int8 = Calibration(calibration, text_column, text_pair_column, label_column, int8_tolerance)
    try:
        report = export_checkpoint(checkpoint, out, task=task, backbone=backbone, replace_task=replace,
                                   tolerance=tolerance, optimize=optimize, int8=int8, log=say)  # fmt: skip
    except (ExportError, CheckpointError, BundleError, TableError) as error:
        fail(str(error))
    say(f"parity: max |logit difference| ONNX Runtime vs PyTorch = {report.parity_max_abs_diff:.2e}")
    typer.echo(f"{report.bundle} task {report.task!r} ready")


def _load(bundle: Path, task: str | None, provider: str, threads: int | None, precision: str):
    from ipt_edge.bundle import BundleError
    from ipt_edge.classifier import Classifier
    from ipt_edge.sessions import ProviderError

    try:
        return Classifier.load(bundle, task=task, providers=provider, threads=threads, precision=precision)
    except (BundleError, ProviderError, ValueError) as error:
        fail(str(error))


def _stdin_lines() -> list[str]:
    lines = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            fail(f"stdin line {number}: not valid UTF-8")
    return lines


@app.command()
def predict(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to classify; none: one per line on stdin.")
    ] = None,
    bundle: BundleOption = Path("bundle"),
    task: TaskOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with all probabilities.")
    ] = False,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 32,
) -> None:
    """Classify texts: prints label, probability and text, one line each (pair tasks: TEXT<tab>PAIR)."""
    from_stdin = not texts
    items = _stdin_lines() if from_stdin else list(texts)
    if not items:
        fail("no texts: pass them as arguments or one per line on stdin")
    classifier = _load(bundle, task, provider, threads, precision)
    inputs: list = []
    for index, text in enumerate(items):
        where = f"stdin line {index + 1}" if from_stdin else f"text {index + 1}"
        if not text.strip():
            fail(f"{where} is empty")
        if classifier.task.text_pair:
            first, tab, second = text.partition("\t")
            if not tab:
                fail(f"{where}: task {classifier.task_name!r} takes pairs, written TEXT<tab>TEXT_PAIR")
            inputs.append((first, second))
        else:
            inputs.append(text)
    try:
        probabilities = classifier.predict_proba(inputs, batch_size=batch_size)
    except ValueError as error:
        fail(str(error))
    if classifier.last_truncated:
        say(
            f"note: {classifier.last_truncated} text(s) were longer than {classifier.task.max_length} tokens and were truncated"
        )
    for text, row in zip(items, probabilities, strict=True):
        best = int(row.argmax())
        if as_json:
            scores = {label: round(float(p), 6) for label, p in zip(classifier.labels, row, strict=True)}
            typer.echo(
                json.dumps(
                    {"text": text, "label": classifier.labels[best], "probabilities": scores},
                    ensure_ascii=False,
                )
            )
        else:
            typer.echo(f"{classifier.labels[best]}\t{row[best]:.4f}\t{text}")


@app.command()
def score(
    input_file: Annotated[Path, typer.Argument(help="Rows to score: .csv, .tsv or .jsonl with a header.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file; written whole or not at all.")],
    bundle: BundleOption = Path("bundle"),
    task: TaskOption = None,
    text_column: Annotated[str, typer.Option(help="Column with the text.")] = "text",
    text_pair_column: Annotated[
        str | None, typer.Option(help="Column with the second text (pair tasks).")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="If the rows are labelled: report accuracy.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per model batch.")] = 32,
    chunk_rows: Annotated[
        int, typer.Option(help="Rows read at a time; batches are sorted by length within a chunk.")
    ] = 4096,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
) -> None:
    """Score a file: adds `prediction` and one `prob_<label>` column per label, same format as the input.

    Streams: memory does not grow with the file. The output appears only once every row is scored.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ipt_edge.tables import AtomicTableWriter, TableReader, detect_format, require_columns

    if out.resolve() == input_file.resolve():
        fail(f"{out}: the output would overwrite the input; choose another -o")
    classifier = _load(bundle, task, provider, threads, precision)
    if classifier.task.text_pair and not text_pair_column:
        fail(f"task {classifier.task_name!r} takes text pairs: pass --text-pair-column")
    added = ["prediction"] + [f"prob_{label}" for label in classifier.labels]
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
            clash = [c for c in added if c in reader.columns]
            if clash:
                fail(f"{input_file}: already has column(s) {clash}, which score would add")
            progress = Progress(TextColumn("scoring"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[rows]} rows"), transient=True)  # fmt: skip
            with AtomicTableWriter(out, reader.columns + added, out_format) as writer, progress:
                job = progress.add_task("score", total=reader.size, rows=0)
                for chunk in _chunks(itertools.chain([first], rows), chunk_rows):
                    texts = _chunk_texts(input_file, chunk, text_column, text_pair_column)
                    probabilities = classifier.predict_proba(texts, batch_size=batch_size)
                    truncated += classifier.last_truncated
                    for (_, row), scores in zip(chunk, probabilities, strict=True):
                        best = int(scores.argmax())
                        label = classifier.labels[best]
                        row["prediction"] = label
                        row.update(
                            {f"prob_{n}": f"{p:.6f}" for n, p in zip(classifier.labels, scores, strict=True)}
                        )
                        if label_column:
                            correct += classifier.label_index.get(row[label_column].strip()) == best
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


def _chunks(rows, size: int):
    chunk = []
    for item in rows:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _chunk_texts(source: Path, chunk, text_column: str, pair_column: str | None) -> list:
    texts: list = []
    for line, row in chunk:
        for column in (text_column, pair_column):
            if column and not row[column].strip():
                raise TableError(f"{source}:{line}: column {column!r} is empty")
        texts.append((row[text_column], row[pair_column]) if pair_column else row[text_column])
    return texts


@app.command()
def info(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    verify: Annotated[bool, typer.Option(help="Check every file's size and sha256.")] = True,
) -> None:
    """Show a bundle: backbone, tasks and their labels, file sizes; checks checksums."""
    from ipt_edge.bundle import BundleError, read_manifest, verified_path

    try:
        manifest = read_manifest(bundle)
    except BundleError as error:
        fail(str(error))
    backbone = manifest.backbone
    typer.echo(f"bundle   {bundle}  (format {manifest.format} v{manifest.format_version})")
    typer.echo(
        f"backbone {backbone.name}  {backbone.model_type}, {backbone.num_layers} layers, hidden {backbone.hidden_size}, "
        f"{backbone.parameters:,} parameters, sha256 {backbone.sha256[:12]}…"
    )
    shared = sum(manifest.files[f].size for f in manifest.shared_files())
    typer.echo(f"shared   {', '.join(manifest.shared_files())}: {shared / 1e6:.1f} MB")
    fusions = ", ".join(f"{op} x{n}" for op, n in manifest.encoder_fusions.items()) or "none"
    typer.echo(f"fusions  {fusions}")
    for name, task in sorted(manifest.tasks.items()):
        size = sum(manifest.files[f].size for f in (task.generator_file, task.head_file))
        share = task.tuned_parameters / backbone.parameters
        typer.echo(
            f"task     {name}: {task.generator} generator, P={task.prompt_length}, "
            f"{task.pooling} pooling, {'text pairs' if task.text_pair else 'single texts'}, max {task.max_length} tokens\n"
            f"         labels: {', '.join(task.labels)}\n"
            f"         {task.tuned_parameters:,} tuned parameters ({share:.2%} of the backbone), {size / 1e6:.2f} MB, "
            f"parity {task.parity_max_abs_diff:.1e}"
        )
        if task.int8:
            q = task.int8
            typer.echo(
                f"         int8: accuracy {q['int8_accuracy']:.4f} vs fp32 {q['fp32_accuracy']:.4f} "
                f"on {q['rows']} rows of {q['file']}"
            )
    if verify:
        problems = []
        for relative in manifest.files:
            try:
                verified_path(bundle, manifest, relative)
            except BundleError as error:
                problems.append(str(error))
        if problems:
            fail("checksums: " + "; ".join(problems))
        typer.echo(f"checksums: all {len(manifest.files)} files match")
