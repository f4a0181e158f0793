"""`ipt-edge info`: what a bundle holds, checked as predict checks it: every file's size and sha256,
and every graph opened as loading opens it (the graph contract, a quantized int8 backbone, the heads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ipt_edge.cli.app import app, fail

if TYPE_CHECKING:
    from ipt_edge.manifest import Manifest


@app.command()
def info(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    verify: Annotated[
        bool, typer.Option(help="Check every file's size and sha256, and open every graph as predict does.")
    ] = True,
) -> None:
    """Show a bundle: backbone, tasks and their labels, file sizes; checks it as predict would."""
    from ipt_edge.errors import BundleError
    from ipt_edge.manifest import read_manifest, verified_path

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
    fused = ", ".join(f"{op} x{n}" for op, n in manifest.encoder.fusions.items())
    typer.echo(
        f"fusions  {manifest.encoder.file}: {fused or 'none at export (ONNX Runtime fuses it at load)'}"
    )
    for name, task in sorted(manifest.tasks.items()):
        size = sum(manifest.files[f].size for f in (task.generator_file, task.head_file))
        share = task.tuned_parameters / backbone.parameters
        prompt = (
            "no prompt (the linear probe training kept)"
            if task.prefix_from_layer == backbone.num_layers
            else f"{task.generator} generator, P={task.prompt_length}"
            f"{f' from layer {task.prefix_from_layer}' if task.prefix_from_layer else ''}"
        )
        typer.echo(
            f"task     {name}: {prompt}, "
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
        try:
            precisions = _open_everything(bundle, manifest)
        except BundleError as error:
            fail(str(error))
        tasks = f"{len(manifest.tasks)} task{'' if len(manifest.tasks) == 1 else 's'}"
        typer.echo(
            f"graphs   every graph opens and keeps the contract: backbone ({', '.join(precisions)}), {tasks}"
        )
        typer.echo(f"checksums: all {len(manifest.files)} files match")


def _open_everything(bundle: Path, manifest: Manifest) -> list[str]:
    """Open the bundle with the code predict runs, in each precision it has, and every task: info
    then passes exactly the bundles that load, with no checker of its own. Returns the precisions."""
    from ipt_edge.bundle import Bundle

    precisions = ["fp32", "int8"] if manifest.encoder.int8_file else ["fp32"]
    for precision in precisions:
        loaded = Bundle(bundle, manifest, precision=precision)
        if precision == "fp32":  # a task's files do not depend on the backbone's precision
            for name in loaded.tasks:
                loaded.task(name)
    return precisions
