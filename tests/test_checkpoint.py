"""Checkpoints written by ipt-edge 0.1 (one scale per layer in deep kinds)."""

import shutil

import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from ipt_edge_export.checkpoint import CheckpointError, read_checkpoint  # noqa: E402


def _as_version_0_1(source, target):
    """The checkpoint as 0.1 wrote it: deep kinds also held generator.deep.layer_scale [L]."""
    shutil.copytree(source, target)
    weights = load_file(target / "weights.safetensors")
    weights = {k: v for k, v in weights.items() if k != "generator.layer_gate"}
    weights["generator.deep.layer_scale"] = torch.zeros(2)
    save_file(weights, target / "weights.safetensors")
    return target


def test_a_static_deep_checkpoint_of_0_1_still_loads(checkpoints, tmp_path):
    old = read_checkpoint(_as_version_0_1(checkpoints["static-deep"], tmp_path / "old"))
    assert set(old.weights) == set(read_checkpoint(checkpoints["static-deep"]).weights)


def test_an_instance_deep_checkpoint_of_0_1_is_refused_with_what_to_do(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match=r"mlp-deep checkpoint of ipt-edge 0.1.*Retrain it"):
        read_checkpoint(_as_version_0_1(checkpoints["mlp-deep"], tmp_path / "old"))
