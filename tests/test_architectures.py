"""The architecture adapters (export/architectures.py) on a tiny random model of every architecture
(tests/tiny_architectures.py): the frozen forward is Hugging Face's own, a prefix joins each layer's
attention as a from-scratch reference says, and a prefix slot's position is what the adapter's
docstring says. Every test here needs PyTorch (the export extra)."""

from __future__ import annotations

import math

import pytest

pytestmark = [
    pytest.mark.export,
    # transformers' DeBERTa-v2 module decorates helpers with torch.jit.script at import.
    pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning"),
    # Tracing an embedding with a padding_idx > 0 (RoBERTa's positions, ModernBERT's tokens): torch
    # checks padding_idx against the table's size, a constant, in Python; the trace is unaffected.
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning"),
]
torch = pytest.importorskip("torch")

from ipt_edge.tokenizer import BundleTokenizer  # noqa: E402
from ipt_edge_export.architectures import (  # noqa: E402
    ARCHITECTURES,
    ArchitectureBackbone,
    architecture,
    word_embeddings,
)
from ipt_edge_export.checkpoint import load_backbone  # noqa: E402

from .tiny_architectures import ARCHITECTURES as TINY  # noqa: E402
from .tiny_architectures import write_architecture  # noqa: E402

# Real tokens of different lengths (ModernBERT's local window is 4, DeBERTa buckets beyond 4), a pair.
TEXTS = [
    "the film was good and the plot was very boring , so dull",
    ("a dull plot", "it is so bad !"),
    "superb",
]


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("architectures")
    return {kind: write_architecture(kind, root / kind) for kind in TINY}


_models: dict = {}


def hf_model(folders, kind):
    """The tiny model as export loads it (AutoModel, eager attention, eval), once per session."""
    if kind not in _models:
        _models[kind] = load_backbone(str(folders[kind])).model
    return _models[kind]


def batch(folder, texts=TEXTS):
    encoded = BundleTokenizer(folder / "tokenizer.json", 32).encode(texts)
    return tuple(
        torch.from_numpy(a) for a in (encoded.input_ids, encoded.attention_mask, encoded.token_type_ids)
    )


def random_prefix(backbone: ArchitectureBackbone, batch_size: int, prompts: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    shape = (2, batch_size, backbone.num_heads, prompts, backbone.head_dim)
    return [torch.randn(shape, generator=g) for _ in backbone.layers]


def test_the_table_covers_every_tiny_architecture_and_refuses_others():
    assert set(TINY) == set(ARCHITECTURES)
    from transformers import GPT2Config

    with pytest.raises(
        ValueError, match=r"architecture 'gpt2'; supported model types: bert, camembert, .*modernbert"
    ):
        architecture(GPT2Config())


@pytest.mark.parametrize("kind", TINY)
def test_every_path_in_the_table_is_a_module_of_the_model(folders, kind):
    model = hf_model(folders, kind)
    arch = architecture(model.config)
    assert word_embeddings(model) is model.get_input_embeddings()
    layers = model.get_submodule(arch.layers)
    assert len(layers) == model.config.num_hidden_layers
    for path in (*arch.attention, *arch.norms):
        for layer in layers:
            assert isinstance(
                layer.get_submodule(path), (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Identity)
            ), path


@pytest.mark.parametrize("kind", TINY)
def test_the_tokenizer_adds_its_special_tokens_and_pads(folders, kind):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folders[kind] / "tokenizer.json"))
    ids, mask, _ = batch(folders[kind])
    alone = tokenizer.encode("superb").ids
    first, last = alone[0], alone[-1]
    assert len(alone) >= 3 and first != last  # <cls> ... <sep>
    assert ids[2, : len(alone)].tolist() == alone
    assert (ids[:, 0] == first).all()
    pad = ids[2, len(alone) :]
    assert (mask[2, len(alone) :] == 0).all() and (pad == pad[0]).all()
    assert tokenizer.id_to_token(int(pad[0])) in ("[PAD]", "<pad>")
    assert int(pad[0]) == hf_model(folders, kind).config.pad_token_id


@pytest.mark.parametrize("kind", TINY)
def test_without_a_prefix_the_backbone_is_the_hugging_face_model(folders, kind):
    model = hf_model(folders, kind)
    ids, mask, types = batch(folders[kind])
    assert (mask == 0).any()  # padding in the batch
    backbone = ArchitectureBackbone(model).eval()
    kwargs = {"token_type_ids": types} if "token_type_ids" in model.forward.__code__.co_varnames else {}
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
        embeds = word_embeddings(model)(ids)
        prefix_mask, prefix_kv = backbone.empty_prefix(ids.shape[0], embeds)
        actual = backbone(embeds, mask, types, prefix_mask, *prefix_kv)
        plain = backbone.plain(embeds, mask, types)
        # A prefix that every row masks out changes nothing either.
        off = torch.zeros(ids.shape[0], len(backbone.layers), 3, dtype=torch.int64)
        masked = backbone(embeds, mask, types, off, *random_prefix(backbone, ids.shape[0], 3))
    real = mask.bool()
    for got in (actual, plain, masked):
        assert got.shape == expected.shape  # [B, T, H]: the prefix takes no positions
        torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


def test_mpnet_without_its_position_bias_runs_silently_wrong(folders):
    # Why the adapter computes it once per forward and hands it to every layer.
    model = hf_model(folders, "mpnet")
    ids, mask, types = batch(folders["mpnet"])
    backbone = ArchitectureBackbone(model).eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        embeds = word_embeddings(model)(ids)
        hidden = backbone.arch.embed(backbone, embeds, types, mask)
        prefix_mask, prefix_kv = backbone.empty_prefix(ids.shape[0], embeds)
        for index in range(len(backbone.layers)):
            hidden = backbone.arch.layer(
                backbone, index, hidden, mask, prefix_kv[index], prefix_mask[:, index], None
            )
    assert (hidden[mask.bool()] - expected[mask.bool()]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# One layer with a prefix against a from-scratch reference: each row alone, its real tokens only,
# keys and values of the prefix slots it attends to concatenated in front of its own (no masks).
# Position terms come from Hugging Face's own code (MPNet's compute_position_bias, DeBERTa's
# disentangled_attention_bias, ModernBERT's rotary_emb), applied to text keys only.


def _attend(q, k, v, prefix_k, prefix_v, scale, bias=None, allowed=None):
    """One head: q, k, v [T, d]; prefix_* [P', d]; bias [T, T] on text keys; allowed [T, T] text keys."""
    text = q @ k.T * scale
    if bias is not None:
        text = text + bias
    if allowed is not None:
        text = text.masked_fill(~allowed, -math.inf)
    scores = torch.cat([q @ prefix_k.T * scale, text], dim=1)
    return torch.softmax(scores, dim=-1) @ torch.cat([prefix_v, v])


def _heads(x, heads):  # [T, H] -> [heads, T, d]
    return x.view(x.shape[0], heads, -1).transpose(0, 1)


def reference_layer(model, kind, index, x, prefix_k, prefix_v):
    """Layer `index` of `model` on one row x [T, H] with prefix keys/values [heads, P', d]."""
    config = model.config
    arch = architecture(config)
    layer = model.get_submodule(arch.layers)[index]
    heads, length = config.num_attention_heads, x.shape[0]

    def attend(q, k, v, scale, bias=None, allowed=None):
        parts = [
            _attend(
                q[h], k[h], v[h], prefix_k[h], prefix_v[h], scale, None if bias is None else bias[h], allowed
            )
            for h in range(heads)
        ]
        return torch.cat(parts, dim=-1)  # [T, H]

    if arch.layer.__name__ == "bert_layer":
        a = layer.attention.self
        q, k, v = (_heads(p(x), heads) for p in (a.query, a.key, a.value))
        attended = layer.attention.output.LayerNorm(
            layer.attention.output.dense(attend(q, k, v, 1 / math.sqrt(q.shape[-1]))) + x
        )
        return layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)
    if kind == "distilbert":
        a = layer.attention
        q, k, v = (_heads(p(x), heads) for p in (a.q_lin, a.k_lin, a.v_lin))
        attended = layer.sa_layer_norm(a.out_lin(attend(q, k, v, 1 / math.sqrt(q.shape[-1]))) + x)
        return layer.output_layer_norm(layer.ffn(attended) + attended)
    if kind == "mpnet":
        a = layer.attention.attn
        q, k, v = (_heads(p(x), heads) for p in (a.q, a.k, a.v))
        bias = model.encoder.compute_position_bias(x.unsqueeze(0))[0]  # [heads, T, T]
        attended = layer.attention.LayerNorm(a.o(attend(q, k, v, 1 / math.sqrt(q.shape[-1]), bias)) + x)
        return layer.output(layer.intermediate(attended), attended)
    if kind == "deberta-v2":
        a = layer.attention.self
        q, k, v = (_heads(p(x), heads) for p in (a.query_proj, a.key_proj, a.value_proj))
        bias = a.disentangled_attention_bias(
            q, k, None, model.encoder.get_rel_embedding(), 3
        )  # [heads, T, T]
        attended = layer.attention.output(
            attend(q, k, v, 1 / math.sqrt(3 * q.shape[-1]), bias).unsqueeze(0), x
        )
        return layer.output(layer.intermediate(attended), attended)[0]
    if kind == "modernbert":
        from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

        a = layer.attn
        q, k, v = _heads(a.Wqkv(layer.attn_norm(x)), 3 * heads).split(heads)
        cos, sin = a.rotary_emb(x, position_ids=torch.arange(length)[None])
        q, k = (t[0] for t in apply_rotary_pos_emb(q[None], k[None], cos, sin))
        allowed = None
        if a.local_attention != (-1, -1):
            positions = torch.arange(length)
            allowed = (positions[:, None] - positions[None, :]).abs() <= config.local_attention // 2
        hidden = x + a.Wo(attend(q, k, v, a.head_dim**-0.5, allowed=allowed))
        return hidden + layer.mlp(layer.mlp_norm(hidden))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", TINY)
def test_a_prefix_layer_equals_attention_over_prefix_and_text_keys(folders, kind):
    model = hf_model(folders, kind)
    backbone = ArchitectureBackbone(model).eval()
    ids, mask, _ = batch(folders[kind])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(ids.shape[0], ids.shape[1], model.config.hidden_size, generator=g)
    prompts = 3
    prefix_mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1]])  # rows attend to different slots
    with torch.no_grad():
        context = backbone.arch.context(backbone, x, mask)
        for index in range(len(backbone.layers)):  # ModernBERT: a global and a local layer
            kv = random_prefix(backbone, ids.shape[0], prompts, seed=index)[0]
            actual = backbone.arch.layer(backbone, index, x, mask, kv, prefix_mask, context)
            for row in range(ids.shape[0]):
                length, keep = int(mask[row].sum()), prefix_mask[row].bool()
                expected = reference_layer(
                    model, kind, index, x[row, :length], kv[0, row][:, keep], kv[1, row][:, keep]
                )
                torch.testing.assert_close(actual[row, :length], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", TINY)
def test_a_prefix_slot_has_no_position_of_its_own(folders, kind):
    # What the adapters choose for prefix slots (architectures.py's docstring): a slot's scores do not
    # depend on where it sits. Reordering the slots, or padding the prefix with masked slots behind
    # them (a shorter task in a mixed batch), leaves every row's output as it was.
    model = hf_model(folders, kind)
    backbone = ArchitectureBackbone(model).eval()
    ids, mask, types = batch(folders[kind])
    layers, rows = len(backbone.layers), ids.shape[0]
    kv = random_prefix(backbone, rows, 3, seed=7)
    on = torch.ones(rows, layers, 3, dtype=torch.int64)
    order = torch.tensor([2, 0, 1])
    padded = [torch.cat([t, torch.full_like(t[:, :, :, :2], 5.0)], dim=3) for t in kv]  # [2, B, heads, 5, d]
    padded_mask = torch.nn.functional.pad(on, (0, 2))  # the two slots behind: masked
    with torch.no_grad():
        embeds = word_embeddings(model)(ids)
        plain = backbone(embeds, mask, types, on, *kv)
        reordered = backbone(embeds, mask, types, on, *[t[:, :, :, order] for t in kv])
        padding = backbone(embeds, mask, types, padded_mask, *padded)
    real = mask.bool()
    torch.testing.assert_close(reordered[real], plain[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(padding[real], plain[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", TINY)
def test_the_initial_prefix_is_what_the_layers_make_of_real_tokens(folders, kind):
    # initial_prefix reads P tokens as a text; each layer's slice is that layer's key/value projection
    # of its input, the hidden state Hugging Face hands the layer.
    model = hf_model(folders, kind)
    backbone = ArchitectureBackbone(model).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        embeds = word_embeddings(model)(ids)[0]
        prefix = backbone.initial_prefix(embeds, first_layer=1)  # [L-1, 2, P, H]
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
        key, value = backbone.arch.key_value(backbone, 1, states[1][0])
    assert prefix.shape == (len(backbone.layers) - 1, 2, 4, model.config.hidden_size)
    torch.testing.assert_close(prefix[0, 0], key, atol=1e-5, rtol=0)
    torch.testing.assert_close(prefix[0, 1], value, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Train, export, run: on every architecture the runtime (ipt_edge.Bundle, ONNX Runtime) gives
# PyTorch's logits, in fp32 and int8, one task or two of different prompt lengths in one batch.

RUNTIME_TEXTS = ["the film was good", "a dull and boring plot , very poor", "superb", "it is so lovely the cast is great",
                 "good", "the plot and the cast and the story were awful , so boring", "fine film"]  # fmt: skip
EXPORTED = [kind for kind in TINY if kind != "camembert"]  # camembert: the roberta adapter, same graphs


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    from .tiny import sentiment_rows, write_tsv

    folder = tmp_path_factory.mktemp("sentiment")
    train = write_tsv(folder / "train.tsv", ["text", "label"], sentiment_rows(96, seed=1))
    dev = write_tsv(folder / "dev.tsv", ["text", "label"], sentiment_rows(24, seed=2))
    return train, dev


@pytest.mark.parametrize("kind", EXPORTED)
def test_trained_tasks_run_in_the_runtime_as_in_pytorch(kind, sentiment, tmp_path):
    import numpy as np

    from ipt_edge.bundle import Bundle
    from ipt_edge.manifest import read_manifest
    from ipt_edge_export.onnx_export import Calibration, export_checkpoint

    from .tiny import torch_logits, train_checkpoint
    from .tiny_architectures import Size

    train, dev = sentiment
    # ELECTRA in ELECTRA-base's layout (no embeddings_project): export refuses ELECTRA-small's (below).
    size = Size(embedding=None) if kind == "electra" else Size()
    backbone = write_architecture(kind, tmp_path / kind, size=size)
    # Two tasks of different families and prompt lengths; the first from layer 1 on.
    first = train_checkpoint(backbone, train, dev, tmp_path / "a", generator="mlp-prefix", prompt_length=4,
                             prefix_from_layer=1)  # fmt: skip
    second = train_checkpoint(backbone, train, None, tmp_path / "b", generator="prefix", prompt_length=2)
    path = tmp_path / "bundle"
    messages = []
    export_checkpoint(first, path, task="a", int8=Calibration(dev, tolerance=100.0), log=messages.append)
    export_checkpoint(second, path, task="b", log=messages.append)
    manifest = read_manifest(path)
    assert manifest.encoder.fusions == {}  # the default graph: ONNX Runtime fuses what it can at load
    assert manifest.tasks["a"].int8["rows"] == 24  # the export's own int8 check ran

    texts = RUNTIME_TEXTS * 2
    tasks = ["a", "b"] * len(RUNTIME_TEXTS)  # every text under both tasks, mixed in the batches
    expected = {
        name: torch_logits(checkpoint, backbone, texts) for name, checkpoint in (("a", first), ("b", second))
    }
    bundle = Bundle.load(path)
    for batch_size in (1, 3):  # the graphs were traced with 2
        for name in ("a", "b"):
            alone = bundle.logits(texts, [name] * len(texts), batch_size=batch_size)
            np.testing.assert_allclose(alone, expected[name], atol=1e-4, rtol=0)
        mixed = bundle.logits(texts, tasks, batch_size=batch_size)
        for row, name in enumerate(tasks):
            np.testing.assert_allclose(mixed[row], expected[name][row], atol=1e-4, rtol=0)

    # int8: another graph (the backbone's weights quantized), close to fp32 and agreeing on labels
    # wherever fp32 is not near a tie.
    int8 = np.stack(Bundle.load(path, precision="int8").logits(texts, ["a"] * len(texts), batch_size=3))
    fp32 = expected["a"]
    assert not np.array_equal(int8, fp32)
    np.testing.assert_allclose(int8, fp32, atol=0.1)
    clear = np.abs(fp32[:, 0] - fp32[:, 1]) > 0.2
    assert (int8.argmax(-1) == fp32.argmax(-1))[clear].all()


@pytest.mark.parametrize("kind", EXPORTED)
def test_optimize_fuses_attention_where_the_table_says_and_computes_the_same(folders, kind, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from ipt_edge import graphs
    from ipt_edge_export.onnx_export import export_encoder

    from .tiny_architectures import Size

    # ELECTRA in ELECTRA-base's layout (no embeddings_project): export refuses ELECTRA-small's.
    folder = (
        write_architecture(kind, tmp_path / kind, size=Size(embedding=None))
        if kind == "electra"
        else folders[kind]
    )
    backbone = load_backbone(str(folder))
    messages: list[str] = []
    export_encoder(backbone, tmp_path / "default.onnx", log=messages.append)
    fusions = export_encoder(backbone, tmp_path / "fused.onnx", optimize=True, log=messages.append)
    config = backbone.model.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    fused = architecture(config).ort_fuses
    # Which architectures ONNX Runtime fuses (architectures.py's table says; export logs the others).
    assert fusions.get("Attention", 0) == (layers if fused else 0)
    assert fused or any("written unfused" in m for m in messages)
    # Both routes compute the same function: random token embeddings, prefixes and masks, with padding
    # and a layer without a prefix.
    rng = np.random.default_rng(0)
    batch, tokens, prompts = 3, 5, 2
    mask = np.ones((batch, tokens), dtype=np.int64)
    mask[1, 3:] = 0
    prefix_mask = np.ones((batch, layers, prompts), dtype=np.int64)
    prefix_mask[:, 0] = 0
    prefix_mask[2, :, 1] = 0
    feeds = {"token_embeds": rng.standard_normal((batch, tokens, config.hidden_size), dtype=np.float32),
             "attention_mask": mask, "token_type_ids": np.zeros((batch, tokens), dtype=np.int64),
             "prefix_mask": prefix_mask}  # fmt: skip
    for layer in range(layers):
        shape = (2, batch, heads, prompts, config.hidden_size // heads)
        feeds[graphs.prefix_kv(layer).name] = rng.standard_normal(shape, dtype=np.float32)
    outputs = []
    for name in ("default.onnx", "fused.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        outputs.append(session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0])
    real = mask.astype(bool)  # padded positions' outputs are not used
    np.testing.assert_allclose(outputs[0][real], outputs[1][real], atol=1e-4, rtol=0)


def hf_model_config(folder):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def test_electra_small_is_refused_at_export_with_the_reason(folders, sentiment, tmp_path):
    # ELECTRA-small embeds tokens in fewer dimensions than its hidden size; the bundle's token_embeds
    # has the hidden size (ipt_edge/graphs.py), so a bundle would be written and then refused at load.
    from ipt_edge_export.onnx_export import ExportError, export_checkpoint

    from .tiny import train_checkpoint

    train, _ = sentiment
    checkpoint = train_checkpoint(folders["electra"], train, None, tmp_path / "ckpt", generator="prefix")
    with pytest.raises(
        ExportError, match=r"embeds tokens in 16 dimensions .* hidden size 32 \(embeddings_project"
    ):
        export_checkpoint(checkpoint, tmp_path / "bundle", log=lambda message: None)
    assert not (tmp_path / "bundle").exists()
