"""Loading a bundle trusts nothing: each problem is refused with a message naming it."""

import json
import shutil

import pytest

from ipt_edge.bundle import BundleError, read_manifest
from ipt_edge.classifier import Classifier


@pytest.fixture
def copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def edit_manifest(path, change):
    data = json.loads((path / "manifest.json").read_text())
    change(data)
    (path / "manifest.json").write_text(json.dumps(data))


def test_a_good_bundle_loads(copy):
    assert Classifier.load(copy).labels == ["neg", "pos"]


def test_missing_manifest_is_refused(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest.json: missing"):
        Classifier.load(copy)


def test_missing_graph_is_refused(copy):
    (copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder.onnx: missing"):
        Classifier.load(copy)


def test_truncated_graph_is_refused(copy):
    data = (copy / "tasks/sentiment/generator.onnx").read_bytes()
    (copy / "tasks/sentiment/generator.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"generator.onnx: .* bytes, the manifest says"):
        Classifier.load(copy)


def test_changed_bytes_fail_the_checksum(copy):
    data = bytearray((copy / "tasks/sentiment/head.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "tasks/sentiment/head.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"head.safetensors: sha256 does not match"):
        Classifier.load(copy)


def test_unknown_format_version_is_refused(copy):
    edit_manifest(copy, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match=r"format_version 99 is not understood"):
        read_manifest(copy)


def test_manifest_that_is_not_json_is_refused(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"not valid JSON"):
        read_manifest(copy)


def test_missing_field_is_named(copy):
    edit_manifest(copy, lambda d: d["tasks"]["sentiment"].pop("labels"))
    with pytest.raises(BundleError, match=r"missing field tasks.sentiment.labels"):
        read_manifest(copy)


def test_path_escaping_the_bundle_is_refused(copy):
    def escape(data):
        data["files"]["../outside.onnx"] = data["files"].pop("encoder.onnx")
        data["encoder_file"] = "../outside.onnx"

    edit_manifest(copy, escape)
    with pytest.raises(BundleError, match=r"not a plain relative path"):
        read_manifest(copy)


def test_symlink_out_of_the_bundle_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(copy / "encoder.onnx", outside)
    (copy / "encoder.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"resolves outside the bundle"):
        Classifier.load(copy)


def test_unknown_task_lists_the_tasks(copy):
    with pytest.raises(BundleError, match=r"no task 'spam' in the bundle; it has: sentiment"):
        Classifier.load(copy, task="spam")


def test_file_not_in_the_checksum_list_is_refused(copy):
    edit_manifest(copy, lambda d: d["files"].pop("embed.onnx"))
    with pytest.raises(BundleError, match=r"embed.onnx is used but has no entry in files"):
        read_manifest(copy)


def test_head_of_the_wrong_shape_is_refused(copy):
    import numpy as np
    from safetensors.numpy import save_file

    from ipt_edge.bundle import file_record

    head = copy / "tasks/sentiment/head.safetensors"
    save_file({"weight": np.zeros((3, 32), np.float32), "bias": np.zeros(3, np.float32)}, head)
    record = file_record(head)
    edit_manifest(
        copy,
        lambda d: d["files"]["tasks/sentiment/head.safetensors"].update(
            size=record.size, sha256=record.sha256
        ),
    )
    with pytest.raises(BundleError, match=r"expected float32 weight \[2, 32\] and bias \[2\]"):
        Classifier.load(copy)


# ---- what export recorded in the committed bundle --------------------------------------------------


def test_manifest_records_parity_and_checksums(bundle):
    manifest = read_manifest(bundle)
    task = manifest.tasks["sentiment"]
    assert task.parity_max_abs_diff <= 1e-4
    assert task.labels == ["neg", "pos"]
    assert set(manifest.files) == {"tokenizer.json", "embed.onnx", "encoder.onnx",
                                   "tasks/sentiment/generator.onnx", "tasks/sentiment/head.safetensors"}  # fmt: skip


def test_backbone_graph_is_fused_at_export(bundle):
    fusions = read_manifest(bundle).encoder_fusions
    assert fusions.get("Attention") == 2  # one per layer of the tiny BERT
    assert fusions.get("SkipLayerNormalization", 0) >= 2


def test_int8_is_refused_where_the_bundle_has_none(bundle):
    with pytest.raises(BundleError, match="has no int8 prepend encoder"):
        Classifier.load(bundle, precision="int8")


def test_a_bundle_of_the_first_version_still_loads(bundle, tmp_path):
    # Written before the prefix fields existed: no encoder_prefix_*, no prefix_from_layer.
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["encoder_prefix_file"], manifest["encoder_prefix_fusions"]
    for task in manifest["tasks"].values():
        del task["prefix_from_layer"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(old).encoder_prefix_file == ""
    assert Classifier.load(old).predict(["good"]) in (["neg"], ["pos"])
