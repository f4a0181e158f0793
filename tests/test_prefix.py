"""Prefix kinds: keys/values in every layer's attention instead of extra positions. Every test here
needs PyTorch (the export extra)."""

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")

from transformers import BertConfig, BertModel  # noqa: E402

from ipt_edge.bundle import BundleError, read_manifest  # noqa: E402
from ipt_edge.classifier import Classifier  # noqa: E402
from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint  # noqa: E402
from ipt_edge_export.model import (  # noqa: E402
    IPTConfig,
    IPTModel,
    PrefixEncoder,
    prefix_attention_layer,
    prefix_mask,
)
from ipt_edge_export.onnx_export import export_checkpoint  # noqa: E402

from .test_export import TEXTS  # noqa: E402
from .tiny import PREFIX_KINDS, torch_logits  # noqa: E402

MORE_TEXTS = [*TEXTS, "good", "the plot and the cast and the story were awful , so boring", "fine film"]


@pytest.fixture(scope="module")
def bert(tiny_backbone):
    return BertModel.from_pretrained(tiny_backbone, attn_implementation="eager").eval()


def random_prefix(bert, batch, length, seed=0):
    config = bert.config
    heads = config.num_attention_heads
    shape = (batch, config.num_hidden_layers, heads, length, config.hidden_size // heads)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def tokens(bert):
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    return ids, bert.embeddings.word_embeddings(ids), mask, torch.zeros_like(ids)


def test_masked_out_prefix_gives_the_plain_backbone(bert):
    ids, embeds, mask, types = tokens(bert)
    keys, values = random_prefix(bert, 2, 3)
    off = torch.zeros(2, bert.config.num_hidden_layers, 3, dtype=torch.int64)
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        actual = PrefixEncoder(bert)(embeds, mask, types, keys, values, off)
    assert actual.shape == expected.shape  # [B, T, H]: no prompt positions
    torch.testing.assert_close(actual[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)


def test_one_prefix_layer_equals_attention_over_prefix_and_token_keys(bert):
    # From scratch: keys = [prefix; W_k x], values = [prefix; W_v x], queries W_q x on tokens only.
    layer = bert.encoder.layer[0]
    attention = layer.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, bert.config.hidden_size, generator=g)
    pk, pv = torch.randn(1, heads, 2, size, generator=g), torch.randn(1, heads, 2, size, generator=g)
    with torch.no_grad():
        actual = prefix_attention_layer(layer, x, torch.zeros(1, 1, 1, 6), pk, pv)
        context = []
        for h in range(heads):
            cut = slice(h * size, (h + 1) * size)
            q = attention.query(x)[0, :, cut]
            k = torch.cat([pk[0, h], attention.key(x)[0, :, cut]])
            v = torch.cat([pv[0, h], attention.value(x)[0, :, cut]])
            context.append(torch.softmax(q @ k.T / size**0.5, dim=-1) @ v)
        attended = layer.attention.output.LayerNorm(
            layer.attention.output.dense(torch.cat(context, -1)) + x[0]
        )
        ffn = layer.output.dense(layer.intermediate(attended))
        expected = layer.output.LayerNorm(ffn + attended)
    torch.testing.assert_close(actual[0], expected, atol=1e-5, rtol=0)


def test_layers_below_the_first_prompted_one_run_as_the_plain_backbone(bert):
    ids, embeds, mask, types = tokens(bert)
    keys, values = random_prefix(bert, 2, 3)
    from_layer_1 = prefix_mask(2, bert.config.num_hidden_layers, 3, first_layer=1)
    with torch.no_grad():
        plain = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        outputs = PrefixEncoder(bert).layer_outputs(embeds, mask, types, keys, values, from_layer_1)
    real = mask.bool()
    torch.testing.assert_close(outputs[0][real], plain[1][real], atol=1e-5, rtol=0)  # after layer 0
    assert not torch.allclose(outputs[1][real], plain[2][real], atol=1e-3)  # layer 1 reads its prefix


@pytest.mark.parametrize("kind", PREFIX_KINDS)
def test_a_rows_output_ignores_its_padding_and_the_other_rows(bert, kind):
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=3, labels=["a", "b"])).eval()
    for name, parameter in model.generator.named_parameters():
        if name != "base":  # leave the zero-initialised start: an instance part per row
            torch.nn.init.normal_(parameter, std=0.1)
    alone = torch.tensor([[2, 5, 6, 3]])
    batch = torch.tensor([[2, 5, 6, 3, 0, 0, 0, 0], [2, 9, 10, 11, 12, 13, 14, 3]])
    with torch.no_grad():
        by_itself = model(alone, torch.ones_like(alone), torch.zeros_like(alone))
        in_batch = model(batch, (batch != 0).long(), torch.zeros_like(batch))
    torch.testing.assert_close(in_batch[0], by_itself[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["mlp-prefix", "attn-prefix"])
def test_instance_prefix_starts_at_the_static_prefix_and_varies_per_input_once_trained(bert, kind):
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=3, labels=["a", "b"])).eval()
    ids, embeds, mask, _ = tokens(bert)
    keys, _ = model.generator(ids, embeds, mask)
    torch.testing.assert_close(keys[0], keys[1])  # `up` starts at zero
    torch.nn.init.normal_(model.generator.up.weight, std=0.1)
    keys, _ = model.generator(ids, embeds, mask)
    assert not torch.allclose(keys[0], keys[1])


@pytest.mark.parametrize("kind", PREFIX_KINDS)
def test_tuned_share_stays_under_two_percent_for_minilm_dims(kind):
    # all-MiniLM-L6-v2's dims with random weights (only the parameter count matters).
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)  # fmt: skip
    backbone = BertModel(config, add_pooling_layer=False)
    total = sum(p.numel() for p in backbone.parameters())
    model = IPTModel(backbone, IPTConfig(generator=kind, prompt_length=16, labels=["a", "b"]))
    assert model.tuned_parameter_count() <= 0.02 * total
    assert model.tuned_parameter_count() * 4 <= 2e6  # a task <= 2 MB on disk (float32)


def test_prefix_from_layer_is_only_for_prefix_kinds():
    with pytest.raises(ValueError, match="only prefix kinds"):
        IPTConfig(generator="mlp-deep", prefix_from_layer=1, labels=["a", "b"])


@pytest.mark.parametrize("kind", [*PREFIX_KINDS, "mlp-prefix@1"])
def test_runtime_logits_match_pytorch_at_several_batch_sizes(kind, checkpoints, tiny_backbone, tmp_path):
    export_checkpoint(checkpoints[kind], tmp_path / "b", task="t", log=lambda m: None)
    expected = torch_logits(checkpoints[kind], tiny_backbone, MORE_TEXTS)
    classifier = Classifier.load(tmp_path / "b")
    for batch_size in (1, 3, 7):  # the graphs were traced with 2
        np.testing.assert_allclose(classifier.logits(MORE_TEXTS, batch_size), expected, atol=1e-4, rtol=0)


def test_first_prompted_layer_is_recorded_and_used(checkpoints, tmp_path):
    export_checkpoint(checkpoints["mlp-prefix@1"], tmp_path / "b", task="t", log=lambda m: None)
    assert read_manifest(tmp_path / "b").tasks["t"].prefix_from_layer == 1
    classifier = Classifier.load(tmp_path / "b")
    assert classifier.generator.prefix_mask_row[:, 0].tolist() == [0, 1]  # [L, P]: layer 0 off


def test_prefix_only_bundle_has_only_the_prefix_encoder(checkpoints, tmp_path):
    export_checkpoint(checkpoints["prefix"], tmp_path / "b", task="p", log=lambda m: None)
    manifest = read_manifest(tmp_path / "b")
    assert (manifest.encoder_file, manifest.encoder_prefix_file) == ("", "encoder_prefix.onnx")
    assert sorted(p.name for p in (tmp_path / "b").glob("*.onnx")) == ["embed.onnx", "encoder_prefix.onnx"]


def test_the_prefix_encoder_is_the_fused_plain_backbone_fed_through_past(checkpoints, tmp_path):
    import onnx

    export_checkpoint(checkpoints["prefix"], tmp_path / "b", task="p", log=lambda m: None)
    layers = read_manifest(tmp_path / "b").backbone.num_layers
    assert read_manifest(tmp_path / "b").encoder_prefix_fusions["Attention"] == layers
    graph = onnx.load(str(tmp_path / "b" / "encoder_prefix.onnx")).graph
    attention = [node for node in graph.node if node.op_type == "Attention"]
    assert [node.input[4] for node in attention] == [f"prefix/layer{i}/past" for i in range(layers)]
    assert not [node for node in graph.node if node.op_type == "Softmax"]  # no unfused attention left


def test_an_unfused_prefix_export_still_matches_pytorch(checkpoints, tiny_backbone, tmp_path):
    export_checkpoint(checkpoints["mlp-prefix"], tmp_path / "b", task="p", optimize=False, log=lambda m: None)
    assert read_manifest(tmp_path / "b").encoder_prefix_fusions == {}
    texts = ["the film was good", "a dull and boring plot , very poor", "superb"]
    got = Classifier.load(tmp_path / "b").logits(texts)
    np.testing.assert_allclose(got, torch_logits(checkpoints["mlp-prefix"], tiny_backbone, texts), atol=1e-4)


def test_prefix_task_added_to_an_old_style_bundle_and_both_work(checkpoints, tiny_backbone, tmp_path):
    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-deep"], path, task="old", log=lambda m: None)
    before = {p.relative_to(path): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    export_checkpoint(checkpoints["attn-prefix"], path, task="new", log=lambda m: None)
    after = {p.relative_to(path): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    changed = {str(p) for p in after if before.get(p) != after[p]}
    assert changed == {
        "manifest.json",
        "encoder_prefix.onnx",
        "tasks/new/generator.onnx",
        "tasks/new/head.safetensors",
    }
    export_checkpoint(checkpoints["prefix"], path, task="newer", log=lambda m: None)  # reuses the graph
    assert after[Path("encoder_prefix.onnx")] == (path / "encoder_prefix.onnx").stat().st_mtime_ns
    for task, kind in (("old", "mlp-deep"), ("new", "attn-prefix"), ("newer", "prefix")):
        np.testing.assert_allclose(
            Classifier.load(path, task=task).logits(TEXTS),
            torch_logits(checkpoints[kind], tiny_backbone, TEXTS), atol=1e-4, rtol=0,
        )  # fmt: skip


def test_old_style_task_added_to_a_prefix_bundle_gets_the_prepend_encoder(checkpoints, tmp_path):
    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="new", log=lambda m: None)
    export_checkpoint(checkpoints["mlp"], path, task="old", log=lambda m: None)
    manifest = read_manifest(path)
    assert (manifest.encoder_file, manifest.encoder_prefix_file) == ("encoder.onnx", "encoder_prefix.onnx")
    assert manifest.encoder_fusions.get("Attention") == 2
    assert len(Classifier.load(path, task="old").predict(TEXTS)) == len(TEXTS)


def test_generator_outputs_off_the_contract_are_refused(checkpoints, tmp_path):
    import onnx

    from ipt_edge.bundle import file_record, write_manifest

    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="t", log=lambda m: None)
    graph_file = path / "tasks" / "t" / "generator.onnx"
    graph = onnx.load(graph_file)
    for node in graph.graph.node:  # rename an output, as a generator of another kind would name it
        node.output[:] = ["prompt_embeds" if o == "prefix_values" else o for o in node.output]
    graph.graph.output[1].name = "prompt_embeds"
    onnx.save(graph, graph_file)
    manifest = read_manifest(path)
    manifest.files["tasks/t/generator.onnx"] = file_record(graph_file)
    write_manifest(path, manifest)
    with pytest.raises(
        BundleError, match=r"tasks/t/generator.onnx: outputs should be prefix_keys .*; found .*prompt_embeds"
    ):
        Classifier.load(path)


def test_checkpoint_of_a_prefix_kind_rebuilds_the_same_model(checkpoints, tiny_backbone):
    model, _ = model_from_checkpoint(read_checkpoint(checkpoints["mlp-prefix@1"]), str(tiny_backbone))
    assert model.config.prefix_from_layer == 1
    keys, _ = model.generator(torch.tensor([[2, 5, 3]]), model.word_embeddings(torch.tensor([[2, 5, 3]])),
                              torch.ones(1, 3, dtype=torch.int64))  # fmt: skip
    assert keys[:, 0].abs().max() == 0  # layer 0 gets no prefix (and its mask is 0)
