"""The IPT model in PyTorch: a frozen Hugging Face encoder, a prefix generator, a linear head.

One batch flows like the runtime's (see ipt_edge/bundle.py), so every piece here is also an
ONNX graph in the bundle:

    input_ids ─▶ word embeddings (frozen)                        ─▶ token_embeds [B, T, H]   embed.onnx
    input_ids, token_embeds, attention_mask ─▶ generator ─▶ prefix_kv.0 .. prefix_kv.{L-1}
                                        [2, B, heads, P, head_dim] each (keys, values)   generator.onnx
    token_embeds, masks, prefix_mask [B, L, P], prefix_kv ─▶ FrozenBackbone ─▶ hidden [B, T, H]
                                                                                          encoder.onnx
    hidden ─▶ pool over the real tokens ─▶ head ─▶ logits [B, C]                 (numpy in the runtime)

Every generator family gives every layer's attention P keys/values in front of the text's own, so
the text runs on its own T positions and every task runs through the one backbone graph. The
names, dtypes and shapes of every graph are in ipt_edge/graphs.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ipt_edge.manifest import POOLINGS
from ipt_edge_export.architectures import ArchitectureBackbone, word_embeddings
from ipt_edge_export.architectures import position_offset as architecture_offset

# The generator families (`ipt-edge train --generator`). Every one emits per-layer prefix keys and
# values: `prefix` the same for every input, the others also an instance part computed from it.
GENERATORS = ("prefix", "lookup-prefix", "mlp-prefix", "lstm-prefix", "cnn-prefix", "attn-prefix")
# Generators of earlier versions that prepended prompt vectors to the text, and what replaces each.
REMOVED_GENERATORS = {
    "static": "prefix", "static-deep": "prefix", "lookup": "lookup-prefix", "mlp": "mlp-prefix",
    "mlp-deep": "mlp-prefix", "lstm": "lstm-prefix", "lstm-deep": "lstm-prefix", "cnn": "cnn-prefix",
    "cnn-deep": "cnn-prefix",
}  # fmt: skip


def check_generator(generator: str) -> None:
    """Raise ValueError unless `generator` is a family this version trains and runs; a removed
    (prepended-prompt) generator is named with its replacement."""
    if generator in GENERATORS:
        return
    if generator in REMOVED_GENERATORS:
        raise ValueError(
            f"generator {generator!r} prepended prompts, which this ipt-edge no longer runs; retrain with "
            f"--generator {REMOVED_GENERATORS[generator]}"
        )
    raise ValueError(f"generator must be one of {', '.join(GENERATORS)}; got {generator!r}")


# AdamW's learning rate without --lr, the same for every generator family (P-tuning v2 uses 5e-3 to
# 1e-2, the IPT paper 3e-2; our sweep on SST-2 dev chose 5e-2 for prefix prompts, docs/accuracy.md).
DEFAULT_LR = 5e-2


@dataclass
class IPTConfig:
    generator: str = "attn-prefix"  # the best measured (docs/accuracy.md); GENERATORS lists all
    prompt_length: int = 16  # P: prefix keys/values per layer
    lookup_rank: int = 8  # lookup-prefix: rank of the trainable [vocab, r] table
    feature_size: int = 48  # lstm/cnn: width the token embeddings are projected to; attn: key width
    dropout: float = 0.1  # on the generator's code and the pooled states (training only)
    pooling: str = "mean"  # mean over the real tokens, or the first token
    labels: list[str] = field(default_factory=list)  # display names, in logit order
    label_values: list[str] = field(default_factory=list)  # the same labels as written in the data
    text_pair: bool = False
    max_length: int = 128  # token budget of the text (the prefix takes no positions)
    prefix_from_layer: int = 0  # the first layer with a prefix (layers below get none)
    prefix_rank: int = 16  # instance families but lookup: bottleneck width of the per-input part

    def __post_init__(self) -> None:
        check_generator(self.generator)
        if self.prefix_from_layer < 0:
            raise ValueError(f"prefix_from_layer must be >= 0, got {self.prefix_from_layer}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {self.prompt_length}")

    def to_dict(self) -> dict:
        return asdict(self)


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens. [B, T, F], [B, T] -> [B, F]"""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------
# Features: what an instance generator reads of its input. Each maps (input_ids [B,T], token_embeds
# [B,T,H], attention_mask [B,T]) to [B, size]. Nothing here depends on other rows of the batch or on
# how far a row is padded, which is what lets the runtime batch by length.


class MeanEmbedding(nn.Module):
    """`mlp-prefix`: the masked mean of the input's frozen token embeddings."""

    def __init__(self, hidden: int):
        super().__init__()
        self.size = hidden

    def forward(self, input_ids, token_embeds, attention_mask):
        return masked_mean(token_embeds, attention_mask)


class LSTMFeatures(nn.Module):
    """`lstm-prefix`: a bidirectional LSTM over the (projected) token embeddings, mean over real tokens.

    Batch-first, zero initial state. The backward direction reads each row's own tokens reversed
    (padding stays at the end), so a row's features never depend on its padding or its batch.
    """

    def __init__(self, hidden: int, feature_size: int):
        super().__init__()
        self.size = 2 * feature_size
        self.project = nn.Linear(hidden, feature_size)
        self.forward_lstm = nn.LSTM(feature_size, feature_size, batch_first=True)
        self.backward_lstm = nn.LSTM(feature_size, feature_size, batch_first=True)

    def forward(self, input_ids, token_embeds, attention_mask):
        x = self.project(token_embeds) * attention_mask.unsqueeze(-1).to(token_embeds.dtype)  # [B, T, F]
        forward_states, _ = self.forward_lstm(x)
        # Reverse each row's real tokens in place: position t reads token (length - 1 - t).
        lengths = attention_mask.sum(1, keepdim=True)  # [B, 1]
        positions = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1  # [B, T]
        source = torch.where(positions < lengths, lengths - 1 - positions, positions)
        gather = source.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        backward_states, _ = self.backward_lstm(torch.gather(x, 1, gather))
        states = torch.cat([forward_states, backward_states], dim=-1)  # [B, T, 2F]
        return masked_mean(states, attention_mask)


class CNNFeatures(nn.Module):
    """`cnn-prefix`: TextCNN (Kim, 2014) over the (projected) token embeddings, max over real tokens.

    Odd widths with 'same' padding and zeroed padding tokens: any input length works, and a row's
    features do not depend on how far it is padded.
    """

    widths = (3, 5)

    def __init__(self, hidden: int, feature_size: int):
        super().__init__()
        self.size = feature_size * len(self.widths)
        self.project = nn.Linear(hidden, feature_size)
        self.convs = nn.ModuleList(
            nn.Conv1d(feature_size, feature_size, width, padding=width // 2) for width in self.widths
        )

    def forward(self, input_ids, token_embeds, attention_mask):
        mask = attention_mask.unsqueeze(1).to(token_embeds.dtype)  # [B, 1, T]
        x = self.project(token_embeds).transpose(1, 2) * mask  # [B, F, T]
        pooled = []
        for conv in self.convs:
            maps = torch.relu(conv(x))  # [B, F, T]
            pooled.append((maps - (1.0 - mask) * 1e4).amax(dim=2))  # [B, F]
        return torch.cat(pooled, dim=-1)


class AttentionPooling(nn.Module):
    """`attn-prefix`: attention pooling (ID-SPAM-like, arXiv 2506.05629). M learned queries attend
    over the input's frozen token embeddings (keys: a learned projection of them; values: the
    embeddings themselves), real tokens only; the M pooled vectors, side by side, are the features."""

    queries = 4

    def __init__(self, hidden: int, key_size: int):
        super().__init__()
        self.size = self.queries * hidden
        self.key = nn.Linear(hidden, key_size)
        self.query = nn.Parameter(torch.randn(self.queries, key_size) / math.sqrt(key_size))  # [M, K]
        self.scale = 1.0 / math.sqrt(key_size)

    def forward(self, input_ids, token_embeds, attention_mask):
        scores = self.key(token_embeds) @ self.query.t() * self.scale  # [B, T, M]
        padding = attention_mask.unsqueeze(-1) == 0
        weights = torch.softmax(scores.masked_fill(padding, torch.finfo(scores.dtype).min), dim=1)
        pooled = weights.transpose(1, 2) @ token_embeds  # [B, M, H]
        return pooled.flatten(1)  # [B, M*H]


# ---------------------------------------------------------------------------------------------
# Generators. Each maps (input_ids, token_embeds, attention_mask) to prefix_kv: for every layer,
# [2, B, heads, P, head_dim] (keys, values), what its attention reads before the keys/values of the
# text's own tokens. One tensor per layer, in the layout ONNX Runtime's fused Attention takes as
# `past`: each is written once, where the backbone graph reads it (ipt_edge/graphs.py).
#
# Why keys and values, and not per-layer hidden vectors that the encoder graph would project with
# each frozen layer's own W_k and W_v: (1) as in P-tuning v2 and prefix tuning, a prefix position's
# key and value are free of each other (one hidden vector would tie them through the frozen
# projections and their biases); (2) the encoder graph then only attends to tensors it is given:
# task-free, and in the layout ONNX Runtime's fused attention takes as `past`; (3) parity: PyTorch
# and the graph run the same arithmetic, nothing is recomputed.


def initial_prefix(hf_model, embeds: torch.Tensor, first_layer: int) -> torch.Tensor:
    """Keys and values of P vocabulary tokens at layers first_layer..L-1, as the backbone computes
    them when it reads those tokens as a text: a prefix that starts where real tokens are (each
    architecture's key/value projections, export/architectures.py).
    embeds [P, E] -> [L - first_layer, 2, P, H]"""
    return ArchitectureBackbone(hf_model).initial_prefix(embeds, first_layer)


class PrefixPrompt(nn.Module):
    """Every family's generator: a static prefix per layer, plus an instance part where the family
    has one.

    base [L', 2, P, H] holds keys and values for the L' = L - k prompted layers (k =
    prefix_from_layer); the layers below get zeros, which the backbone's prefix_mask leaves out.
    Without `features` this is `prefix` (P-tuning v2's deep prefix, the task-level baseline). With
    them, layer l also gets up(gate[l] * code), code = tanh(down(features(input))): one `up`
    shared by all layers writes keys and values at once, read through a per-layer gate on the
    code's units. `up` starts at zero, so training starts exactly at the static prefix; the gate
    starts at one (a zero gate times the zero `up` would get no gradient). `up` has no bias: a bias
    shared by the layers would only repeat the per-layer base.
    """

    def __init__(self, base: torch.Tensor, num_heads: int, first_layer: int, features: nn.Module | None = None,
                 rank: int = 0, dropout: float = 0.0):  # fmt: skip
        super().__init__()
        layers, _, self.prompt_length, self.hidden = base.shape
        self.num_heads, self.first_layer = num_heads, first_layer
        self.base = nn.Parameter(base.clone())  # [L', 2, P, H]
        self.features = features
        if features is not None:
            self.down = nn.Linear(features.size, rank)
            self.up = nn.Linear(rank, 2 * self.prompt_length * self.hidden, bias=False)
            nn.init.zeros_(self.up.weight)
            self.layer_gate = nn.Parameter(torch.ones(layers, rank))  # [L', R]
            self.dropout = nn.Dropout(dropout)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    def instance(self, input_ids, token_embeds, attention_mask) -> list[torch.Tensor] | None:
        """The input's own part of the prefix: for each prompted layer [2, B, heads, P, head_dim]
        (None for the static `prefix`)."""
        if self.features is None:
            return None
        features = self.features(input_ids, token_embeds, attention_mask)  # [B, F]
        code = self.dropout(torch.tanh(self.down(features)))  # [B, R]
        heads, p, d = self.num_heads, self.prompt_length, self.head_dim
        # up's rows are (keys/values, P, heads, head_dim): reordered so that one matmul writes a
        # layer's prefix in the [2, B, heads, P, head_dim] layout (folded into a constant at export).
        up = self.up.weight.view(2, p, heads, d, -1).permute(0, 4, 2, 1, 3).flatten(2)  # [2, R, heads*P*d]
        batch = code.shape[0]
        return [
            torch.matmul(code * gate, up).view(2, batch, heads, p, d) for gate in self.layer_gate.unbind(0)
        ]

    def forward(self, input_ids, token_embeds, attention_mask) -> list[torch.Tensor]:
        """prefix_kv: [2, B, heads, P, head_dim] for every layer of the backbone."""
        batch, heads, p, d = token_embeds.shape[0], self.num_heads, self.prompt_length, self.head_dim
        base = self.base.view(self.base.shape[0], 2, 1, p, heads, d).transpose(
            3, 4
        )  # [L', 2, 1, heads, P, d]
        parts = self.instance(input_ids, token_embeds, attention_mask)
        # Layers below first_layer get zeros, which the backbone's prefix_mask leaves out.
        prefix = [token_embeds.new_zeros(2, batch, heads, p, d) for _ in range(self.first_layer)]
        for layer, static in enumerate(base.unbind(0)):
            prefix.append(static.expand(2, batch, heads, p, d) if parts is None else parts[layer] + static)
        return prefix


class LookupPrefix(PrefixPrompt):
    """`lookup-prefix`, the paper's token-wise IPT: prefix slot p gets an instance part from a
    trainable low-rank table at the input's p-th token id.

    code[b, p] = table[input_ids[b, p]] ([vocab, r], r = lookup_rank), zero where the input is
    shorter than P; layer l's slot p then gets up(gate[l] * code[b, p]): keys and values of one slot
    ([2, H]) from one `up` shared by the slots and layers (zero at the start, so training starts at
    the static prefix, as for every family)."""

    def __init__(self, base: torch.Tensor, num_heads: int, first_layer: int, vocab_size: int, rank: int,
                 dropout: float):  # fmt: skip
        super().__init__(base, num_heads, first_layer)
        layers = base.shape[0]
        self.table = nn.Parameter(torch.randn(vocab_size, rank) / math.sqrt(rank))  # [V, r]
        self.up = nn.Linear(rank, 2 * self.hidden, bias=False)
        nn.init.zeros_(self.up.weight)
        self.layer_gate = nn.Parameter(torch.ones(layers, rank))  # [L', r]
        self.dropout = nn.Dropout(dropout)

    def instance(self, input_ids, token_embeds, attention_mask):
        p, heads, d = self.prompt_length, self.num_heads, self.head_dim
        # Pad by P then cut to P: the first P ids, zero-padded when T < P (no data-dependent shape).
        ids = F.pad(input_ids, (0, p))[:, :p]  # [B, P]
        keep = F.pad(attention_mask, (0, p))[:, :p].unsqueeze(-1).to(token_embeds.dtype)  # [B, P, 1]
        code = self.dropout(F.embedding(ids, self.table) * keep)  # [B, P, r]
        batch = code.shape[0]
        # [B, P, 2, heads, d] -> [2, B, heads, P, d] for each prompted layer
        return [
            self.up(code * gate).view(batch, p, 2, heads, d).permute(2, 0, 3, 1, 4)
            for gate in self.layer_gate.unbind(0)
        ]


def build_generator(config: IPTConfig, word_embeddings: torch.Tensor, seed: int, hf_model) -> PrefixPrompt:
    """A generator whose static prefix starts as the backbone's keys and values of P vocabulary
    tokens (drawn with `seed`), and whose instance part, if any, starts at zero."""
    check_generator(config.generator)
    g = torch.Generator().manual_seed(seed)
    vocab_size, hidden = word_embeddings.shape
    rows = torch.randint(0, vocab_size, (config.prompt_length,), generator=g)
    init = word_embeddings[rows].detach().clone()  # [P, H]
    base = initial_prefix(hf_model, init, config.prefix_from_layer)
    heads, first = hf_model.config.num_attention_heads, config.prefix_from_layer
    kind = config.generator
    if kind == "prefix":
        return PrefixPrompt(base, heads, first)
    if kind == "lookup-prefix":
        return LookupPrefix(base, heads, first, vocab_size, config.lookup_rank, config.dropout)
    features = {
        "mlp-prefix": lambda: MeanEmbedding(hidden),
        "lstm-prefix": lambda: LSTMFeatures(hidden, config.feature_size),
        "cnn-prefix": lambda: CNNFeatures(hidden, config.feature_size),
        "attn-prefix": lambda: AttentionPooling(hidden, config.feature_size),
    }[kind]()
    return PrefixPrompt(base, heads, first, features, config.prefix_rank, config.dropout)


# ---------------------------------------------------------------------------------------------
# The frozen backbone, split the way the bundle splits it.


def position_offset(hf_config) -> int:
    """The text's first position id: RoBERTa family padding_idx + 1, MPNet 2, others 0 (its adapter)."""
    return architecture_offset(hf_config)


class FrozenBackbone(ArchitectureBackbone):
    """The frozen backbone with every layer's prefix, as the bundle's encoder.onnx runs it:
    hidden [B, T, H]. Any architecture of export/architectures.py's table (an unknown model_type is
    a ValueError naming the supported ones).

    Tokens keep positions 0..T-1 (+ the architecture's offset). Layer l's attention reads the P
    prefix keys/values prefix_kv[l] in front of the tokens' own; prefix_mask[:, l] (1 = attend)
    covers them, so layers below a task's first prompted layer, given a zero mask, run as the plain
    backbone. This module is the exported encoder.onnx by default; with `export --optimize`, where
    ONNX Runtime fuses the architecture's attention, encoder.onnx is instead the fused plain
    backbone fed the prefix through its attention's `past` (onnx_export.py), and this module is its
    PyTorch reference.

        forward(token_embeds [B,T,E] float, attention_mask [B,T] int64, token_type_ids [B,T] int64,
                prefix_mask [B,L,P] int64, *prefix_kv: L x [2,B,heads,P,head_dim]) -> hidden [B,T,H]
        layer_outputs(...same, prefix_kv as a sequence) -> every layer's output [B,T,H]
    """


def prefix_mask(batch: int, num_layers: int, prompt_length: int, first_layer: int, device=None):
    """[B, L, P] int64: 1 where a layer attends to its prefix (layers from first_layer on)."""
    mask = torch.ones(batch, num_layers, prompt_length, dtype=torch.int64, device=device)
    mask[:, :first_layer] = 0
    return mask


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pooled states of the real tokens (padding left out). [B, T, H] -> [B, H]"""
    return hidden[:, 0] if how == "cls" else masked_mean(hidden, attention_mask)


class IPTModel(nn.Module):
    """Frozen backbone + trainable generator and head. Only `generator.*` and `head.*` train.

    One path for every family: generator -> prefix keys/values -> backbone -> pool -> head."""

    def __init__(self, hf_model, config: IPTConfig, seed: int = 0):
        super().__init__()
        if not config.labels:
            raise ValueError("IPTConfig.labels is empty: a classifier needs at least two labels")
        self.config = config
        self.word_embeddings = word_embeddings(hf_model)
        self.backbone = FrozenBackbone(hf_model)
        self.num_layers = len(self.backbone.layers)
        # prefix_from_layer == num_layers: no layer reads the prefix, so the task is a linear probe
        # on the frozen backbone (what training keeps when the probe wins on dev).
        if not config.prefix_from_layer <= self.num_layers:
            raise ValueError(
                f"prefix_from_layer {config.prefix_from_layer} is not a layer of this backbone "
                f"(0..{self.num_layers - 1}), nor {self.num_layers} (no prefix)"
            )
        for parameter in hf_model.parameters():
            parameter.requires_grad_(False)
        hf_model.eval()  # frozen: no dropout, also while the generator's start is computed from it
        self.generator = build_generator(config, self.word_embeddings.weight, seed, hf_model)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hf_model.config.hidden_size, len(config.labels))

    def train(self, mode: bool = True):
        # The backbone stays in eval mode (no dropout): it is frozen, and the graphs are too.
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, input_ids, attention_mask, token_type_ids, lower: torch.Tensor | None = None):
        """logits [B, C]. `lower` [B, T, H], where given, is `lower_states` of these rows: the
        layers below the first prompted one are then not run again (export/train.py caches it)."""
        pooled = self.embed(input_ids, attention_mask, token_type_ids, lower)  # [B, H] fp32
        with torch.autocast(input_ids.device.type, enabled=False):
            return self.head(self.dropout(pooled))  # [B, C]

    def embed(self, input_ids, attention_mask, token_type_ids, lower: torch.Tensor | None = None):
        """The prompted backbone's pooled states, fp32 [B, H]: what the head reads (and what the
        contrastive stage of export/pairs.py trains on)."""
        token_embeds = self.word_embeddings(input_ids)  # [B, T, H]
        # Under training's bf16 autocast only the frozen backbone runs in bf16: the generator and the
        # head, the weights that train, compute in fp32.
        with torch.autocast(input_ids.device.type, enabled=False):
            prefix_kv = self.generator(
                input_ids, token_embeds, attention_mask
            )  # L x [2, B, heads, P, head_dim]
        config = self.config
        mask = prefix_mask(input_ids.shape[0], self.num_layers, config.prompt_length,
                           config.prefix_from_layer, input_ids.device)  # fmt: skip
        if lower is None:
            hidden = self.backbone(
                token_embeds, attention_mask, token_type_ids, mask, *prefix_kv
            )  # [B, T, H]
        else:
            layers = range(config.prefix_from_layer, self.num_layers)
            states = self.backbone.layer_outputs(None, attention_mask, None, mask, prefix_kv, layers, lower)
            hidden = self.backbone.arch.finish(self.backbone, states[-1] if states else lower)
        return pool(hidden.float(), attention_mask, config.pooling)  # [B, H]

    @torch.no_grad()
    def lower_states(
        self, input_ids, attention_mask, token_type_ids, upto: int | None = None
    ) -> torch.Tensor:
        """The state entering the first prompted layer (or layer `upto`), [B, T, H]. The layers
        below it carry no prefix, so for a row it never changes: the same every step and epoch."""
        token_embeds = self.word_embeddings(input_ids)
        first = self.config.prefix_from_layer if upto is None else upto
        mask, kv = self.backbone.empty_prefix(input_ids.shape[0], token_embeds)
        return self.backbone.layer_outputs(
            token_embeds, attention_mask, token_type_ids, mask, kv, range(first)
        )[-1]

    @torch.no_grad()
    def frozen_states(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        """The frozen backbone's last states with no prefix at all, [B, T, H]: the linear probe's input."""
        last = self.lower_states(input_ids, attention_mask, token_type_ids, upto=self.num_layers)
        return self.backbone.arch.finish(self.backbone, last)

    def drop_prefix(self) -> None:
        """From now on no layer reads a prefix: the task is its head on the frozen backbone's pooled
        states (a linear probe; export/probe.py). The generator left is the static one, with no layer."""
        heads, size = self.backbone.num_heads, self.backbone.head_dim
        self.config.generator, self.config.prefix_from_layer = "prefix", self.num_layers
        empty = self.head.weight.new_zeros(0, 2, self.config.prompt_length, heads * size)  # [0, 2, P, H]
        self.generator = PrefixPrompt(empty, heads, self.num_layers)

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The weights a task owns: generator and head (what the checkpoint stores)."""
        state = self.state_dict()
        return {k: v for k, v in state.items() if k.startswith(("generator.", "head."))}

    def tuned_parameter_count(self) -> int:
        return sum(v.numel() for v in self.tuned_state().values())
