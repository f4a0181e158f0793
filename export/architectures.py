"""Architecture adapters: where a frozen Hugging Face encoder keeps what a prefix path touches, and
how a prefix joins each layer's attention. One table, keyed by the config's `model_type`.

Every adapter gives the backbone the same four steps (ArchitectureBackbone below runs them):

    embed(token_embeds [B,T,E], token_type_ids [B,T], attention_mask [B,T]) -> hidden [B,T,H]
        the text's positions are 0..T-1 (+ the adapter's offset) for right-padded rows
    context(hidden, attention_mask) -> what every layer shares in one forward (MPNet's position
        bias, DeBERTa's relative embeddings and buckets, ModernBERT's rotary tables and window)
    layer(index, hidden, attention_mask, prefix_kv [2,B,heads,P,head_dim], prefix_mask [B,P], context)
        -> hidden [B,T,H]: queries, FFN and norms on the T tokens only; keys and values are the
        prefix's P (0 = keys, 1 = values) in front of the text's own; prefix_mask (1 = attend) covers them
    finish(hidden) -> hidden: a final norm where the architecture has one (ModernBERT)

and key_value(index, layer_input) -> keys, values [..., H] (heads side by side): what a layer's
attention makes of its input, for a prefix that starts where real tokens are (initial_prefix).

What a prefix slot's position is, per kind of position (the text's own positions never change):
- absolute (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA): positions enter once, in the embeddings, so
  a prefix key has none; nothing to choose.
- relative bias (MPNet) and disentangled (DeBERTa-v2/v3): a prefix slot has no position, so its
  scores are content-only (MPNet: no bias; DeBERTa: no c2p/p2c term, the c2c term keeps the
  model's scale 1/sqrt(3d)). Why: a slot's score must not depend on what the encoder graph cannot
  know per row: how far a mixed-task batch pads a shorter task's prefix (slots are padded behind the
  task's own), the text's length, or which layer it is; and a learned key needs no position to
  be found. Fixed positions before the text would make slot p's bias depend on the padded P.
- rotary (ModernBERT): prefix keys are used as given, against the rotated queries, as a KV cache
  holds its keys already rotated: every slot sits at position 0. No position-free choice exists
  for a rotated query short of scoring the prefix with an unrotated one (a product the model never
  computes); position 0 keeps the form the model was trained on, costs nothing (no rotation of the
  prefix), and any other fixed position is the same family of learned keys (R(s)k is as free as k).
  initial_prefix's keys are accordingly the unrotated ones. Every slot is visible to every query in
  local (sliding-window) layers too: the window limits text-to-text attention; a slot is task
  context, not a token at a distance.

ONNX Runtime's transformer optimizer (onnxruntime 1.32, model_type "bert", on the graph of
`ArchitectureBackbone.plain`) fuses attention in every layer of bert, roberta, xlm-roberta,
camembert, electra and distilbert (DistilBERT's `plain` is written in BertSelfAttention's form: its
own masked_fill form matches the optimizer's DistilBERT pattern, whose mask check then gives up).
It fuses none of mpnet's (the position bias sits between the scaled scores and the mask; the
optimizer takes such a bias only in that same DistilBERT-style pattern), deberta-v2's (c2p/p2c
terms) or modernbert's (rotary, fused Wqkv). That matters only for `export --optimize`: the
default backbone graph is unfused for every architecture (export_encoder says why); with
`--optimize`, where attention does not fuse, export_encoder writes the default graph and says so.
`ort_fuses` in the table records this and tests/test_architectures.py checks it. The prompt tax of each (a P=16 task through the runtime
against the same backbone's own plain graph at the text's T tokens):
`python benchmarks/prompt_tax.py --size minilm`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def _min(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min


def additive_mask(
    prefix_mask: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """[B, P] and [B, T] (1 = attend) -> additive [B, 1, 1, P+T]: 0 where attended, dtype's min elsewhere."""
    mask = torch.cat([prefix_mask, attention_mask], dim=1)  # [B, P+T]
    return (1.0 - mask[:, None, None, :].to(dtype)) * _min(dtype)


def split_heads(x: torch.Tensor, heads: int, size: int) -> torch.Tensor:
    """[B, T, heads*size] -> [B, heads, T, size]"""
    batch, length, _ = x.shape
    return x.view(batch, length, heads, size).transpose(1, 2)


def merge_heads(x: torch.Tensor, heads: int, size: int) -> torch.Tensor:
    """[B, heads, T, size] -> [B, T, heads*size]"""
    batch, _, length, _ = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


def prefix_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_kv: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    text_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of the T queries over [prefix; text] keys and values.

    query/key/value [B, heads, T, d]; prefix_kv [2, B, heads, P, d]; mask additive, broadcastable to
    [B, heads, T, P+T]; text_bias [B|1, heads, T, T] or None: a position term for text keys only
    (prefix slots get none). -> context [B, T, heads*d]"""
    keys = torch.cat([prefix_kv[0], key], dim=2)  # [B, heads, P+T, d]
    values = torch.cat([prefix_kv[1], value], dim=2)
    scores = torch.matmul(query, keys.transpose(-1, -2)) * scale  # [B, heads, T, P+T]
    if text_bias is not None:
        prompts = prefix_kv.shape[3]
        scores = scores + nn.functional.pad(text_bias, (prompts, 0))  # zero bias on the prefix slots
    probs = torch.softmax(scores + mask, dim=-1)
    return merge_heads(torch.matmul(probs, values), query.shape[1], query.shape[3])


# ---------------------------------------------------------------------------------------------
# The BERT-like family: bert, roberta, xlm-roberta, camembert, electra. Absolute positions in the
# embeddings (RoBERTa's after padding_idx), token types, post-norm layers with
# attention.self.{query,key,value}, attention.output (dense + LayerNorm), intermediate, output.


def bert_embed(m: ArchitectureBackbone, token_embeds, token_type_ids, attention_mask):
    # The text's positions 0..T-1 (+ offset) whatever the padding: rows are right-padded.
    positions = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1 + m.offset  # [B, T]
    hidden = m.embeddings(inputs_embeds=token_embeds, token_type_ids=token_type_ids, position_ids=positions)
    if hasattr(m, "embeddings_project"):  # ELECTRA-small: embedding size -> hidden size
        hidden = m.embeddings_project(hidden)
    return hidden


def bert_prefix_layer(layer, hidden, extended_mask, prefix_kv):
    """One frozen BERT-family layer whose attention reads [prefix; tokens] keys and values.

    hidden [B, T, H]; extended_mask [B, 1, 1, P+T] (additive); prefix_kv [2, B, heads, P, head_dim].
    Queries, the attention output, FFN and layer norms run on the T tokens only. The same
    arithmetic as the Hugging Face eager layer (BertSelfAttention, BertSelfOutput, ...)."""
    attention = layer.attention.self
    batch, length, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size

    def split(x):  # [B, T, H] -> [B, heads, T, head_dim]
        return x.view(batch, length, heads, size).transpose(1, 2)

    query = split(attention.query(hidden))
    key = torch.cat([prefix_kv[0], split(attention.key(hidden))], dim=2)  # [B, heads, P+T, head_dim]
    value = torch.cat([prefix_kv[1], split(attention.value(hidden))], dim=2)
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(size) + extended_mask
    context = torch.matmul(torch.softmax(scores, dim=-1), value)  # [B, heads, T, head_dim]
    context = context.transpose(1, 2).reshape(batch, length, heads * size)
    attended = layer.attention.output(context, hidden)  # dense, residual, LayerNorm
    return layer.output(layer.intermediate(attended), attended)


def bert_layer(m: ArchitectureBackbone, index, hidden, attention_mask, prefix_kv, prefix_mask, context):
    """The BERT family's `layer` (ELECTRA, RoBERTa, ... share BERT's layer code)."""
    extended = additive_mask(prefix_mask, attention_mask, hidden.dtype)  # [B, 1, 1, P+T]
    return bert_prefix_layer(m.layers[index], hidden, extended, prefix_kv)


def bert_key_value(m: ArchitectureBackbone, index, states):
    attention = m.layers[index].attention.self
    return attention.key(states), attention.value(states)


def bert_plain(m: ArchitectureBackbone, token_embeds, attention_mask, token_type_ids):
    """Hugging Face's own layers, eager attention: the form ONNX Runtime's optimizer fuses."""
    hidden = bert_embed(m, token_embeds, token_type_ids, attention_mask)
    extended = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * _min(hidden.dtype)
    for layer in m.layers:
        hidden = layer(hidden, attention_mask=extended)[0]
    return hidden


def bert_check(config) -> None:
    kind = getattr(config, "position_embedding_type", "absolute")
    if kind != "absolute" or config.is_decoder:
        raise ValueError(f"ipt-edge needs an encoder with absolute positions; this one has {kind!r}")


def roberta_offset(config) -> int:
    """RoBERTa-family position ids start after padding_idx (create_position_ids_from_input_ids)."""
    return int(config.pad_token_id) + 1


# ---------------------------------------------------------------------------------------------
# DistilBERT: absolute positions, no token types, transformer.layer[i].attention.{q,k,v,out}_lin,
# sa_layer_norm, ffn, output_layer_norm. Its attention scales the queries before the product.


def distilbert_embed(m: ArchitectureBackbone, token_embeds, token_type_ids, attention_mask):
    return m.embeddings(None, token_embeds)  # positions 0..T-1 from its buffer; no token types


def distilbert_layer(m: ArchitectureBackbone, index, hidden, attention_mask, prefix_kv, prefix_mask, context):
    layer = m.layers[index]
    attention = layer.attention
    heads, size = attention.n_heads, attention.attention_head_size
    query = split_heads(attention.q_lin(hidden), heads, size) / math.sqrt(size)  # as MultiHeadSelfAttention
    key, value = (split_heads(p(hidden), heads, size) for p in (attention.k_lin, attention.v_lin))
    mask = additive_mask(prefix_mask, attention_mask, hidden.dtype)
    attended = attention.out_lin(prefix_attention(query, key, value, prefix_kv, mask, 1.0))
    attended = layer.sa_layer_norm(attended + hidden)
    return layer.output_layer_norm(layer.ffn(attended) + attended)


def distilbert_key_value(m: ArchitectureBackbone, index, states):
    attention = m.layers[index].attention
    return attention.k_lin(states), attention.v_lin(states)


def distilbert_plain(m: ArchitectureBackbone, token_embeds, attention_mask, token_type_ids):
    """DistilBERT's layers in BertSelfAttention's form (scores / sqrt(d) + an additive mask), which
    ONNX Runtime's optimizer fuses. Its own form (q / sqrt(d), masked_fill) matches the optimizer's
    DistilBERT pattern, whose mask check then refuses it (onnxruntime 1.32: no fused Attention)."""
    hidden = distilbert_embed(m, token_embeds, token_type_ids, attention_mask)
    extended = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * _min(hidden.dtype)
    for layer in m.layers:
        attention = layer.attention
        heads, size = attention.n_heads, attention.attention_head_size
        query, key, value = (
            split_heads(p(hidden), heads, size) for p in (attention.q_lin, attention.k_lin, attention.v_lin)
        )  # [B, heads, T, d]
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(size) + extended
        context = merge_heads(torch.matmul(torch.softmax(scores, dim=-1), value), heads, size)  # [B, T, H]
        attended = layer.sa_layer_norm(attention.out_lin(context) + hidden)
        hidden = layer.output_layer_norm(layer.ffn(attended) + attended)
    return hidden


# ---------------------------------------------------------------------------------------------
# MPNet: absolute positions after padding_idx (1, hard-coded in MPNetEmbeddings) plus a relative
# position bias computed once per forward (MPNetEncoder.compute_position_bias) and added to every
# layer's scores; attention.attn.{q,k,v,o}, attention.LayerNorm; no token types.


def mpnet_embed(m: ArchitectureBackbone, token_embeds, token_type_ids, attention_mask):
    positions = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1 + m.offset  # [B, T]
    return m.embeddings(inputs_embeds=token_embeds, position_ids=positions)


def mpnet_context(m: ArchitectureBackbone, hidden, attention_mask):
    """The position bias [1, heads, T, T] every layer adds: MPNetEncoder.compute_position_bias over
    the text's positions, with its own bucketing (always 32 buckets, as compute_position_bias calls
    it, whatever relative_attention_num_buckets says). A forward without it runs silently wrong."""
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    positions = torch.arange(hidden.shape[1], dtype=torch.long, device=hidden.device)
    relative = positions[None, :] - positions[:, None]  # memory - context, [T, T]
    buckets = MPNetEncoder.relative_position_bucket(relative, num_buckets=32)
    return m.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, heads, T, T]


def mpnet_layer(m: ArchitectureBackbone, index, hidden, attention_mask, prefix_kv, prefix_mask, context):
    layer = m.layers[index]
    attention = layer.attention.attn
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query, key, value = (split_heads(p(hidden), heads, size) for p in (attention.q, attention.k, attention.v))
    mask = additive_mask(prefix_mask, attention_mask, hidden.dtype)
    scale = 1.0 / math.sqrt(size)
    attended = attention.o(prefix_attention(query, key, value, prefix_kv, mask, scale, text_bias=context))
    attended = layer.attention.LayerNorm(attended + hidden)
    return layer.output(layer.intermediate(attended), attended)


def mpnet_key_value(m: ArchitectureBackbone, index, states):
    attention = m.layers[index].attention.attn
    return attention.k(states), attention.v(states)


def mpnet_plain(m: ArchitectureBackbone, token_embeds, attention_mask, token_type_ids):
    hidden = mpnet_embed(m, token_embeds, token_type_ids, attention_mask)
    extended = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * _min(hidden.dtype)
    bias = mpnet_context(m, hidden, attention_mask)
    for layer in m.layers:
        hidden = layer(hidden, extended, None, bias)[0]
    return hidden


# ---------------------------------------------------------------------------------------------
# DeBERTa-v2 (and v3, the same model_type): no absolute positions in v3 (position_biased_input
# false), token types only if type_vocab_size > 0, and in every layer's scores content-to-position
# (c2p) and position-to-content (p2c) terms from relative embeddings shared by the layers
# (encoder.rel_embeddings, LayerNorm'd), bucketed relative distances, scale 1/sqrt(3d).
# attention.self.{query,key,value}_proj, attention.output, intermediate, output.


@dataclass
class DebertaContext:
    rel_embeddings: torch.Tensor  # [2*span, H]
    index: torch.Tensor  # [T, T]: clamp(bucket(i - j) + span, 0, 2*span - 1), i query, j key


def _log_bucket(relative: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa-v2's make_log_bucket_position: exact within buckets/2, log-spaced beyond."""
    sign = torch.sign(relative)
    mid = buckets // 2
    near = (relative < mid) & (relative > -mid)
    absolute = torch.where(near, torch.full_like(relative, mid - 1), torch.abs(relative))
    log_position = (
        torch.ceil(torch.log(absolute / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    )
    return torch.where(absolute <= mid, relative.to(log_position.dtype), log_position * sign).long()


def deberta_spans(config) -> tuple[int, int, int]:
    """(position_buckets, max_relative_positions, att_span) as DisentangledSelfAttention sets them."""
    buckets = getattr(config, "position_buckets", -1)
    max_relative = getattr(config, "max_relative_positions", -1)
    if max_relative < 1:
        max_relative = config.max_position_embeddings
    return buckets, max_relative, buckets if buckets > 0 else max_relative


def deberta_embed(m: ArchitectureBackbone, token_embeds, token_type_ids, attention_mask):
    positions = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1 + m.offset
    return m.embeddings(token_type_ids=token_type_ids, position_ids=positions, mask=attention_mask,
                        inputs_embeds=token_embeds)  # fmt: skip


def deberta_context(m: ArchitectureBackbone, hidden, attention_mask) -> DebertaContext | None:
    if not getattr(m.config, "relative_attention", False):
        return None
    buckets, max_relative, span = deberta_spans(m.config)
    positions = torch.arange(hidden.shape[1], dtype=torch.long, device=hidden.device)
    relative = positions[:, None] - positions[None, :]  # query - key, [T, T]
    if buckets > 0 and max_relative > 0:
        relative = _log_bucket(relative, buckets, max_relative)
    rel_embeddings = m.rel_embeddings.weight[: 2 * span]  # [2*span, H], as DebertaV2Encoder.get_rel_embedding
    if hasattr(m, "rel_norm"):  # present where norm_rel_ebd names layer_norm (v3)
        rel_embeddings = m.rel_norm(rel_embeddings)
    return DebertaContext(rel_embeddings, torch.clamp(relative + span, 0, 2 * span - 1))


def deberta_layer(m: ArchitectureBackbone, index, hidden, attention_mask, prefix_kv, prefix_mask, context):
    """DisentangledSelfAttention with a prefix: c2c over [prefix; text], c2p and p2c over the text's
    keys only (a prefix slot has no position), everything scaled by 1/sqrt(d * (1 + terms))."""
    layer = m.layers[index]
    attention = layer.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query, key, value = (
        split_heads(p(hidden), heads, size)
        for p in (attention.query_proj, attention.key_proj, attention.value_proj)
    )  # [B, heads, T, d]
    terms = attention.pos_att_type
    scale = math.sqrt(size * (1 + ("c2p" in terms) + ("p2c" in terms)))  # DeBERTa-v3: sqrt(3d)
    bias = None
    if context is not None:
        bias = 0
        rel = context.rel_embeddings.unsqueeze(0)  # [1, 2*span, H]
        index_ = context.index  # [T, T]
        batch, _, length, _ = query.shape
        expand = (batch, heads, length, length)
        if "c2p" in terms:  # query i . position key of bucket(i - j)
            position_key = attention.key_proj(rel) if attention.share_att_key else attention.pos_key_proj(rel)
            scores = torch.matmul(
                query, split_heads(position_key, heads, size).transpose(-1, -2)
            )  # [B, h, T, 2s]
            bias = bias + torch.gather(scores, -1, index_.expand(expand)) / scale
        if "p2c" in terms:  # key j . position query of bucket(i - j)
            position_query = (
                attention.query_proj(rel) if attention.share_att_key else attention.pos_query_proj(rel)
            )
            scores = torch.matmul(
                key, split_heads(position_query, heads, size).transpose(-1, -2)
            )  # [B, h, T, 2s]
            bias = bias + torch.gather(scores, -1, index_.t().expand(expand)).transpose(-1, -2) / scale
    mask = additive_mask(prefix_mask, attention_mask, hidden.dtype)
    attended = prefix_attention(query, key, value, prefix_kv, mask, 1.0 / scale, text_bias=bias)
    attended = layer.attention.output(attended, hidden)
    return layer.output(layer.intermediate(attended), attended)


def deberta_key_value(m: ArchitectureBackbone, index, states):
    attention = m.layers[index].attention.self
    return attention.key_proj(states), attention.value_proj(states)


def deberta_check(config) -> None:
    heads = config.num_attention_heads
    if getattr(config, "attention_head_size", config.hidden_size // heads) * heads != config.hidden_size:
        raise ValueError(
            "ipt-edge needs heads * attention_head_size == hidden_size (DeBERTa's attention_head_size)"
        )
    if getattr(config, "conv_kernel_size", 0) > 0:  # DeBERTa-v2 xlarge/xxlarge: a convolution after layer 0
        raise ValueError(
            "DeBERTa-v2 with a convolution layer (conv_kernel_size > 0) is not supported; v3 has none"
        )


# ---------------------------------------------------------------------------------------------
# ModernBERT: no absolute positions or token types; embeddings are a norm of the token embeddings;
# pre-norm layers (attn_norm, Identity in layer 0; mlp_norm), fused attn.Wqkv, rotary positions
# (global layers one theta, local layers another), every global_attn_every_n_layers-th layer global
# and the others local (a sliding window of local_attention tokens), a gated MLP, final_norm.
# Eager attention's math; the unpadded (flash) path computes the same for real tokens.


@dataclass
class ModernBertContext:
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer -> (cos, sin) [1, T, d]
    window: torch.Tensor  # [T, T] bool: within the local layers' window


def modernbert_embed(m: ArchitectureBackbone, token_embeds, token_type_ids, attention_mask):
    return m.embeddings(inputs_embeds=token_embeds)


def modernbert_context(m: ArchitectureBackbone, hidden, attention_mask) -> ModernBertContext:
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)  # [1, T]
    rotary = {i: layer.attn.rotary_emb(hidden, position_ids=positions) for i, layer in enumerate(m.layers)}
    distance = torch.abs(positions[0][:, None] - positions[0][None, :])
    return ModernBertContext(rotary, distance <= m.config.local_attention // 2)


def modernbert_layer(m: ArchitectureBackbone, index, hidden, attention_mask, prefix_kv, prefix_mask, context):
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    layer = m.layers[index]
    attention = layer.attn
    batch, length, _ = hidden.shape
    qkv = attention.Wqkv(layer.attn_norm(hidden)).view(
        batch, length, 3, attention.num_heads, attention.head_dim
    )
    query, key, value = qkv.transpose(3, 1).unbind(dim=2)  # [B, heads, T, d] each
    cos, sin = context.rotary[index]
    query, key = apply_rotary_pos_emb(query, key, cos, sin)  # the text only: prefix keys are as given
    text = attention_mask[:, None, :].bool().expand(-1, length, -1)  # [B, T, T]: query, key
    if attention.local_attention != (-1, -1):  # a local layer: text keys within the window only
        text = text & context.window[None]
    allowed = torch.cat([prefix_mask[:, None, :].bool().expand(-1, length, -1), text], dim=2)  # [B, T, P+T]
    mask = (1.0 - allowed[:, None].to(hidden.dtype)) * _min(hidden.dtype)  # [B, 1, T, P+T]
    attended = prefix_attention(query, key, value, prefix_kv, mask, attention.head_dim**-0.5)
    hidden = hidden + attention.Wo(attended)
    return hidden + layer.mlp(layer.mlp_norm(hidden))


def modernbert_key_value(m: ArchitectureBackbone, index, states):
    """Unrotated keys (a prefix slot sits at position 0, where the rotation is the identity)."""
    layer = m.layers[index]
    hidden = layer.attn.all_head_size
    qkv = layer.attn.Wqkv(layer.attn_norm(states))
    return qkv[..., hidden : 2 * hidden], qkv[..., 2 * hidden :]


def modernbert_finish(m: ArchitectureBackbone, hidden):
    return m.final_norm(hidden)


# ---------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class Architecture:
    """How one model_type's frozen encoder is driven. Paths are attributes of the Hugging Face base
    model (AutoModel) or, for attention and norms, of one of its layers."""

    model_type: str
    positions: str  # "absolute" | "relative bias" | "disentangled" | "rotary"
    word_embeddings: str  # what embed.onnx looks up
    embeddings: str
    layers: str
    attention: tuple[str, ...]  # projections in one layer: query, key, value, output (or Wqkv, Wo)
    norms: tuple[str, ...]  # norms in one layer, in order
    ort_fuses: bool  # onnxruntime 1.32's optimizer fuses attention in `plain`'s graph (tests check)
    embed: Callable
    layer: Callable
    key_value: Callable
    plain: Callable | None = None  # no prefix, in a form ORT fuses (HF layers); None: `layer`, P = 0
    context: Callable = lambda m, hidden, attention_mask: None
    finish: Callable = lambda m, hidden: hidden
    offset: Callable[[Any], int] = lambda config: 0  # first text position
    check: Callable[[Any], None] = lambda config: None  # refuse variants this adapter does not run
    extras: dict[str, str] = field(default_factory=dict)  # more frozen parts, where present: name -> path


_BERT_LIKE = {
    "positions": "absolute", "word_embeddings": "embeddings.word_embeddings",
    "embeddings": "embeddings", "layers": "encoder.layer",
    "attention": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    "norms": ("attention.output.LayerNorm", "output.LayerNorm"), "ort_fuses": True,
    "embed": bert_embed, "layer": bert_layer, "key_value": bert_key_value, "plain": bert_plain,
    "check": bert_check,
}  # fmt: skip

ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture("bert", **_BERT_LIKE),  # also bge, e5, BioBERT, (multilingual) MiniLM
    "roberta": Architecture("roberta", **{**_BERT_LIKE, "offset": roberta_offset}),
    "xlm-roberta": Architecture("xlm-roberta", **{**_BERT_LIKE, "offset": roberta_offset}),
    "camembert": Architecture("camembert", **{**_BERT_LIKE, "offset": roberta_offset}),
    "electra": Architecture("electra", **_BERT_LIKE, extras={"embeddings_project": "embeddings_project"}),
    "distilbert": Architecture(
        "distilbert", positions="absolute", word_embeddings="embeddings.word_embeddings",
        embeddings="embeddings", layers="transformer.layer",
        attention=("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),
        norms=("sa_layer_norm", "output_layer_norm"), ort_fuses=True,
        embed=distilbert_embed, layer=distilbert_layer, key_value=distilbert_key_value, plain=distilbert_plain,
    ),
    "mpnet": Architecture(
        "mpnet", positions="relative bias", word_embeddings="embeddings.word_embeddings",
        embeddings="embeddings", layers="encoder.layer",
        attention=("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o"),
        norms=("attention.LayerNorm", "output.LayerNorm"), ort_fuses=False,
        embed=mpnet_embed, layer=mpnet_layer, key_value=mpnet_key_value, plain=mpnet_plain, context=mpnet_context,
        offset=lambda config: 2,  # MPNetEmbeddings.padding_idx (1, whatever the config says) + 1
        extras={"relative_attention_bias": "encoder.relative_attention_bias"},
    ),
    "deberta-v2": Architecture(
        "deberta-v2", positions="disentangled", word_embeddings="embeddings.word_embeddings",
        embeddings="embeddings", layers="encoder.layer",
        attention=("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                   "attention.output.dense"),
        norms=("attention.output.LayerNorm", "output.LayerNorm"), ort_fuses=False,
        embed=deberta_embed, layer=deberta_layer, key_value=deberta_key_value, context=deberta_context,
        check=deberta_check, extras={"rel_embeddings": "encoder.rel_embeddings", "rel_norm": "encoder.LayerNorm"},
    ),
    "modernbert": Architecture(
        "modernbert", positions="rotary", word_embeddings="embeddings.tok_embeddings",
        embeddings="embeddings", layers="layers", attention=("attn.Wqkv", "attn.Wo"),
        norms=("attn_norm", "mlp_norm"), ort_fuses=False,
        embed=modernbert_embed, layer=modernbert_layer, key_value=modernbert_key_value,
        context=modernbert_context, finish=modernbert_finish, extras={"final_norm": "final_norm"},
    ),
}  # fmt: skip


def architecture(config) -> Architecture:
    """The adapter of a Hugging Face config; ValueError naming the supported model types otherwise."""
    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"ipt-edge does not know the architecture {kind!r}; supported model types: "
            f"{', '.join(sorted(ARCHITECTURES))}"
        )
    adapter = ARCHITECTURES[kind]
    adapter.check(config)
    return adapter


def word_embeddings(hf_model) -> nn.Embedding:
    """The frozen token embedding table [V, E] embed.onnx looks up (E = H but for ELECTRA-small)."""
    return hf_model.get_submodule(architecture(hf_model.config).word_embeddings)


def position_offset(config) -> int:
    """The first text position id (RoBERTa family: padding_idx + 1; MPNet 2; others 0)."""
    return architecture(config).offset(config)


class ArchitectureBackbone(nn.Module):
    """A frozen Hugging Face encoder driven through its adapter: its parts registered under the
    adapter's names (`embeddings`, `layers`, then extras), and the forward every prefix path shares.

    For the BERT family the parts are `embeddings` and `layers`, in that order, as the exported
    graphs have always named them, so their parameter names (and graphs) do not change."""

    def __init__(self, hf_model):
        super().__init__()
        config = hf_model.config
        self.arch = architecture(config)
        self.config = config
        self.embeddings = hf_model.get_submodule(self.arch.embeddings)
        self.layers = hf_model.get_submodule(self.arch.layers)
        for name, path in self.arch.extras.items():  # optional parts: ELECTRA-base has no embeddings_project
            with contextlib.suppress(AttributeError):
                self.add_module(name, hf_model.get_submodule(path))
        self.offset = self.arch.offset(config)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads

    def layer_outputs(
        self,
        token_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        prefix_mask: torch.Tensor,
        prefix_kv: Sequence[torch.Tensor],
        layers: range | None = None,
        hidden: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every layer's output [B, T, H] (before `finish`). token_embeds [B, T, E] float,
        attention_mask / token_type_ids [B, T] int64, prefix_mask [B, L, P] int64 (1 = attend),
        prefix_kv: L tensors [2, B, heads, P, head_dim] (0 = keys, 1 = values).

        `layers` runs only those (outputs then hold only theirs); `hidden` [B, T, H] is the state
        entering the first of them, in place of the embeddings: a trainer computes the layers below
        the first prompted one once per row and resumes from there (export/train.py)."""
        arch = self.arch
        layers = range(len(self.layers)) if layers is None else layers
        if hidden is None:
            hidden = arch.embed(self, token_embeds, token_type_ids, attention_mask)
        context = arch.context(self, hidden, attention_mask)  # from the shape alone: same at any layer
        outputs = []
        for index in layers:
            hidden = arch.layer(
                self, index, hidden, attention_mask, prefix_kv[index], prefix_mask[:, index], context
            )
            outputs.append(hidden)
        return outputs

    def forward(self, token_embeds, attention_mask, token_type_ids, prefix_mask, *prefix_kv) -> torch.Tensor:
        """hidden [B, T, H]: the text's states after every layer read its prefix (the graph contract's
        inputs, in its order: prefix_kv.0 .. prefix_kv.{L-1} last)."""
        outputs = self.layer_outputs(token_embeds, attention_mask, token_type_ids, prefix_mask, prefix_kv)
        return self.arch.finish(self, outputs[-1])

    def empty_prefix(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """prefix_mask [B, L, 0] and L prefix_kv [2, B, heads, 0, head_dim]: no prefix at all."""
        layers = len(self.layers)
        mask = torch.zeros(batch, layers, 0, dtype=torch.int64, device=like.device)
        kv = like.new_zeros(2, batch, self.num_heads, 0, self.head_dim)
        return mask, [kv] * layers

    def plain(self, token_embeds, attention_mask, token_type_ids) -> torch.Tensor:
        """The frozen backbone without a prefix, hidden [B, T, H]; through Hugging Face's own layers
        where the adapter has them (the graph ONNX Runtime's optimizer can fuse)."""
        if self.arch.plain is not None:
            return self.arch.finish(self, self.arch.plain(self, token_embeds, attention_mask, token_type_ids))
        mask, kv = self.empty_prefix(token_embeds.shape[0], token_embeds)
        return self.arch.finish(
            self, self.layer_outputs(token_embeds, attention_mask, token_type_ids, mask, kv)[-1]
        )

    @torch.no_grad()
    def initial_prefix(self, embeds: torch.Tensor, first_layer: int) -> torch.Tensor:
        """Keys and values of P token embeddings at layers first_layer..L-1, as the backbone computes
        them when it reads those tokens as a text: a prefix that starts where real tokens are.
        embeds [P, E] -> [L - first_layer, 2, P, H]"""
        tokens = embeds.unsqueeze(0)  # [1, P, E]
        ones = torch.ones(tokens.shape[:2], dtype=torch.int64, device=embeds.device)
        mask, kv = self.empty_prefix(1, tokens)
        arch = self.arch
        states = arch.embed(self, tokens, torch.zeros_like(ones), ones)
        context = arch.context(self, states, ones)
        rows = []
        for index in range(len(self.layers)):
            if index >= first_layer:
                key, value = arch.key_value(self, index, states[0])  # [P, H] each
                rows.append(torch.stack([key, value]))
            states = arch.layer(self, index, states, ones, kv[index], mask[:, index], context)
        if not rows:  # first_layer == L: no layer has a prefix (a probe task)
            return embeds.new_zeros(0, 2, embeds.shape[0], self.num_heads * self.head_dim)
        return torch.stack(rows)
