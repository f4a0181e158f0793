"""The graph contract: what every ONNX graph of a bundle takes and gives, by name, dtype and shape.

The export side names its graphs' inputs and outputs from here; the runtime checks each graph
against it when a task is loaded. Shapes use symbolic dims:

    batch, tokens      B, T: the padded batch of texts
    hidden             H: the backbone's width          layers  L: its layers
    heads, head_dim    its attention heads, H / heads   prompts P: the task's prompt length

Two prompt kinds, one shared encoder graph each (a bundle holds the graph of a kind once any of
its tasks needs it):

    prepend  (static, lookup, mlp, lstm, cnn and their -deep kinds)   encoder.onnx
        prompts are P extra positions in front of the text; hidden [B, P+T, H]
    prefix   (prefix, mlp-prefix, attn-prefix)                        encoder_prefix.onnx
        every layer's attention also reads P prefix keys/values; queries, FFN and layer norms
        run on the T tokens only; hidden [B, T, H]
"""

from __future__ import annotations

from dataclasses import dataclass

from ipt_edge.bundle import PREFIX_GENERATORS, BundleError, Manifest

PREPEND, PREFIX = "prepend", "prefix"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: float32 | int64
    dims: tuple[str, ...]  # symbolic

    @property
    def rank(self) -> int:
        return len(self.dims)

    def describe(self) -> str:
        return f"{self.name} {self.dtype} [{', '.join(self.dims)}]"


INPUT_IDS = TensorSpec("input_ids", "int64", ("batch", "tokens"))
TOKEN_EMBEDS = TensorSpec("token_embeds", "float32", ("batch", "tokens", "hidden"))
ATTENTION_MASK = TensorSpec("attention_mask", "int64", ("batch", "tokens"))
TOKEN_TYPE_IDS = TensorSpec("token_type_ids", "int64", ("batch", "tokens"))

# Prepend kinds.
PROMPT_EMBEDS = TensorSpec("prompt_embeds", "float32", ("batch", "prompts", "hidden"))
# From deep generators; the encoder also takes [1, L, P, H] zeros for shallow ones.
LAYER_PROMPTS = TensorSpec("layer_prompts", "float32", ("prompt_batch", "layers", "prompts", "hidden"))
# 1 = a real prompt; lets tasks with fewer prompts share a batch (encoders exported before it lack it).
PROMPT_MASK = TensorSpec("prompt_mask", "int64", ("batch", "prompts"))
PREPEND_HIDDEN = TensorSpec("hidden", "float32", ("batch", "sequence", "hidden"))  # sequence = P+T

# Prefix kinds: keys and values in the per-head layout attention uses.
PREFIX_KEYS = TensorSpec("prefix_keys", "float32", ("batch", "layers", "heads", "prompts", "head_dim"))
PREFIX_VALUES = TensorSpec("prefix_values", "float32", ("batch", "layers", "heads", "prompts", "head_dim"))
PREFIX_MASK = TensorSpec("prefix_mask", "int64", ("batch", "layers", "prompts"))  # 1 = attend
PREFIX_HIDDEN = TensorSpec("hidden", "float32", ("batch", "tokens", "hidden"))


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    optional: frozenset[str] = frozenset()  # inputs graphs of older bundles may lack

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


EMBED = GraphSpec(inputs=(INPUT_IDS,), outputs=(TOKEN_EMBEDS,))
# A generator takes any subset of these (the exporter drops inputs a generator does not read).
GENERATOR_INPUTS = (INPUT_IDS, TOKEN_EMBEDS, ATTENTION_MASK)
ENCODERS = {
    PREPEND: GraphSpec(
        inputs=(TOKEN_EMBEDS, ATTENTION_MASK, TOKEN_TYPE_IDS, PROMPT_EMBEDS, LAYER_PROMPTS, PROMPT_MASK),
        outputs=(PREPEND_HIDDEN,),
        optional=frozenset({PROMPT_MASK.name}),
    ),
    PREFIX: GraphSpec(
        inputs=(TOKEN_EMBEDS, ATTENTION_MASK, TOKEN_TYPE_IDS, PREFIX_KEYS, PREFIX_VALUES, PREFIX_MASK),
        outputs=(PREFIX_HIDDEN,),
    ),
}
ENCODER_FILES = {PREPEND: "encoder.onnx", PREFIX: "encoder_prefix.onnx"}
INT8_ENCODER_FILES = {PREPEND: "encoder.int8.onnx", PREFIX: "encoder_prefix.int8.onnx"}  # same contract


def prompt_kind(generator: str) -> str:
    """'mlp-prefix' -> 'prefix'; every older kind ('mlp-deep', 'static', ...) -> 'prepend'."""
    return PREFIX if generator in PREFIX_GENERATORS else PREPEND


def generator_spec(generator: str, deep: bool) -> GraphSpec:
    """The generator graph of a task: its possible inputs and its exact outputs."""
    if prompt_kind(generator) == PREFIX:
        outputs: tuple[TensorSpec, ...] = (PREFIX_KEYS, PREFIX_VALUES)
    else:
        outputs = (PROMPT_EMBEDS, LAYER_PROMPTS) if deep else (PROMPT_EMBEDS,)
    return GraphSpec(inputs=GENERATOR_INPUTS, outputs=outputs)


_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


def encoder_file(manifest: Manifest, kind: str, precision: str = "fp32") -> str:
    """The manifest's entry for the shared encoder graph of a prompt kind ("" if it has none)."""
    if precision == "int8":
        return manifest.encoder_prefix_int8_file if kind == PREFIX else manifest.encoder_int8_file
    return manifest.encoder_prefix_file if kind == PREFIX else manifest.encoder_file


def set_encoder_file(manifest: Manifest, kind: str, precision: str, file: str) -> None:
    if precision == "int8":
        setattr(manifest, "encoder_prefix_int8_file" if kind == PREFIX else "encoder_int8_file", file)
    else:
        setattr(manifest, "encoder_prefix_file" if kind == PREFIX else "encoder_file", file)


def check_session(
    session, spec: GraphSpec, file: str, subset_inputs: bool = False, dims: dict[str, int] | None = None
) -> None:
    """Compare an onnxruntime session's inputs and outputs with `spec`: names, ranks, dtypes, and
    every dimension the graph fixes that `dims` knows (e.g. {"hidden": 384, "prompts": 16}).

    subset_inputs: the graph may take only some of spec's inputs (generators); spec.optional
    inputs may be absent. Raises BundleError naming the file, what was expected and what was found."""
    dims = dims or {}

    def found(args) -> dict[str, tuple[int, str]]:
        return {a.name: (len(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args}

    def show(entries: dict[str, tuple[int, str]]) -> str:
        return ", ".join(f"{n} {t} rank {r}" for n, (r, t) in entries.items()) or "none"

    for what, specs, args in (
        ("inputs", spec.inputs, session.get_inputs()),
        ("outputs", spec.outputs, session.get_outputs()),
    ):
        actual = found(args)
        expected = {t.name: (t.rank, t.dtype) for t in specs}
        if what == "inputs" and subset_inputs:
            names_ok = set(actual) <= set(expected)
        elif what == "inputs":
            names_ok = set(expected) - spec.optional <= set(actual) <= set(expected)
        else:
            names_ok = set(actual) == set(expected)
        if not names_ok or any(actual[n] != expected[n] for n in actual if n in expected):
            wanted = ", ".join(t.describe() for t in specs)
            some = "a subset of " if what == "inputs" and subset_inputs else ""
            raise BundleError(f"{file}: {what} should be {some}{wanted}; found {show(actual)}")
        by_name = {t.name: t for t in specs}
        for arg in args:
            for symbol, size in zip(by_name[arg.name].dims, arg.shape, strict=True):
                if isinstance(size, int) and symbol in dims and size != dims[symbol]:
                    raise BundleError(
                        f"{file}: {arg.name} has {symbol} = {size}, but the manifest says {dims[symbol]} "
                        f"(expected {by_name[arg.name].describe()})"
                    )
