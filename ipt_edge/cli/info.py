"""`ipt-edge info`: what a bundle holds, with every file's size and sha256 checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ipt_edge.cli.app import app, fail


@app.command()
def info(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    verify: Annotated[bool, typer.Option(help="Check every file's size and sha256.")] = True,
) -> None:
    """Show a bundle: backbone, tasks and their labels, file sizes; checks checksums."""
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
        typer.echo(
            f"task     {name}: {task.generator} generator, P={task.prompt_length}"
            f"{f' from layer {task.prefix_from_layer}' if task.prefix_from_layer else ''}, "
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
