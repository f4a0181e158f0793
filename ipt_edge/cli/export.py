"""`ipt-edge export`: a checkpoint into a bundle, parity-checked (needs the export extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ipt_edge.cli.app import app, export_side, fail, say
from ipt_edge.tables import TableError


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
        float, typer.Option(min=0.0, help="Largest |logit difference| ONNX Runtime vs PyTorch accepted.")
    ] = 1e-4,
    optimize: Annotated[
        bool,
        typer.Option(
            help="Fuse attention in the backbone graph of a new bundle at export (each layer's prefix read "
            "through the fused Attention's past). Off by default: on CPU the unfused graph, which ONNX Runtime "
            "fuses at load, measured faster (docs/performance.md)."
        ),
    ] = False,
    quantize: Annotated[
        str | None,
        typer.Option(help="int8: also build the dynamically quantized backbone graph (needs --calibration)."),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Labelled file the int8 encoder's accuracy is measured on.")
    ] = None,
    int8_tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Accuracy points int8 may lose against fp32 on the calibration file. A loss is refused only "
            "when it is larger and also significant: an exact one-sided McNemar test on the rows where the two "
            "disagree gives p < 0.01 (a difference of a few rows is noise).",
        ),
    ] = 0.5,
    text_column: Annotated[str, typer.Option(help="Calibration file: text column.")] = "text",
    text_pair_column: Annotated[
        str | None, typer.Option(help="Calibration file: second text column.")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Calibration file: label column.")] = "label",
) -> None:
    """Export a checkpoint to a bundle: the shared backbone graph once, one generator graph per task.

    Export first runs ONNX Runtime on the checkpoint's real sample inputs and compares the logits with
    PyTorch; beyond --tolerance it refuses and writes nothing.
    """
    export_side("ipt_edge_export.onnx_export")
    from ipt_edge.errors import BundleError
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
    except OSError as error:
        fail(f"{error.filename or out}: {error.strerror or error}")
    say(f"parity: max |logit difference| ONNX Runtime vs PyTorch = {report.parity_max_abs_diff:.2e}")
    typer.echo(f"{report.bundle} task {report.task!r} ready")
