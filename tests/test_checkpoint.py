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


def _backbone_folder(folder, config: dict):
    """A backbone folder whose weights are never read: the refusals below come first."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def no_weights_loaded(monkeypatch):
    """Fails a test whose backbone gets as far as transformers' model loading."""
    import transformers

    def too_late(*args, **kwargs):
        raise AssertionError("weights were loaded before the backbone's model_type was checked")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", too_late)


SUPPORTED = "bert, camembert, deberta-v2, distilbert, electra, modernbert, mpnet, roberta, xlm-roberta"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"architectures": ["Foo"], "hidden_size": 8}, "names no model_type"),
        ({"model_type": "gpt2"}, "'gpt2'"),
    ],
)
def test_an_unsupported_backbone_is_refused_from_its_config_alone(config, named, tmp_path, no_weights_loaded):
    from ipt_edge_export.checkpoint import load_backbone

    folder = _backbone_folder(tmp_path / "other", config)
    with pytest.raises(CheckpointError) as refused:
        load_backbone(str(folder))
    message = str(refused.value)
    assert named in message and SUPPORTED in message and str(folder / "config.json") in message
    assert len(message) < 400, message  # not transformers' list of every model type it knows


def test_an_unsupported_variant_of_a_supported_type_is_refused_before_its_weights_load(
    tmp_path, no_weights_loaded
):
    from ipt_edge_export.checkpoint import load_backbone

    folder = _backbone_folder(
        tmp_path / "relative", {"model_type": "bert", "position_embedding_type": "relative_key"}
    )
    with pytest.raises(CheckpointError, match=r"absolute positions; this one has 'relative_key'"):
        load_backbone(str(folder))


def test_a_backbone_config_that_is_not_json_is_refused_by_name(tmp_path, no_weights_loaded):
    from ipt_edge_export.checkpoint import load_backbone

    folder = _backbone_folder(tmp_path / "broken", {})
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: not a JSON object"):
        load_backbone(str(folder))


def test_train_refuses_an_unsupported_backbone_in_one_line(tmp_path, no_weights_loaded):
    from typer.testing import CliRunner

    from ipt_edge.cli import app

    from .tiny import sentiment_rows, write_tsv

    train = write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(8, seed=1))
    folder = _backbone_folder(tmp_path / "gpt", {"model_type": "gpt2"})
    args = ["train", train, "-o", tmp_path / "ckpt", "--backbone", folder]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert SUPPORTED in result.output and "TRAIN this model" not in result.output
    assert not (tmp_path / "ckpt").exists()
