"""Loading a bundle trusts nothing: each problem is refused with a message naming it."""

import json
import re
import shutil

import pytest

from ipt_edge.bundle import Bundle
from ipt_edge.classifier import Classifier
from ipt_edge.errors import BundleError
from ipt_edge.manifest import file_record, read_manifest


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
        data["encoder"]["file"] = "../outside.onnx"

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
    encoder = read_manifest(bundle).encoder
    assert encoder.file == "encoder.onnx" and encoder.int8_file == ""
    assert encoder.fusions.get("Attention") == 2  # one per layer of the tiny BERT
    assert encoder.fusions.get("SkipLayerNormalization", 0) >= 2


def test_int8_is_refused_where_the_bundle_has_none(bundle):
    with pytest.raises(BundleError, match="has no int8 encoder; export with --quantize int8"):
        Classifier.load(bundle, precision="int8")


# ---- manifest format 3 ----------------------------------------------------------------------------


def as_format_1(data):
    """The manifest as ipt-edge wrote it before format 2: six flat encoder fields, no num_heads,
    `deep` on each task."""
    encoder = data.pop("encoder")
    data.update(format_version=1, encoder_file=encoder["file"], encoder_int8_file=encoder["int8_file"],
                encoder_fusions=encoder["fusions"], encoder_prefix_file="", encoder_prefix_fusions={},
                encoder_prefix_int8_file="")  # fmt: skip
    del data["backbone"]["num_heads"]
    for task in data["tasks"].values():
        task["deep"] = False


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_format_is_refused_naming_the_reexport_command(copy, version):
    from typer.testing import CliRunner

    from ipt_edge.cli import app

    # Format 2 read like 3 but for its graphs (two [B, L, ...] prefix tensors): its manifest alone
    # would load, its graphs would not; the version number is what refuses it, with the way out.
    edit_manifest(copy, as_format_1 if version == 1 else lambda d: d.update(format_version=2))
    command = "ipt-edge export CHECKPOINT -o NEW_BUNDLE --task NAME"
    with pytest.raises(BundleError, match=rf"format_version {version}, from an older ipt-edge") as refused:
        Classifier.load(copy)
    assert command in str(refused.value)
    for args in (["predict", "-b", str(copy), "good"], ["info", str(copy)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and command in result.output, result.output
        assert "Traceback" not in result.output


def test_a_manifest_without_its_encoder_entry_is_refused(copy):
    edit_manifest(copy, lambda d: d.pop("encoder"))
    with pytest.raises(BundleError, match=r"missing field encoder"):
        read_manifest(copy)


def test_a_format_2_manifest_without_num_heads_is_refused(copy):
    edit_manifest(copy, lambda d: d["backbone"].pop("num_heads"))
    with pytest.raises(BundleError, match=r"missing field backbone.num_heads"):
        read_manifest(copy)


def test_num_heads_that_does_not_divide_the_hidden_size_is_refused(copy):
    edit_manifest(copy, lambda d: d["backbone"].update(num_heads=3))
    with pytest.raises(BundleError, match=r"backbone.num_heads must divide hidden_size 32"):
        read_manifest(copy)


# ---- the graph contract, checked at load -----------------------------------------------------------
# The tiny BERT: 2 layers, 2 heads of 16 (hidden 32); the sentiment task has P = 4.


def retag(path, relative, data: bytes):
    """Replace a bundle file and record its size and sha256, as a careless export would."""
    (path / relative).write_bytes(data)
    record = file_record(path / relative)
    edit_manifest(
        path, lambda d: d["files"].update({relative: {"size": record.size, "sha256": record.sha256}})
    )


def generator_graph(
    layers=2, heads=2, prompts=4, head_dim=16, outputs=None, inputs=("attention_mask",)
) -> bytes:
    """A generator graph of fixed prefix values (0.1), with the dims and names asked for: one
    output [2, batch, heads, prompts, head_dim] per layer, prefix_kv.0.. unless `outputs` names them."""
    pytest.importorskip("onnx", reason="writing a graph needs onnx (export extra)")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    outputs = outputs or tuple(f"prefix_kv.{i}" for i in range(layers))
    dims = [heads, prompts, head_dim]
    constants = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64), "two": np.array([2], np.int64),
                 "rest": np.array(dims, np.int64), "base": np.full([2, 1, *dims], 0.1, np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Shape", [inputs[0]], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["two", "batch", "rest"], ["full"], axis=0),
        *(helper.make_node("Expand", ["base", "full"], [name]) for name in outputs),
    ]
    graph = helper.make_graph(
        nodes,
        "generator",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"]) for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, "batch", *dims]) for name in outputs],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_generator_that_keeps_the_contract_loads_and_runs(copy):
    # The control for the refusals below: the same made-up graph, with the right dims, is accepted.
    retag(copy, "tasks/sentiment/generator.onnx", generator_graph())
    classifier = Classifier.load(copy)
    assert classifier.predict_proba(["good", "the film was dull"]).shape == (2, 2)


@pytest.mark.parametrize(
    "dims, message",
    [
        ({"heads": 4, "head_dim": 8}, "prefix_kv.0 has heads = 4, but the manifest says 2"),
        ({"head_dim": 8}, "prefix_kv.0 has head_dim = 8, but the manifest says 16"),
        ({"prompts": 5}, "prefix_kv.0 has prompts = 5, but the manifest says 4"),
    ],
)
def test_a_generator_whose_fixed_dims_are_off_is_refused(copy, dims, message):
    retag(copy, "tasks/sentiment/generator.onnx", generator_graph(**dims))
    with pytest.raises(BundleError, match=r"tasks/sentiment/generator.onnx: " + re.escape(message)):
        Classifier.load(copy)


@pytest.mark.parametrize(
    "names, message",
    [
        ({"outputs": ("prompt_embeds",)}, r"outputs should be prefix_kv.0 .*; found prompt_embeds float32 rank 5"),
        ({"outputs": ("prefix_kv.0",)}, r"outputs should be prefix_kv.0 .*; found prefix_kv.0 float32 rank 5$"),
        ({"layers": 3}, r"outputs should be prefix_kv.0 .*; found .*prefix_kv.2 float32 rank 5$"),
        ({"inputs": ("prompt_ids",)}, r"inputs should be a subset of input_ids .*; found prompt_ids int64"),
    ],
)  # fmt: skip
def test_a_generator_whose_inputs_or_outputs_are_off_is_refused(copy, names, message):
    retag(copy, "tasks/sentiment/generator.onnx", generator_graph(**names))
    with pytest.raises(BundleError, match=r"tasks/sentiment/generator.onnx: " + message):
        Classifier.load(copy)


def test_a_generator_in_place_of_the_encoder_is_refused(copy):
    retag(copy, "encoder.onnx", (copy / "tasks/sentiment/generator.onnx").read_bytes())
    with pytest.raises(BundleError, match=r"encoder.onnx: inputs should be token_embeds float32 .*; found"):
        Bundle.load(copy)


def test_an_encoder_whose_head_dim_is_off_is_refused(copy):
    onnx = pytest.importorskip("onnx", reason="editing a graph needs onnx (export extra)")
    model = onnx.load(copy / "encoder.onnx")
    for graph_input in model.graph.input:
        if graph_input.name.startswith("prefix_kv."):
            graph_input.type.tensor_type.shape.dim[4].dim_value = 8  # [2, batch, heads, P, head_dim]
    retag(copy, "encoder.onnx", model.SerializeToString())
    with pytest.raises(
        BundleError, match=r"encoder.onnx: prefix_kv.0 has head_dim = 8, but the manifest says 16"
    ):
        Bundle.load(copy)


@pytest.mark.parametrize(
    "backbone, message",
    [
        ({"num_heads": 4}, "prefix_kv.0 has heads = 2, but the manifest says 4"),  # head_dim 8 as well
        ({"num_layers": 3}, "inputs should be token_embeds"),  # no prefix_kv.2
    ],
)
def test_an_encoder_unlike_the_manifests_backbone_is_refused(copy, backbone, message):
    edit_manifest(copy, lambda d: d["backbone"].update(backbone))
    with pytest.raises(BundleError, match=r"encoder.onnx: " + re.escape(message)):
        Bundle.load(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update(labels=["x", "x"]), r"tasks.sentiment.labels repeats a name"),
        (lambda t: t.update(label_values=["1", "1"]), r"tasks.sentiment.label_values repeats a name"),
        (lambda t: t.update(pooling="max"), r"tasks.sentiment.pooling should be one of \('mean', 'cls'\)"),
        (
            lambda t: t.update(int8={"fp32_accuracy": 0.9, "int8_accuracy": 0.9, "rows": 10, "file": "x"}),
            r"tasks.sentiment.int8 measures an int8 encoder the bundle does not have",
        ),
    ],
)
def test_task_fields_that_would_give_wrong_output_are_refused(copy, change, message):
    edit_manifest(copy, lambda d: change(d["tasks"]["sentiment"]))
    with pytest.raises(BundleError, match=message):
        read_manifest(copy)


# ---- a manifest that names a key twice ----------------------------------------------------------
# JSON readers keep one of the two silently (Python's and JavaScript's the last), so a wrong first
# entry would never be checked: every repeated key, at any depth, is refused, naming it and where.

SHA_ZERO = "0" * 64


@pytest.mark.parametrize(
    ("where", "inserted", "message"),  # `inserted` goes before `where`
    [
        ('"format_version"', '"format_version": 2, ', r'key "format_version" appears twice at the top level'),
        ('"embed.onnx": {', f'"embed.onnx": {{"size": 1, "sha256": "{SHA_ZERO}"}}, ', r'key "embed.onnx" appears twice in files'),
        ('"sentiment": {', '"sentiment": {}, ', r'key "sentiment" appears twice in tasks'),
        ('"hidden_size"', '"hidden_size": 64, ', r'key "hidden_size" appears twice in backbone'),
        ('"Attention"', '"Attention": 9, ', r'key "Attention" appears twice in encoder.fusions'),
        ('"generator":', '"notes": [0, {"a": 1, "\\u0061": 1}], ', r'key "a" appears twice in tasks.sentiment.notes\[1\]'),
    ],
    ids=["top", "files", "tasks", "backbone", "fusions", "in-a-list"],
)  # fmt: skip
def test_a_key_given_twice_is_refused_naming_it_and_where(copy, where, inserted, message):
    text = (copy / "manifest.json").read_text()
    assert text.count(where) == 1
    (copy / "manifest.json").write_text(text.replace(where, inserted + where))
    with pytest.raises(BundleError, match=r"manifest.json: " + message):
        Classifier.load(copy)


# ---- an int8 backbone that is not quantized -------------------------------------------------------


def with_int8_encoder(path, graph: bytes):
    """The bundle at `path`, given `graph` as its int8 backbone (encoder.int8.onnx), recorded in
    the manifest as export would; its task has no int8 measurement."""
    (path / "encoder.int8.onnx").write_bytes(graph)
    record = file_record(path / "encoder.int8.onnx")

    def add(data):
        data["encoder"]["int8_file"] = "encoder.int8.onnx"
        data["files"]["encoder.int8.onnx"] = {"size": record.size, "sha256": record.sha256}

    edit_manifest(path, add)
    return path


def quantized(path) -> bytes:
    """The bundle's backbone quantized as `export --quantize int8` does (export/onnx_export.py)."""
    pytest.importorskip("onnx", reason="quantizing a graph needs onnx (export extra)")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.parent / "quantized.onnx"
    quantize_dynamic(path / "encoder.onnx", target, weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True, extra_options={"DefaultTensorType": 1})  # fmt: skip
    return target.read_bytes()


def test_an_int8_backbone_that_is_the_fp32_graph_is_refused(copy):
    # --precision int8 would run fp32 and say nothing
    with_int8_encoder(copy, (copy / "encoder.onnx").read_bytes())
    assert Classifier.load(copy).labels == ["neg", "pos"]  # fp32 does not open it
    with pytest.raises(BundleError, match=r"^encoder.int8.onnx: not a quantized graph"):
        Classifier.load(copy, precision="int8")


def test_a_quantized_int8_backbone_loads_and_runs(copy):
    with_int8_encoder(copy, quantized(copy))
    with pytest.warns(UserWarning, match=r"int8 accuracy was never measured for task 'sentiment'"):
        classifier = Classifier.load(copy, precision="int8")
    assert classifier.predict_proba(["good", "the film was dull"]).shape == (2, 2)


def test_a_warning_is_one_line_without_python_source(copy):
    import subprocess
    import sys

    with_int8_encoder(copy, quantized(copy))
    command = [sys.executable, "-m", "ipt_edge", "predict", "-b", str(copy), "--precision", "int8", "good"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "warning: int8 accuracy was never measured for task 'sentiment'\n"


# ---- `ipt-edge info` passes exactly the bundles that load -------------------------------------------


@pytest.mark.parametrize(
    ("lie", "precision", "message"),
    [
        (lambda b: edit_manifest(b, lambda d: d["encoder"].update(file="embed.onnx")), "fp32",
         "embed.onnx: inputs should be token_embeds float32"),
        (lambda b: edit_manifest(b, lambda d: d["tasks"]["sentiment"].update(prompt_length=5)), "fp32",
         "tasks/sentiment/generator.onnx: prefix_kv.0 has prompts = 4, but the manifest says 5"),
        (lambda b: with_int8_encoder(b, (b / "encoder.onnx").read_bytes()), "int8",
         "encoder.int8.onnx: not a quantized graph"),
    ],
    ids=["encoder-is-embed", "generator-off-contract", "int8-is-fp32"],
)  # fmt: skip
def test_info_refuses_what_predict_refuses(copy, lie, precision, message):
    from typer.testing import CliRunner

    from ipt_edge.cli import app

    lie(copy)  # every file still matches its size and sha256
    for args in (["predict", "-b", str(copy), "--precision", precision, "good"], ["info", str(copy)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "files match" not in result.output and "Traceback" not in result.output


def test_info_opens_the_int8_backbone_and_every_task(copy):
    from typer.testing import CliRunner

    from ipt_edge.cli import app

    with_int8_encoder(copy, quantized(copy))
    result = CliRunner().invoke(app, ["info", str(copy)])
    assert result.exit_code == 0, result.output
    assert "graphs   every graph opens and keeps the contract: backbone (fp32, int8), 1 task" in result.output
    assert "checksums: all 6 files match" in result.output


# ---- one bundle format for both runtimes ----------------------------------------------------------


def test_the_javascript_runtime_reads_the_format_python_defines():
    # js/src/format.js is written from ipt_edge/manifest.py; a table changed in one place only
    # would make the runtimes disagree on which bundles they accept.
    from pathlib import Path

    from ipt_edge.manifest import format_table

    path = Path(__file__).resolve().parent.parent / "js/src/format.js"
    text = path.read_text(encoding="utf-8")
    body = text[text.index("export default ") + len("export default ") :].rstrip().rstrip(";")
    rewrite = "python js/scripts/write_format.py"
    assert json.loads(body) == format_table(), (
        f"{path} differs from ipt_edge/manifest.py; rewrite it: {rewrite}"
    )


def test_a_task_name_with_a_trailing_newline_is_refused(copy):
    # Python's `$` also matches before a final newline, JavaScript's does not: the same name rule
    # must give the same answer in both runtimes.
    edit_manifest(copy, lambda d: d["tasks"].update({"sentiment\n": d["tasks"].pop("sentiment")}))
    with pytest.raises(BundleError, match=r"task name 'sentiment\\n' is not allowed"):
        read_manifest(copy)
