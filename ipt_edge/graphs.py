"""The graph contract: what every ONNX graph of a bundle takes and gives, by name, dtype and shape.

The export side names its graphs' inputs and outputs from here; the runtime checks each graph
against it when it loads. Shapes use symbolic dims:

    batch, tokens      B, T: the padded batch of texts
    hidden             H: the backbone's width          layers  L: its layers
    heads, head_dim    its attention heads, H / heads   prompts P: the task's prompt length

How prompts enter the backbone, the one thing every task shares: a task's generator computes,
from the input, P keys and values for every layer's attention (`prefix_kv.0` .. `prefix_kv.{L-1}`,
one tensor per layer); the one backbone graph, encoder.onnx, puts them in front of the text's own
keys and values in each layer (`prefix_mask` says which a row attends to). Queries, FFN and layer
norms run on the T tokens only, so the text keeps its positions and the output is hidden [B, T, H].

Why one tensor per layer, keys and values stacked: that is the layout ONNX Runtime's fused
Attention takes as `past` ([2, B, heads, P, head_dim]), the graph `export --optimize` writes, so a
generator writes each layer's prefix once, where either form of the backbone graph reads it: no
gather or transpose between the two graphs (a [B, L, ...] pair of tensors cost four more passes
over ~9 MB per batch of 32 for MiniLM). The default, unfused graph joins each layer's prefix to
the text's keys and values with a Concat inside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipt_edge.errors import BundleError


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

PREFIX_MASK = TensorSpec("prefix_mask", "int64", ("batch", "layers", "prompts"))  # 1 = attend
HIDDEN = TensorSpec("hidden", "float32", ("batch", "tokens", "hidden"))


def prefix_kv(layer: int) -> TensorSpec:
    """Layer `layer`'s prefix: its keys ([0]) and values ([1]) stacked, per head."""
    return TensorSpec(f"prefix_kv.{layer}", "float32", ("kv", "batch", "heads", "prompts", "head_dim"))


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


EMBED = GraphSpec(inputs=(INPUT_IDS,), outputs=(TOKEN_EMBEDS,))


def generator(layers: int) -> GraphSpec:
    """A task's generator.onnx. It takes any subset of these inputs (the exporter drops those a
    generator does not read)."""
    return GraphSpec(
        inputs=(INPUT_IDS, TOKEN_EMBEDS, ATTENTION_MASK), outputs=tuple(prefix_kv(i) for i in range(layers))
    )


def encoder(layers: int) -> GraphSpec:
    """The bundle's backbone graph, encoder.onnx (and its int8 twin)."""
    return GraphSpec(
        inputs=(
            TOKEN_EMBEDS,
            ATTENTION_MASK,
            TOKEN_TYPE_IDS,
            PREFIX_MASK,
            *(prefix_kv(i) for i in range(layers)),
        ),
        outputs=(HIDDEN,),
    )


ENCODER_FILE, INT8_ENCODER_FILE = "encoder.onnx", "encoder.int8.onnx"  # the same contract

# Operators that compute in 8-bit integers. An int8 graph has at least one: export's dynamic
# quantization writes DynamicQuantizeLinear and MatMulInteger (QAttention on a fused graph), which
# ONNX Runtime may fuse into DynamicQuantizeMatMul; static quantization writes QuantizeLinear.
QUANTIZED_OPS = ("DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                 "QAttention", "QuantizeLinear", "QLinearMatMul", "QGemm")  # fmt: skip


def check_quantized(model: bytes, file: str) -> None:
    """Refuse an int8 backbone graph with no int8 operator (e.g. a copy of the fp32 graph): int8
    would silently run fp32. Read from the graph's bytes, since onnx is no runtime dependency: a
    node's op_type is field 4 of its NodeProto, written as the byte 0x22, the name's length, the name.
    This catches a mistake; a graph crafted to pass could hold anything anyway."""
    if not any(bytes([0x22, len(op)]) + op.encode() in model for op in QUANTIZED_OPS):
        raise BundleError(
            f"{file}: not a quantized graph (no int8 operator: {', '.join(QUANTIZED_OPS[:3])}, ...), so "
            "int8 would run in fp32; encoder.int8_file must name the graph export --quantize int8 writes"
        )


_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


def check_session(
    session, spec: GraphSpec, file: str, subset_inputs: bool = False, dims: dict[str, int] | None = None
) -> None:
    """Compare an onnxruntime session's inputs and outputs with `spec`: names, ranks, dtypes, and
    every dimension the graph fixes that `dims` knows (e.g. {"hidden": 384, "prompts": 16}).

    subset_inputs: the graph may take only some of spec's inputs (generators). Raises BundleError
    naming the file, what was expected and what was found."""
    dims = {"kv": 2, **(dims or {})}

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
