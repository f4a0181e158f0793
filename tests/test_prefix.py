"""The backbone with per-layer prefix keys/values (FrozenBackbone, and encoder.onnx exported from
it): the frozen model it wraps, attention over prefix and tokens, the one fused graph. Every test
here needs PyTorch (the export extra)."""

import numpy as np
import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")

from transformers import BertConfig, BertModel  # noqa: E402

from ipt_edge import BundleError  # noqa: E402
from ipt_edge.classifier import Classifier  # noqa: E402
from ipt_edge.manifest import file_record, read_manifest, write_manifest  # noqa: E402
from ipt_edge_export.architectures import bert_prefix_layer  # noqa: E402
from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint  # noqa: E402
from ipt_edge_export.model import FrozenBackbone, IPTConfig, IPTModel, prefix_mask  # noqa: E402
from ipt_edge_export.onnx_export import export_checkpoint  # noqa: E402

from .tiny import KINDS, torch_logits  # noqa: E402


@pytest.fixture(scope="module")
def bert(tiny_backbone):
    return BertModel.from_pretrained(tiny_backbone, attn_implementation="eager").eval()


def random_prefix(bert, batch, length, seed=0):
    """prefix_kv: one [2, B, heads, P, head_dim] tensor per layer."""
    config = bert.config
    heads = config.num_attention_heads
    shape = (2, batch, heads, length, config.hidden_size // heads)
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(config.num_hidden_layers)]


def tokens(bert):
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    return ids, bert.embeddings.word_embeddings(ids), mask, torch.zeros_like(ids)


def test_with_its_prefix_masked_out_the_backbone_is_the_hugging_face_model(bert):
    ids, embeds, mask, types = tokens(bert)
    prefix_kv = random_prefix(bert, 2, 3)
    off = torch.zeros(2, bert.config.num_hidden_layers, 3, dtype=torch.int64)
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        actual = FrozenBackbone(bert)(embeds, mask, types, off, *prefix_kv)
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
        actual = bert_prefix_layer(layer, x, torch.zeros(1, 1, 1, 6), torch.stack([pk, pv]))
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
    prefix_kv = random_prefix(bert, 2, 3)
    from_layer_1 = prefix_mask(2, bert.config.num_hidden_layers, 3, first_layer=1)
    with torch.no_grad():
        plain = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        outputs = FrozenBackbone(bert).layer_outputs(embeds, mask, types, from_layer_1, prefix_kv)
    real = mask.bool()
    torch.testing.assert_close(outputs[0][real], plain[1][real], atol=1e-5, rtol=0)  # after layer 0
    assert not torch.allclose(outputs[1][real], plain[2][real], atol=1e-3)  # layer 1 reads its prefix


@pytest.mark.parametrize("kind", KINDS)
def test_a_rows_logits_ignore_its_padding_and_the_other_rows(bert, kind):
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


@pytest.fixture(scope="module")
def minilm_dims():
    # all-MiniLM-L6-v2's dims with random weights (only the parameter count matters).
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)  # fmt: skip
    return BertModel(config, add_pooling_layer=False)


@pytest.mark.parametrize("kind", KINDS)
def test_tuned_share_stays_under_two_percent_for_minilm_dims(kind, minilm_dims):
    total = sum(p.numel() for p in minilm_dims.parameters())
    model = IPTModel(minilm_dims, IPTConfig(generator=kind, prompt_length=16, labels=["a", "b"]))
    assert model.tuned_parameter_count() <= 0.02 * total
    assert model.tuned_parameter_count() * 4 <= 2e6  # a task <= 2 MB on disk (float32)


def test_first_prompted_layer_is_recorded_and_used(checkpoints, tmp_path):
    export_checkpoint(checkpoints["mlp-prefix@1"], tmp_path / "b", task="t", log=lambda m: None)
    assert read_manifest(tmp_path / "b").tasks["t"].prefix_from_layer == 1
    classifier = Classifier.load(tmp_path / "b")
    assert classifier.task.prefix_mask[:, 0].tolist() == [0, 1]  # [L, P]: layer 0 off


def test_an_optimized_encoder_is_the_fused_plain_backbone_fed_through_past(checkpoints, tmp_path):
    import onnx

    export_checkpoint(checkpoints["prefix"], tmp_path / "b", task="p", optimize=True, log=lambda m: None)
    manifest = read_manifest(tmp_path / "b")
    layers = manifest.backbone.num_layers
    assert manifest.encoder.file == "encoder.onnx" and manifest.encoder.fusions["Attention"] == layers
    graph = onnx.load(str(tmp_path / "b" / "encoder.onnx")).graph
    attention = [node for node in graph.node if node.op_type == "Attention"]
    assert [node.input[4] for node in attention] == [f"prefix_kv.{i}" for i in range(layers)]  # read in place
    assert not [node for node in graph.node if node.op_type == "Softmax"]  # no unfused attention left


def test_the_default_export_is_unfused_and_matches_pytorch(checkpoints, tiny_backbone, tmp_path):
    import onnx

    export_checkpoint(checkpoints["mlp-prefix"], tmp_path / "b", task="p", log=lambda m: None)
    assert read_manifest(tmp_path / "b").encoder.fusions == {}
    ops = {node.op_type for node in onnx.load(str(tmp_path / "b" / "encoder.onnx")).graph.node}
    assert "Attention" not in ops and "Softmax" in ops  # ONNX Runtime fuses what it can at load
    texts = ["the film was good", "a dull and boring plot , very poor", "superb"]
    got = Classifier.load(tmp_path / "b").logits(texts)
    np.testing.assert_allclose(got, torch_logits(checkpoints["mlp-prefix"], tiny_backbone, texts), atol=1e-4)


def test_generator_outputs_off_the_contract_are_refused(checkpoints, tmp_path):
    import onnx

    path = tmp_path / "b"
    export_checkpoint(checkpoints["mlp-prefix"], path, task="t", log=lambda m: None)
    graph_file = path / "tasks" / "t" / "generator.onnx"
    graph = onnx.load(graph_file)
    for node in graph.graph.node:  # rename an output, as a generator of an older version named it
        node.output[:] = ["prompt_embeds" if o == "prefix_kv.1" else o for o in node.output]
    graph.graph.output[1].name = "prompt_embeds"
    onnx.save(graph, graph_file)
    manifest = read_manifest(path)
    manifest.files["tasks/t/generator.onnx"] = file_record(graph_file)
    write_manifest(path, manifest)
    with pytest.raises(
        BundleError, match=r"tasks/t/generator.onnx: outputs should be prefix_kv.0 .*; found .*prompt_embeds"
    ):
        Classifier.load(path)


def test_checkpoint_with_a_late_first_layer_rebuilds_the_same_model(checkpoints, tiny_backbone):
    model, _ = model_from_checkpoint(read_checkpoint(checkpoints["mlp-prefix@1"]), str(tiny_backbone))
    assert model.config.prefix_from_layer == 1
    keys, _ = model.generator(torch.tensor([[2, 5, 3]]), model.word_embeddings(torch.tensor([[2, 5, 3]])),
                              torch.ones(1, 3, dtype=torch.int64))  # fmt: skip
    assert keys[:, 0].abs().max() == 0  # layer 0 gets no prefix (and its mask is 0)
