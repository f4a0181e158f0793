"""Export: parity with PyTorch for every generator, the bundle written whole or not at all. Every test
here trains or exports with PyTorch (the export extra)."""

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.export
pytest.importorskip("torch")

from ipt_edge.bundle import Bundle  # noqa: E402
from ipt_edge.classifier import Classifier  # noqa: E402
from ipt_edge.manifest import read_manifest  # noqa: E402
from ipt_edge_export.checkpoint import read_checkpoint  # noqa: E402
from ipt_edge_export.onnx_export import ExportError, export_checkpoint  # noqa: E402

from .tiny import KINDS, train_checkpoint, write_tsv  # noqa: E402
from .tiny import torch_logits as torch_logits  # noqa: E402

TEXTS = [
    "the film was good",
    "a dull and boring plot , very poor",
    "superb",
    "it is so lovely the cast is great",
]
MORE_TEXTS = [*TEXTS, "good", "the plot and the cast and the story were awful , so boring", "fine film"]


@pytest.mark.parametrize("kind", [*KINDS, "mlp-prefix@1"])
def test_runtime_logits_match_pytorch_for_every_family_at_several_batch_sizes(
    kind, checkpoints, tiny_backbone, tmp_path
):
    export_checkpoint(checkpoints[kind], tmp_path / "b", task="t", log=lambda m: None)
    expected = torch_logits(checkpoints[kind], tiny_backbone, MORE_TEXTS)
    classifier = Classifier.load(tmp_path / "b")
    for batch_size in (1, 3, 7):  # the graphs were traced with 2
        np.testing.assert_allclose(classifier.logits(MORE_TEXTS, batch_size), expected, atol=1e-4, rtol=0)


def test_a_bundle_of_every_family_holds_one_backbone_graph_and_mixes_them_in_a_batch(
    checkpoints, tiny_backbone, tmp_path
):
    path = tmp_path / "b"
    kinds = [*KINDS, "mlp-prefix@1"]
    names = {kind: kind.replace("@", "-from-") for kind in kinds}
    export_checkpoint(checkpoints[kinds[0]], path, task=names[kinds[0]], log=lambda m: None)
    encoder = (path / "encoder.onnx").stat().st_mtime_ns
    for kind in kinds[1:]:
        export_checkpoint(checkpoints[kind], path, task=names[kind], log=lambda m: None)
    assert (path / "encoder.onnx").stat().st_mtime_ns == encoder  # made once, by the first task
    assert sorted(p.name for p in path.glob("*.onnx")) == ["embed.onnx", "encoder.onnx"]
    manifest = read_manifest(path)
    assert (manifest.encoder.file, manifest.encoder.int8_file) == ("encoder.onnx", "")
    assert {info.generator for info in manifest.tasks.values()} == set(KINDS)
    # Every text under three tasks; rows of all tasks share batches (sorted by length), each row equal
    # to its task's PyTorch logits.
    texts = MORE_TEXTS * 3
    tasks = [kinds[(i + 2 * (i // len(MORE_TEXTS))) % len(kinds)] for i in range(len(texts))]
    expected = {kind: torch_logits(checkpoints[kind], tiny_backbone, texts) for kind in kinds}
    bundle = Bundle.load(path)
    for batch_size in (4, 7):
        got = bundle.logits(texts, [names[kind] for kind in tasks], batch_size=batch_size)
        for row, kind in enumerate(tasks):
            np.testing.assert_allclose(got[row], expected[kind][row], atol=1e-4, rtol=0, err_msg=kind)


def test_pair_task_matches_pytorch(tiny_backbone, tmp_path):
    rows = [(f"the film {w}", f"it is {w}", "same") for w in ("good", "bad", "dull")] * 8
    rows += [(f"the film {a}", f"it is {b}", "differ") for a, b in (("good", "bad"), ("dull", "great"))] * 8
    train = write_tsv(tmp_path / "pairs.tsv", ["premise", "hypothesis", "label"], rows)
    checkpoint = train_checkpoint(tiny_backbone, train, None, tmp_path / "ckpt", text_pair_column="hypothesis",
                                  text_column="premise", generator="lookup-prefix")  # fmt: skip
    export_checkpoint(checkpoint, tmp_path / "b", log=lambda m: None)
    pairs = [("the film good", "it is bad"), ("the film dull", "it is dull")]
    runtime = Classifier.load(tmp_path / "b").logits(pairs)
    np.testing.assert_allclose(runtime, torch_logits(checkpoint, tiny_backbone, pairs), atol=1e-4, rtol=0)


def test_second_task_adds_only_its_own_files(checkpoints, tmp_path):
    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="one", log=lambda m: None)
    before = {p.relative_to(path): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    export_checkpoint(checkpoints["prefix"], path, task="two", log=lambda m: None)
    after = {p.relative_to(path): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    changed = {str(p) for p in after if before.get(p) != after[p]}
    assert changed == {"manifest.json", "tasks/two/generator.onnx", "tasks/two/head.safetensors"}
    assert set(read_manifest(path).tasks) == {"one", "two"}
    assert Classifier.load(path, task="two").predict(["good"]) in (["neg"], ["pos"])


def test_exporting_a_task_name_twice_needs_replace(checkpoints, tmp_path):
    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="one", log=lambda m: None)
    with pytest.raises(ExportError, match=r"already has a task 'one'"):
        export_checkpoint(checkpoints["prefix"], path, task="one", log=lambda m: None)
    export_checkpoint(checkpoints["prefix"], path, task="one", replace_task=True, log=lambda m: None)
    assert read_manifest(path).tasks["one"].generator == "prefix"
    assert sorted(p.name for p in (path / "tasks").iterdir()) == ["one"]


def test_parity_miss_refuses_and_leaves_no_bundle(checkpoints, tmp_path):
    path = tmp_path / "b"
    with pytest.raises(ExportError, match=r"parity check failed: .* differ from PyTorch by"):
        export_checkpoint(checkpoints["mlp-prefix"], path, tolerance=-1.0, log=lambda m: None)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_parity_miss_on_an_existing_bundle_leaves_it_as_it_was(checkpoints, tmp_path):
    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="one", log=lambda m: None)
    manifest = (path / "manifest.json").read_text()
    with pytest.raises(ExportError):
        export_checkpoint(checkpoints["prefix"], path, task="two", tolerance=-1.0, log=lambda m: None)
    assert (path / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in (path / "tasks").iterdir()) == ["one"]


def test_task_from_another_backbone_is_refused(checkpoints, tmp_path):
    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="one", log=lambda m: None)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["backbone"]["sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"holds backbone"):
        export_checkpoint(checkpoints["prefix"], path, task="two", log=lambda m: None)


def test_checkpoint_with_a_missing_field_is_refused_by_name(checkpoints, tmp_path):
    from ipt_edge_export.checkpoint import CheckpointError

    broken = tmp_path / "ckpt"
    shutil.copytree(checkpoints["mlp-prefix"], broken)
    config = json.loads((broken / "config.json").read_text())
    del config["backbone"]["source"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"config.json: missing field backbone \(with name, source, sha256\)"
    ):
        export_checkpoint(broken, tmp_path / "b", log=lambda m: None)
    assert not (tmp_path / "b").exists()


def test_int8_export_measures_accuracy_on_the_calibration_file(checkpoints, sentiment_files, tmp_path):
    from ipt_edge_export.onnx_export import Calibration

    _, dev = sentiment_files
    export_checkpoint(
        checkpoints["mlp-prefix"], tmp_path / "b", int8=Calibration(dev, tolerance=100.0), log=lambda m: None
    )
    manifest = read_manifest(tmp_path / "b")
    quality = manifest.tasks["mlp-prefix"].int8
    assert manifest.encoder.int8_file == "encoder.int8.onnx"
    assert quality["rows"] == 24 and 0.0 <= quality["int8_accuracy"] <= 1.0
    int8 = Classifier.load(tmp_path / "b", precision="int8").logits(TEXTS)
    fp32 = Classifier.load(tmp_path / "b").logits(TEXTS)
    assert not np.array_equal(int8, fp32)  # really another graph
    np.testing.assert_allclose(int8, fp32, atol=0.5)


def test_int8_added_to_a_bundle_quantizes_its_one_encoder_once(checkpoints, sentiment_files, tmp_path):
    from ipt_edge_export.onnx_export import Calibration

    calibration = Calibration(sentiment_files[1], tolerance=100.0)
    path = tmp_path / "b"
    export_checkpoint(checkpoints["attn-prefix"], path, task="a", log=lambda m: None)
    export_checkpoint(checkpoints["lstm-prefix"], path, task="l", int8=calibration, log=lambda m: None)
    quantized = (path / "encoder.int8.onnx").stat().st_mtime_ns
    export_checkpoint(checkpoints["cnn-prefix"], path, task="c", int8=calibration, log=lambda m: None)
    assert (path / "encoder.int8.onnx").stat().st_mtime_ns == quantized  # reused
    manifest = read_manifest(path)
    assert manifest.encoder.int8_file == "encoder.int8.onnx"
    assert (manifest.tasks["a"].int8, manifest.tasks["c"].int8["rows"]) == ({}, 24)
    int8 = Classifier.load(path, task="c", precision="int8").logits(TEXTS)
    fp32 = Classifier.load(path, task="c").logits(TEXTS)
    assert not np.array_equal(int8, fp32)
    np.testing.assert_allclose(int8, fp32, atol=0.5)


def test_failed_replace_keeps_the_old_task_working(checkpoints, tmp_path, monkeypatch):
    import ipt_edge_export.onnx_export as onnx_export

    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="one", log=lambda m: None)
    before = Classifier.load(path).logits(TEXTS)

    def interrupted(*args):
        raise OSError("disk full")

    monkeypatch.setattr(onnx_export, "write_manifest", interrupted)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(checkpoints["prefix"], path, task="one", replace_task=True, log=lambda m: None)
    np.testing.assert_array_equal(Classifier.load(path).logits(TEXTS), before)
    assert sorted(p.name for p in (path / "tasks").iterdir()) == ["one"]


@pytest.mark.parametrize("kind", ["lookup-prefix", "attn-prefix"])
def test_a_generator_graph_stores_its_weights_once(kind, checkpoints, tmp_path):
    import onnx

    export_checkpoint(checkpoints[kind], tmp_path / "b", task="t", log=lambda m: None)
    graph = onnx.load(tmp_path / "b" / "tasks" / "t" / "generator.onnx").graph
    stored = sum(int(np.prod(tensor.dims)) for tensor in graph.initializer)
    weights = read_checkpoint(checkpoints[kind]).weights
    generator = sum(v.numel() for k, v in weights.items() if k.startswith("generator."))
    assert stored <= generator * 1.01  # a weight used twice must not be stored twice
