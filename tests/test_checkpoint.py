"""Checkpoints of earlier versions: prepended-prompt generators are refused with their replacement
named; version-1 checkpoints of the families that stayed still load."""

import json
import shutil

import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")


from ipt_edge_export.checkpoint import CheckpointError, read_checkpoint  # noqa: E402
from ipt_edge_export.onnx_export import export_checkpoint  # noqa: E402


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("removed", "replacement"),
    [("static", "prefix"), ("static-deep", "prefix"), ("lookup", "lookup-prefix"), ("mlp-deep", "mlp-prefix"),
     ("lstm", "lstm-prefix"), ("cnn-deep", "cnn-prefix")],
)  # fmt: skip
def test_a_prepend_checkpoint_is_refused_naming_its_replacement(removed, replacement, checkpoints, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(checkpoints["mlp-prefix"], old)

    def as_version_1(config):
        config.update(format_version=1)
        config["ipt"].update(generator=removed, mlp_hidden=32)

    _edit_config(old, as_version_1)
    message = (
        rf"generator '{removed}' prepended prompts, which this ipt-edge no longer runs; retrain with "
        + (rf"--generator {replacement}$")
    )
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(old)
    with pytest.raises(CheckpointError, match=message):  # export refuses it the same way, writing nothing
        export_checkpoint(old, tmp_path / "bundle", log=lambda m: None)
    assert not (tmp_path / "bundle").exists()


def test_a_version_1_checkpoint_is_refused_with_what_to_do(checkpoints, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(checkpoints["attn-prefix"], old)
    _edit_config(old, lambda config: config.update(format_version=1))
    with pytest.raises(CheckpointError, match=r"version 1; .* version 2 \(retrain an older checkpoint"):
        read_checkpoint(old)


def test_an_unknown_checkpoint_version_is_refused(checkpoints, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(checkpoints["prefix"], old)
    _edit_config(old, lambda config: config.update(format_version=7))
    with pytest.raises(
        CheckpointError, match=r"version 7; this version reads 'ipt-edge-checkpoint' version 2"
    ):
        read_checkpoint(old)


def test_damaged_checkpoint_weights_are_refused_naming_the_file(checkpoints, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(checkpoints["prefix"], old)
    (old / "weights.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"weights.safetensors: not a readable safetensors file"):
        read_checkpoint(old)
