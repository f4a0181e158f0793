"""The IPT model in PyTorch: a frozen Hugging Face encoder, a prompt generator, a linear head.

One batch flows like the runtime's (see ipt_edge/classifier.py), so every piece here is also an
ONNX graph in the bundle:

    input_ids ─▶ word embeddings (frozen)             ─▶ token_embeds  [B, T, H]   embed.onnx
    input_ids, token_embeds, attention_mask ─▶ generator ─▶ prompt_embeds [B, P, H]  generator.onnx
                                                      (+ layer_prompts [B, L, P, H] for deep kinds)
    token_embeds, prompt_embeds, ... ─▶ PromptedEncoder (frozen) ─▶ hidden [B, P+T, H]  encoder.onnx
    hidden ─▶ pool over the real tokens ─▶ head ─▶ logits [B, C]       (numpy in the runtime)

Prefix kinds (prefix, mlp-prefix, attn-prefix) give every layer's attention P extra keys/values
instead of P extra positions, so the text runs on its own T positions:

    input_ids, token_embeds, attention_mask ─▶ generator ─▶ prefix_keys, prefix_values
                                                  [B, L, heads, P, head_dim] each    generator.onnx
    token_embeds, ..., prefix keys/values, prefix_mask [B, L, P] ─▶ PrefixEncoder ─▶ hidden [B, T, H]
                                                                              encoder_prefix.onnx
The names, dtypes and shapes of every graph are in ipt_edge/graphs.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ipt_edge.graphs import PREFIX_GENERATORS

GENERATOR_KINDS = ("static", "lookup", "mlp", "lstm", "cnn")  # each but lookup also as "<kind>-deep"
POOLINGS = ("mean", "cls")


def split_kind(generator: str) -> tuple[str, bool]:
    """'mlp-deep' -> ('mlp', True): deep kinds also write a prompt into every layer.
    Prefix kinds come back whole: 'mlp-prefix' -> ('mlp-prefix', True)."""
    if generator in PREFIX_GENERATORS:
        return generator, True
    kind, deep = generator.removesuffix("-deep"), generator.endswith("-deep")
    if kind not in GENERATOR_KINDS or (deep and kind == "lookup"):
        choices = [*GENERATOR_KINDS, *(f"{k}-deep" for k in GENERATOR_KINDS if k != "lookup")]
        raise ValueError(
            f"generator must be one of {', '.join([*choices, *PREFIX_GENERATORS])}; got {generator!r}"
        )
    return kind, deep


def is_prefix(generator: str) -> bool:
    return generator in PREFIX_GENERATORS


def default_lr(generator: str) -> float:
    """AdamW learning rate a kind trains well at: prefix kinds take larger steps (P-tuning v2 uses
    5e-3 to 1e-2, the IPT paper 3e-2; our sweep on SST-2 dev chose 5e-2, docs/accuracy.md)."""
    return 5e-2 if generator.endswith("prefix") else 5e-3


@dataclass
class IPTConfig:
    generator: str = "attn-prefix"  # the best measured (docs/accuracy.md); see split_kind for all
    prompt_length: int = 16  # P: prompt vectors prepended to every input
    lookup_rank: int = 8  # lookup: rank of the factorised [vocab, H] prompt table
    mlp_hidden: int = 32  # mlp/lstm/cnn: bottleneck width between features and prompts
    feature_size: int = 48  # lstm/cnn: width the token embeddings are projected to (and of states, filters)
    dropout: float = 0.1  # on the generator bottleneck and the pooled states (training only)
    pooling: str = "mean"  # mean over the real tokens (prompts excluded), or the first token
    labels: list[str] = field(default_factory=list)  # display names, in logit order
    label_values: list[str] = field(default_factory=list)  # the same labels as written in the data
    text_pair: bool = False
    max_length: int = 128  # token budget of the text; a prepend kind's prompt comes on top
    prefix_from_layer: int = 0  # prefix kinds: the first layer with a prefix (layers below get none)
    prefix_rank: int = 16  # mlp-prefix/attn-prefix: bottleneck width of the per-input part

    def __post_init__(self) -> None:
        split_kind(self.generator)
        if self.prefix_from_layer < 0 or (self.prefix_from_layer and not is_prefix(self.generator)):
            raise ValueError(
                f"prefix_from_layer must be >= 0, and only prefix kinds ({', '.join(PREFIX_GENERATORS)}) "
                f"take one; got {self.prefix_from_layer} for {self.generator}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {self.prompt_length}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Generators. Each maps (input_ids [B,T], token_embeds [B,T,H], attention_mask [B,T]) to
# (prompt_embeds [B,P,H], layer_prompts [B,L,P,H] or None). Shallow kinds return None: the encoder
# then adds nothing per layer. Nothing here depends on other rows of the batch or on how far a
# row is padded, which is what lets the runtime batch by length.


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens. [B, T, F], [B, T] -> [B, F]"""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class DeepPrompts(nn.Module):
    """Per-layer prompts for deep kinds: a learned static prompt per layer (zero at the start, so
    training starts from the shallow model), plus the generator's per-layer instance part if any."""

    def __init__(self, num_layers: int, prompt_length: int, hidden: int):
        super().__init__()
        self.layer_base = nn.Parameter(torch.zeros(num_layers, prompt_length, hidden))

    def forward(self, batch: int, layer_deltas: torch.Tensor | None) -> torch.Tensor:  # -> [B, L, P, H]
        layers = self.layer_base.unsqueeze(0).expand(batch, -1, -1, -1)
        return layers if layer_deltas is None else layers + layer_deltas


class StaticPrompt(nn.Module):
    """Task-level prompt tuning (Lester et al., 2021): the same P vectors for every input.
    With `deep`, also one prompt per layer (P-tuning v2 style)."""

    def __init__(self, init: torch.Tensor, deep: DeepPrompts | None = None):  # init: [P, H]
        super().__init__()
        self.prompt = nn.Parameter(init.clone())
        self.deep = deep

    def forward(self, input_ids, token_embeds, attention_mask):
        batch = token_embeds.shape[0]
        prompts = self.prompt.unsqueeze(0).expand(batch, -1, -1)  # [B, P, H]
        return prompts, None if self.deep is None else self.deep(batch, None)


class LookupPrompt(nn.Module):
    """The paper's token-wise IPT: prompt i comes from a trainable table at the input's i-th token.

    The [vocab, H] table is factorised as table_a [vocab, r] @ table_b [r, H] so a task stays near
    1% of the backbone; a static base prompt carries positions where the input is shorter than P.
    """

    def __init__(self, init: torch.Tensor, vocab_size: int, rank: int):
        super().__init__()
        prompt_length, hidden = init.shape
        self.prompt_length = prompt_length
        self.base = nn.Parameter(init.clone())
        self.table_a = nn.Parameter(torch.randn(vocab_size, rank) / math.sqrt(rank))
        self.table_b = nn.Parameter(torch.zeros(rank, hidden))  # zero: training starts from static

    def forward(self, input_ids, token_embeds, attention_mask):
        p = self.prompt_length
        # Pad by P then cut to P: the first P ids, zero-padded when T < P (no data-dependent shape).
        ids = F.pad(input_ids, (0, p))[:, :p]  # [B, P]
        keep = F.pad(attention_mask, (0, p))[:, :p].unsqueeze(-1).to(token_embeds.dtype)
        per_token = F.embedding(ids, self.table_a) @ self.table_b  # [B, P, H]
        return self.base.unsqueeze(0) + keep * per_token, None


class FeaturePrompt(nn.Module):
    """Instance prompts from a feature vector of the input: base + up(code), code = tanh(down(features)).

    Subclasses say what the features are (`features`); `up` starts at zero, so every kind starts
    exactly at the static prompt `base` and learns how far each input should move it.

    Deep kinds also give every layer l an instance part up(gate[l] * code): the same `up`, read
    through a per-layer gate on the code's units, so each layer gets its own mix for a few extra
    parameters. The gate starts at one: a zero gate times the zero `up` would get no gradient, and
    the per-layer instance prompts would stay off (measured in docs/accuracy.md).
    """

    def __init__(self, init: torch.Tensor, feature_size: int, hidden_units: int, dropout: float,
                 deep: DeepPrompts | None = None):  # fmt: skip
        super().__init__()
        self.prompt_length, self.hidden = init.shape
        self.base = nn.Parameter(init.clone())
        self.down = nn.Linear(feature_size, hidden_units)
        self.up = nn.Linear(hidden_units, self.prompt_length * self.hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.dropout = nn.Dropout(dropout)
        self.deep = deep
        if deep is not None:
            num_layers = deep.layer_base.shape[0]
            self.layer_gate = nn.Parameter(torch.ones(num_layers, hidden_units))  # [L, R]

    def features(self, input_ids, token_embeds, attention_mask) -> torch.Tensor:  # [B, F]
        raise NotImplementedError

    def forward(self, input_ids, token_embeds, attention_mask):
        code = self.dropout(torch.tanh(self.down(self.features(input_ids, token_embeds, attention_mask))))
        batch = code.shape[0]  # code: [B, R]
        if self.deep is None:
            return self.base.unsqueeze(0) + self.up(code).view(batch, self.prompt_length, self.hidden), None
        # The input's code and the L gated ones go through `up` in one call, so the exported graph
        # holds `up` once (two calls stored its weight twice, in two layouts).
        code = code.unsqueeze(1)  # [B, 1, R]
        codes = torch.cat([code, code * self.layer_gate], dim=1)  # [B, 1+L, R]
        deltas = self.up(codes).view(batch, -1, self.prompt_length, self.hidden)  # [B, 1+L, P, H]
        return self.base.unsqueeze(0) + deltas[:, 0], self.deep(batch, deltas[:, 1:])


class MLPPrompt(FeaturePrompt):
    """Features: the masked mean of the input's frozen token embeddings."""

    def features(self, input_ids, token_embeds, attention_mask):
        return masked_mean(token_embeds, attention_mask)


class LSTMPrompt(FeaturePrompt):
    """Features: a bidirectional LSTM over the (projected) token embeddings, mean over real tokens.

    Batch-first, zero initial state. The backward direction reads each row's own tokens reversed
    (padding stays at the end), so a row's prompts never depend on its padding or its batch.
    """

    def __init__(self, init: torch.Tensor, feature_size: int, hidden_units: int, dropout: float,
                 deep: DeepPrompts | None = None):  # fmt: skip
        super().__init__(init, 2 * feature_size, hidden_units, dropout, deep)
        self.project = nn.Linear(init.shape[1], feature_size)
        self.forward_lstm = nn.LSTM(feature_size, feature_size, batch_first=True)
        self.backward_lstm = nn.LSTM(feature_size, feature_size, batch_first=True)

    def features(self, input_ids, token_embeds, attention_mask):
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


class CNNPrompt(FeaturePrompt):
    """Features: TextCNN (Kim, 2014) over the (projected) token embeddings, max over real tokens.

    Odd widths with 'same' padding and zeroed padding tokens: any input length works, and a row's
    features do not depend on how far it is padded.
    """

    widths = (3, 5)

    def __init__(self, init: torch.Tensor, feature_size: int, hidden_units: int, dropout: float,
                 deep: DeepPrompts | None = None):  # fmt: skip
        super().__init__(init, feature_size * len(self.widths), hidden_units, dropout, deep)
        self.project = nn.Linear(init.shape[1], feature_size)
        self.convs = nn.ModuleList(
            nn.Conv1d(feature_size, feature_size, width, padding=width // 2) for width in self.widths
        )

    def features(self, input_ids, token_embeds, attention_mask):
        mask = attention_mask.unsqueeze(1).to(token_embeds.dtype)  # [B, 1, T]
        x = self.project(token_embeds).transpose(1, 2) * mask  # [B, F, T]
        pooled = []
        for conv in self.convs:
            maps = torch.relu(conv(x))  # [B, F, T]
            pooled.append((maps - (1.0 - mask) * 1e4).amax(dim=2))  # [B, F]
        return torch.cat(pooled, dim=-1)


# ---------------------------------------------------------------------------------------------
# Prefix generators. Each maps (input_ids, token_embeds, attention_mask) to (prefix_keys,
# prefix_values), [B, L, heads, P, head_dim] each: what every layer's attention reads before the
# keys/values of the text's own tokens.
#
# Why keys and values, and not per-layer hidden vectors that the encoder graph would project with
# each frozen layer's own W_k and W_v: (1) as in P-tuning v2 and prefix tuning, a prefix position's
# key and value are free of each other (one hidden vector would tie them through the frozen
# projections and their biases); (2) the encoder graph then only concatenates tensors it is given:
# task-free, no per-task expansion in it, and in the layout ONNX Runtime's fused attention takes
# as `past`; (3) parity: PyTorch and the graph run the same Concat, nothing is recomputed.


@torch.no_grad()
def initial_prefix(hf_model, embeds: torch.Tensor, first_layer: int) -> torch.Tensor:
    """Keys and values of P vocabulary tokens at layers first_layer..L-1, as the backbone computes
    them when it reads those tokens as a text: a prefix that starts where real tokens are.
    embeds [P, H] -> [L - first_layer, 2, P, H]"""
    states = hf_model(inputs_embeds=embeds.unsqueeze(0), output_hidden_states=True).hidden_states
    layers = hf_model.encoder.layer
    rows = [
        torch.stack(
            [layers[i].attention.self.key(states[i][0]), layers[i].attention.self.value(states[i][0])]
        )
        for i in range(first_layer, len(layers))
    ]
    return torch.stack(rows)


class PrefixPrompt(nn.Module):
    """`prefix`: a static prefix per layer (P-tuning v2's deep prefix, the task-level baseline).

    base [L', 2, P, H] holds keys and values for the L' = L - k prompted layers (k =
    prefix_from_layer); the layers below get zeros, which the encoder's prefix_mask leaves out.
    Instance kinds (subclasses, rank > 0) add up(gate[l] * code), as FeaturePrompt's deep kinds
    do: code = tanh(down(features)) of the input, a per-layer gate on its units (ones at the
    start), and one `up` shared by all layers that writes keys and values at once (zeros at the
    start, so training starts exactly at the static prefix). `up` has no bias: a bias shared by
    the layers would only repeat the per-layer base.
    """

    def __init__(self, base: torch.Tensor, num_heads: int, first_layer: int, feature_size: int = 0,
                 rank: int = 0, dropout: float = 0.0):  # fmt: skip
        super().__init__()
        layers, _, self.prompt_length, self.hidden = base.shape
        self.num_heads, self.first_layer = num_heads, first_layer
        self.base = nn.Parameter(base.clone())  # [L', 2, P, H]
        self.instance = rank > 0
        if self.instance:
            self.down = nn.Linear(feature_size, rank)
            self.up = nn.Linear(rank, 2 * self.prompt_length * self.hidden, bias=False)
            nn.init.zeros_(self.up.weight)
            self.layer_gate = nn.Parameter(torch.ones(layers, rank))  # [L', R]
            self.dropout = nn.Dropout(dropout)

    def features(self, input_ids, token_embeds, attention_mask) -> torch.Tensor:  # [B, F]
        raise NotImplementedError

    def forward(self, input_ids, token_embeds, attention_mask):
        batch, (layers, _, p, h) = token_embeds.shape[0], self.base.shape
        prefix = self.base.unsqueeze(0).expand(batch, -1, -1, -1, -1)  # [B, L', 2, P, H]
        if self.instance:
            code = self.dropout(torch.tanh(self.down(self.features(input_ids, token_embeds, attention_mask))))
            codes = code.unsqueeze(1) * self.layer_gate  # [B, L', R]
            prefix = prefix + self.up(codes).view(batch, layers, 2, p, h)
        heads = self.num_heads
        split = prefix.reshape(batch, layers, 2, p, heads, h // heads).permute(2, 0, 1, 4, 3, 5)
        if self.first_layer:  # [2, B, L', heads, P, head_dim]: zeros in front for the unprompted layers
            split = F.pad(split, (0, 0, 0, 0, 0, 0, self.first_layer, 0))
        return split[0], split[1]  # keys, values: [B, L, heads, P, head_dim]


class MLPPrefix(PrefixPrompt):
    """`mlp-prefix`: features are the masked mean of the input's frozen token embeddings."""

    def features(self, input_ids, token_embeds, attention_mask):
        return masked_mean(token_embeds, attention_mask)


class AttnPrefix(PrefixPrompt):
    """`attn-prefix`: attention pooling (ID-SPAM-like, arXiv 2506.05629). M learned queries attend
    over the input's frozen token embeddings (keys: a learned projection of them; values: the
    embeddings themselves), real tokens only; the M pooled vectors, side by side, are the features
    (then down, gates and up as for every instance prefix)."""

    queries = 4

    def __init__(self, base: torch.Tensor, num_heads: int, first_layer: int, key_size: int, rank: int,
                 dropout: float):  # fmt: skip
        hidden = base.shape[-1]
        super().__init__(base, num_heads, first_layer, self.queries * hidden, rank, dropout)
        self.key = nn.Linear(hidden, key_size)
        self.query = nn.Parameter(torch.randn(self.queries, key_size) / math.sqrt(key_size))  # [M, K]
        self.scale = 1.0 / math.sqrt(key_size)

    def features(self, input_ids, token_embeds, attention_mask):
        scores = self.key(token_embeds) @ self.query.t() * self.scale  # [B, T, M]
        padding = attention_mask.unsqueeze(-1) == 0
        weights = torch.softmax(scores.masked_fill(padding, torch.finfo(scores.dtype).min), dim=1)
        pooled = weights.transpose(1, 2) @ token_embeds  # [B, M, H]
        return pooled.flatten(1)  # [B, M*H]


def build_generator(
    config: IPTConfig, word_embeddings: torch.Tensor, num_layers: int, seed: int, hf_model=None
) -> nn.Module:
    """A generator whose base prompt starts as P word embeddings drawn from the vocabulary (prefix
    kinds: as the backbone's keys and values of those tokens; they need `hf_model`)."""
    kind, deep = split_kind(config.generator)
    g = torch.Generator().manual_seed(seed)
    vocab_size, hidden = word_embeddings.shape
    rows = torch.randint(0, vocab_size, (config.prompt_length,), generator=g)
    init = word_embeddings[rows].detach().clone()  # [P, H]
    if is_prefix(kind):
        base = initial_prefix(hf_model, init, config.prefix_from_layer)
        heads, k = hf_model.config.num_attention_heads, config.prefix_from_layer
        if kind == "prefix":
            return PrefixPrompt(base, heads, k)
        if kind == "mlp-prefix":
            return MLPPrefix(base, heads, k, hidden, config.prefix_rank, config.dropout)
        return AttnPrefix(base, heads, k, config.feature_size, config.prefix_rank, config.dropout)
    layers = DeepPrompts(num_layers, config.prompt_length, hidden) if deep else None
    if kind == "static":
        return StaticPrompt(init, layers)
    if kind == "lookup":
        return LookupPrompt(init, vocab_size, config.lookup_rank)
    if kind == "mlp":
        return MLPPrompt(init, hidden, config.mlp_hidden, config.dropout, layers)
    features = {"lstm": LSTMPrompt, "cnn": CNNPrompt}[kind]
    return features(init, config.feature_size, config.mlp_hidden, config.dropout, layers)


# ---------------------------------------------------------------------------------------------
# The frozen backbone, split the way the bundle splits it.


def position_offset(hf_config) -> int:
    """RoBERTa-family position ids start after padding_idx; BERT's start at 0."""
    if hf_config.model_type in ("roberta", "xlm-roberta", "camembert"):
        return int(hf_config.pad_token_id) + 1
    return 0


class PromptedEncoder(nn.Module):
    """The shared backbone graph (encoder.onnx): prompts go in front, the graph does the rest.

    It concatenates prompts and tokens, extends the mask, builds positions (prompts take the first
    P positions, so RoBERTa's budget includes them) and token types, and runs every layer. At the
    input of layer l it adds layer_prompts[:, l] to the prompt positions: zeros for shallow tasks,
    per-layer instance prompts for deep ones (one graph serves both).

    prompt_mask [B, P] (1 = a real prompt) lets rows of tasks with fewer prompts share a batch:
    their prompts come first, the padding prompts after them are masked out of attention, and
    positions count only real prompts and tokens, so each row computes what it would alone.
    """

    def __init__(self, hf_model):
        super().__init__()
        self.embeddings = hf_model.embeddings
        self.layers = hf_model.encoder.layer
        self.offset = position_offset(hf_model.config)

    def forward(
        self, token_embeds, attention_mask, token_type_ids, prompt_embeds, layer_prompts, prompt_mask
    ):
        # token_embeds [B,T,H] float, attention_mask/token_type_ids [B,T] int64, prompt_embeds [B,P,H],
        # layer_prompts [B or 1, L, P, H], prompt_mask [B, P] int64  ->  hidden [B, P+T, H]
        p = prompt_embeds.shape[1]
        mask = torch.cat([prompt_mask, attention_mask], dim=1)  # [B, S]
        types = torch.cat([prompt_mask * 0, token_type_ids], dim=1)  # [B, S]
        inputs = torch.cat([prompt_embeds, token_embeds], dim=1)  # [B, S, H]
        # Real prompts and tokens are numbered in order; a masked padding prompt repeats its
        # neighbour's number, which nothing reads (it is masked out of every key).
        positions = (torch.cumsum(mask, dim=1) - 1).clamp(min=0) + self.offset  # [B, S]
        hidden = self.embeddings(inputs_embeds=inputs, token_type_ids=types, position_ids=positions)
        extended = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for index, layer in enumerate(self.layers):
            prompted = hidden[:, :p] + layer_prompts[:, index]
            hidden = torch.cat([prompted, hidden[:, p:]], dim=1)
            hidden = layer(hidden, attention_mask=extended)[0]
        return hidden


def prefix_attention_layer(layer, hidden, extended_mask, prefix_keys, prefix_values):
    """One frozen BERT-family layer whose attention reads [prefix; tokens] keys and values.

    hidden [B, T, H]; extended_mask [B, 1, 1, P+T] (additive); prefix_* [B, heads, P, head_dim].
    Queries, the attention output, FFN and layer norms run on the T tokens only. The same
    arithmetic as the Hugging Face eager layer (checked against it in tests/test_model.py)."""
    attention = layer.attention.self
    batch, length, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size

    def split(x):  # [B, T, H] -> [B, heads, T, head_dim]
        return x.view(batch, length, heads, size).transpose(1, 2)

    query = split(attention.query(hidden))
    key = torch.cat([prefix_keys, split(attention.key(hidden))], dim=2)  # [B, heads, P+T, head_dim]
    value = torch.cat([prefix_values, split(attention.value(hidden))], dim=2)
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(size) + extended_mask
    context = torch.matmul(torch.softmax(scores, dim=-1), value)  # [B, heads, T, head_dim]
    context = context.transpose(1, 2).reshape(batch, length, heads * size)
    attended = layer.attention.output(context, hidden)  # dense, residual, LayerNorm
    return layer.output(layer.intermediate(attended), attended)


class PrefixEncoder(nn.Module):
    """The shared backbone graph of prefix kinds (encoder_prefix.onnx): hidden [B, T, H].

    Tokens keep positions 0..T-1 (+ RoBERTa's offset). Layer l's attention reads the P prefix
    keys/values prefix_*[:, l] in front of the tokens' own; prefix_mask[:, l] (1 = attend) covers
    them, so layers below a task's first prompted layer, given a zero mask, run as the plain backbone.
    """

    def __init__(self, hf_model):
        super().__init__()
        kind = getattr(hf_model.config, "position_embedding_type", "absolute")
        if kind != "absolute" or hf_model.config.is_decoder:
            raise ValueError(f"prefix kinds need an encoder with absolute positions; this one has {kind!r}")
        self.embeddings = hf_model.embeddings
        self.layers = hf_model.encoder.layer
        self.offset = position_offset(hf_model.config)

    def forward(self, token_embeds, attention_mask, token_type_ids, prefix_keys, prefix_values, prefix_mask):
        # token_embeds [B,T,H] float, attention_mask/token_type_ids [B,T] int64, prefix_keys/values
        # [B, L, heads, P, head_dim], prefix_mask [B, L, P] int64  ->  hidden [B, T, H]
        args = (token_embeds, attention_mask, token_type_ids, prefix_keys, prefix_values, prefix_mask)
        return self.layer_outputs(*args)[-1]

    def layer_outputs(self, token_embeds, attention_mask, token_type_ids, prefix_keys, prefix_values,
                      prefix_mask) -> list[torch.Tensor]:  # fmt: skip
        """The output of every layer, [B, T, H] each."""
        positions = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1 + self.offset  # [B, T]
        hidden = self.embeddings(
            inputs_embeds=token_embeds, token_type_ids=token_type_ids, position_ids=positions
        )
        outputs = []
        for index, layer in enumerate(self.layers):
            mask = torch.cat([prefix_mask[:, index], attention_mask], dim=1)  # [B, P+T]
            extended = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            hidden = prefix_attention_layer(
                layer, hidden, extended, prefix_keys[:, index], prefix_values[:, index]
            )
            outputs.append(hidden)
        return outputs


def prefix_mask(batch: int, num_layers: int, prompt_length: int, first_layer: int, device=None):
    """[B, L, P] int64: 1 where a layer attends to its prefix (layers from first_layer on)."""
    mask = torch.ones(batch, num_layers, prompt_length, dtype=torch.int64, device=device)
    mask[:, :first_layer] = 0
    return mask


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int, how: str):
    """Pooled states of the real tokens: prompts and padding are left out. [B, S, H] -> [B, H]"""
    tokens = hidden[:, prompt_length:]
    return tokens[:, 0] if how == "cls" else masked_mean(tokens, attention_mask)


class IPTModel(nn.Module):
    """Frozen backbone + trainable generator and head. Only `generator.*` and `head.*` train."""

    def __init__(self, hf_model, config: IPTConfig, seed: int = 0):
        super().__init__()
        if not config.labels:
            raise ValueError("IPTConfig.labels is empty: a classifier needs at least two labels")
        self.config = config
        self.prefix = is_prefix(config.generator)
        self.word_embeddings = hf_model.embeddings.word_embeddings
        self.encoder = PrefixEncoder(hf_model) if self.prefix else PromptedEncoder(hf_model)
        self.num_layers = len(hf_model.encoder.layer)
        if not config.prefix_from_layer < self.num_layers:
            raise ValueError(
                f"prefix_from_layer {config.prefix_from_layer} is not a layer of this backbone "
                f"(0..{self.num_layers - 1})"
            )
        hidden = hf_model.config.hidden_size
        for parameter in hf_model.parameters():
            parameter.requires_grad_(False)
        hf_model.eval()  # frozen: no dropout, also while the prefix kinds' start is computed from it
        self.generator = build_generator(config, self.word_embeddings.weight, self.num_layers, seed, hf_model)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, len(config.labels))

    def train(self, mode: bool = True):
        # The backbone stays in eval mode (no dropout): it is frozen, and the graphs are too.
        super().train(mode)
        self.encoder.eval()
        return self

    def prompts(self, input_ids, token_embeds, attention_mask):
        prompt_embeds, layer_prompts = self.generator(input_ids, token_embeds, attention_mask)
        if layer_prompts is None:  # shallow generator: nothing added per layer
            shape = (1, self.num_layers, prompt_embeds.shape[1], prompt_embeds.shape[2])
            layer_prompts = prompt_embeds.new_zeros(shape)
        return prompt_embeds, layer_prompts

    def forward(self, input_ids, attention_mask, token_type_ids):
        token_embeds = self.word_embeddings(input_ids)  # [B, T, H]
        if self.prefix:
            keys, values = self.generator(input_ids, token_embeds, attention_mask)
            config = self.config
            mask = prefix_mask(input_ids.shape[0], self.num_layers, config.prompt_length,
                               config.prefix_from_layer, input_ids.device)  # fmt: skip
            hidden = self.encoder(
                token_embeds, attention_mask, token_type_ids, keys, values, mask
            )  # [B, T, H]
            return self.head(self.dropout(pool(hidden, attention_mask, 0, config.pooling)))
        prompt_embeds, layer_prompts = self.prompts(input_ids, token_embeds, attention_mask)
        prompt_mask = torch.ones_like(prompt_embeds[:, :, 0], dtype=attention_mask.dtype)  # [B, P]
        hidden = self.encoder(
            token_embeds, attention_mask, token_type_ids, prompt_embeds, layer_prompts, prompt_mask
        )
        pooled = pool(hidden, attention_mask, self.config.prompt_length, self.config.pooling)
        return self.head(self.dropout(pooled))  # [B, C]

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The weights a task owns: generator and head (what the checkpoint stores)."""
        state = self.state_dict()
        return {k: v for k, v in state.items() if k.startswith(("generator.", "head."))}

    def tuned_parameter_count(self) -> int:
        return sum(v.numel() for v in self.tuned_state().values())
