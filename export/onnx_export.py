"""Trace a checkpoint into a bundle: the shared backbone graph once, a small generator graph per task.

    ipt-edge export checkpoints/sst2 -o bundle            # a new bundle, or a task added to one

Before anything is committed, the staged bundle is opened with the real runtime (ipt_edge) and its
logits on the checkpoint's sample inputs are compared with PyTorch's; beyond the tolerance the
export is refused and nothing is left behind.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ipt_edge import graphs
from ipt_edge.atomic import commit, share_files, temp_dir_beside
from ipt_edge.bundle import Bundle
from ipt_edge.classifier import Classifier
from ipt_edge.manifest import (
    MANIFEST,
    TASK_NAME,
    BackboneInfo,
    EncoderInfo,
    Manifest,
    TaskInfo,
    file_record,
    read_manifest,
    verified_path,
    write_manifest,
)
from ipt_edge.tables import TableError, read_labelled
from ipt_edge.tokenizer import BundleTokenizer
from ipt_edge_export.architectures import ArchitectureBackbone, architecture, word_embeddings
from ipt_edge_export.checkpoint import Backbone, model_from_checkpoint, read_checkpoint
from ipt_edge_export.model import FrozenBackbone, IPTConfig, IPTModel, position_offset

OPSET = 17


class ExportError(RuntimeError):
    """The export was refused; nothing was written."""


class EmbedGraph(nn.Module):
    def __init__(self, word_embeddings: nn.Embedding):
        super().__init__()
        self.word_embeddings = word_embeddings

    def forward(self, input_ids):  # [B, T] -> [B, T, H]
        return self.word_embeddings(input_ids)


class GeneratorGraph(nn.Module):
    def __init__(self, model: IPTModel):
        super().__init__()
        self.generator = model.generator

    def forward(
        self, input_ids, token_embeds, attention_mask
    ):  # -> prefix_kv.0..L-1 [2, B, heads, P, head_dim]
        return tuple(self.generator(input_ids, token_embeds, attention_mask))


class PlainEncoder(ArchitectureBackbone):
    """The frozen backbone at the text's own T tokens, in the form ONNX Runtime's optimizer fuses
    where it can (Hugging Face's own layers, eager attention: the adapter's `plain`). Exported only
    to become encoder.onnx: `feed_prefix_through_past` then gives each fused Attention node its
    layer's prefix. Its parts are FrozenBackbone's, under the same names."""

    def forward(self, token_embeds, attention_mask, token_type_ids):  # [B,T,E], [B,T], [B,T] -> [B,T,H]
        return self.plain(token_embeds, attention_mask, token_type_ids)


def feed_prefix_through_past(path: Path, layers: int, heads: int, head_dim: int) -> None:
    """Turn the fused plain backbone at `path` into the bundle's encoder (graphs.encoder), in place.

    Layer l's com.microsoft.Attention node gets the graph input prefix_kv.l as its `past`
    ([2, B, heads, P, head_dim], read where it lies: no copy), which it puts in front of the
    tokens' own keys and values, and the raw mask [prefix_mask[:, l], attention_mask] ([B, P+T],
    int32) over both. Queries, FFN and layer
    norms stay on the T tokens and every fusion stays: the prefix adds only the P keys/values to
    attend to (FrozenBackbone's Concat route cannot be fused, and ran at ~0.9x the plain graph).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    attention = [n for n in graph.node if n.op_type == "Attention"]  # topological, so in layer order
    if len(attention) != layers:
        raise ExportError(
            f"{path.name}: {len(attention)} fused Attention nodes, expected one per layer ({layers})"
        )
    graph.input.append(
        helper.make_tensor_value_info(
            graphs.PREFIX_MASK.name, TensorProto.INT64, ["batch", layers, "prompts"]
        )
    )
    graph.input.extend(
        helper.make_tensor_value_info(
            graphs.prefix_kv(i).name, TensorProto.FLOAT, [2, "batch", heads, "prompts", head_dim]
        )
        for i in range(layers)
    )
    made = []
    for index, node in enumerate(attention):
        name = f"prefix/layer{index}/"
        graph.initializer.append(helper.make_tensor(name + "index", TensorProto.INT64, [], [index]))
        made += [
            helper.make_node("Gather", [graphs.PREFIX_MASK.name, name + "index"], [name + "prefix_mask"], axis=1),
            helper.make_node(
                "Concat", [name + "prefix_mask", graphs.ATTENTION_MASK.name], [name + "mask64"], axis=1
            ),
            helper.make_node("Cast", [name + "mask64"], [name + "mask"], to=TensorProto.INT32),
        ]  # fmt: skip
        inputs = [*node.input, *[""] * (5 - len(node.input))]  # input, weights, bias, mask_index, past
        inputs[3], inputs[4] = name + "mask", graphs.prefix_kv(index).name
        node.ClearField("input")
        node.input.extend(inputs)
        if len(node.output) < 2:  # ORT requires the `present` output once `past` is given; unused
            node.output.append(name + "present")
    nodes = made + list(graph.node)  # the new nodes read graph inputs only, so they go first
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def dynamic_axes(specs, dynamic: set[str]) -> dict:
    """torch.onnx's dynamic_axes for the contract's tensors: the dims named in `dynamic` stay free."""
    return {t.name: {i: dim for i, dim in enumerate(t.dims) if dim in dynamic} for t in specs}


def _export(
    module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict
) -> None:
    # The legacy (TorchScript) exporter: ONNX Runtime's transformer optimizer fuses attention only
    # in its graphs, and it keeps every dynamic axis dynamic (the dynamo exporter pins length-1 axes).
    with torch.no_grad(), warnings.catch_warnings():
        # Chosen, and checked: the legacy exporter on purpose (above); its LSTM batch-size warning
        # does not apply, since the runtime's parity test runs other batch sizes than the trace's.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module="torch.nn.modules.rnn")
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip


def example_batch(model: IPTModel, tokenizer_path: Path, samples: list) -> tuple[torch.Tensor, ...]:
    texts = [tuple(s) if isinstance(s, list) else s for s in samples]
    batch = BundleTokenizer(tokenizer_path, model.config.max_length).encode(texts)
    return tuple(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids))


def optimize_encoder(path: Path, hf_config) -> dict[str, int]:
    """Fuse attention, GELU and layer norms with ONNX Runtime's transformer optimizer, in place.

    Done once here, so loading a bundle does not redo it; returns the fused operator counts.

    The fused Attention keeps the raw mask: by default the optimizer turns the mask into one
    length per row, which holds only while every row's ones come first, and a row of a task with
    a shorter prefix than its batch's longest has masked prefix slots between its prefix and its
    text (and a task from layer k on masks its whole prefix below k)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    fused = optimizer.optimize_model(
        str(path),
        model_type="bert",
        num_heads=hf_config.num_attention_heads,
        hidden_size=hf_config.hidden_size,
        optimization_options=options,
    )
    # The optimizer stamps every opset domain it knows (ai.onnx.ml 5, ...), and an older ONNX
    # Runtime refuses a model that names a domain version it does not have: keep those used.
    used = {node.domain for node in fused.model.graph.node} | {""}
    kept = [opset for opset in fused.model.opset_import if opset.domain in used]
    del fused.model.opset_import[:]
    fused.model.opset_import.extend(kept)
    fused.save_model_to_file(str(path))
    return {op: n for op, n in fused.get_fused_operator_statistics().items() if n}


def quantize_encoder(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the encoder's weights (activations quantized per batch).

    reduce_range keeps weights to 7 bits: on AVX2 CPUs without VNNI, u8 x s8 products summed in
    pairs can saturate int16 (vpmaddubsw); 7-bit weights cannot."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs "Please consider to run pre-processing before quantization" through the
    # root logger. That pre-processing (shape inference, ORT's graph optimizations) is for static
    # quantization's activation ranges; dynamic quantization of the weights of MatMul nodes needs
    # neither, and ONNX Runtime fuses the quantized graph at load (DynamicQuantizeMatMul). Silence
    # that message. On the unfused graphs (export_encoder) it also logs, once per layer, a
    # multi-line "Inference failed or unsupported type to quantize for tensor '/Slice_N_output_0'":
    # integer shape arithmetic (the pads that widen layer N's position bias over the prefix slots,
    # MPNet), which nothing quantizes anyway. Silence those two, and only them.
    root = logging.getLogger()
    skip_hint = _DropMessage(
        "Please consider to run pre-processing", "Inference failed or unsupported type to quantize"
    )
    root.addFilter(skip_hint)
    try:
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # needed on a fused graph
        )  # fmt: skip
    finally:
        root.removeFilter(skip_hint)


class _DropMessage(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def export_shared(backbone: Backbone, folder: Path) -> None:
    """embed.onnx and tokenizer.json: every bundle has them."""
    model = backbone.model
    ids = torch.randint(5, model.config.vocab_size, (2, 9))  # no axis of length 1 in the example
    spec = graphs.EMBED
    _export(EmbedGraph(word_embeddings(model)), (ids,), folder / "embed.onnx", spec.input_names,
            spec.output_names, dynamic_axes(spec.inputs + spec.outputs, {"batch", "tokens"}))  # fmt: skip
    shutil.copyfile(backbone.tokenizer_path, folder / "tokenizer.json")


def declare_inputs(path: Path, specs: tuple[graphs.TensorSpec, ...], dims: dict[str, int]) -> None:
    """Give the graph at `path` every input of `specs` it lacks, unused, in place.

    The exporter drops an input nothing reads (token_type_ids of an architecture without token
    types: DistilBERT, MPNet, ModernBERT, DeBERTa-v3), but every backbone graph takes the whole
    contract, so the runtime feeds every architecture alike. dims: sizes of the named dims."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    present = {value.name for value in model.graph.input}
    types = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    missing = [spec for spec in specs if spec.name not in present]
    if not missing:  # leave the file's bytes as they are
        return
    for spec in missing:
        shape = [dims.get(dim, dim) for dim in spec.dims]
        model.graph.input.append(helper.make_tensor_value_info(spec.name, types[spec.dtype], shape))
    order = {spec.name: i for i, spec in enumerate(specs)}  # the contract's order, then any others
    inputs = sorted(model.graph.input, key=lambda value: order.get(value.name, len(order)))
    model.graph.ClearField("input")
    model.graph.input.extend(inputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_encoder(
    backbone: Backbone, path: Path, optimize: bool = False, log: Callable[[str], None] = print
) -> dict[str, int]:
    """The bundle's one backbone graph (graphs.encoder), which every task runs through. Returns the
    operator counts fused at export (empty by default).

    By default the graph is FrozenBackbone: the backbone's own layers, each attention reading its
    layer's prefix keys and values in front of the text's (a Concat), exported unfused. ONNX
    Runtime fuses what it can when it loads the graph (layer norms, GELU, the scaled QK MatMul;
    in int8, DynamicQuantizeMatMul). With `optimize`, the plain backbone is instead fused at export
    by ONNX Runtime's transformer optimizer and each layer's fused Attention node is given its
    prefix through `past`. The default is the faster of the two on CPU: side by side (bench.py
    --paired, docs/performance.md, 2026-12-03) the default ran at 0.98-1.00x the plain fused
    backbone in fp32 and 0.99-1.03x in int8, the fused route at 0.95-0.96x and 0.95x. `optimize`
    stays for other providers (CUDA is unmeasured here). Where the optimizer fuses attention in
    fewer than every layer, `optimize` writes the default graph: with onnxruntime 1.32 it fuses every layer of bert, roberta,
    xlm-roberta, camembert, electra and distilbert, none of mpnet (its position bias sits between
    the scores and the mask), deberta-v2 (disentangled terms) or modernbert (rotary, fused Wqkv):
    export/architectures.py."""
    model = backbone.model
    config = model.config
    hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    embed_size = word_embeddings(model).embedding_dim  # E: H but for ELECTRA-small
    if embed_size != hidden:
        # The graph contract (ipt_edge/graphs.py) gives token_embeds the backbone's hidden size, and
        # the runtime checks it: a bundle of this backbone would be written and then refused at load.
        raise ExportError(
            f"this {config.model_type} embeds tokens in {embed_size} dimensions and projects them to its hidden "
            f"size {hidden} (embeddings_project, as ELECTRA-small does): bundles do not support that yet "
            "(token_embeds has the hidden size in the graph contract)"
        )
    batch, length, prompt = 2, 9, 3  # no axis of length 1 in the example
    tokens = (
        torch.randn(batch, length, embed_size),  # token_embeds [B, T, E]
        torch.ones(batch, length, dtype=torch.int64),  # attention_mask [B, T]
        torch.zeros(batch, length, dtype=torch.int64),  # token_type_ids [B, T]
    )
    spec = graphs.encoder(layers)
    known = {"heads": heads, "head_dim": hidden // heads}
    if optimize:
        plain_inputs = (graphs.TOKEN_EMBEDS, graphs.ATTENTION_MASK, graphs.TOKEN_TYPE_IDS)
        axes = dynamic_axes(plain_inputs + spec.outputs, {"batch", "tokens"})
        names = [t.name for t in plain_inputs]
        _export(PlainEncoder(model).eval(), tokens, path, names, spec.output_names, axes)
        fusions = optimize_encoder(path, config)
        if fusions.get("Attention") == layers:
            feed_prefix_through_past(path, layers, heads, hidden // heads)
            declare_inputs(path, spec.inputs, known)
            return fusions
        expected = "" if architecture(config).ort_fuses else " (as expected for this architecture)"
        log(
            f"ONNX Runtime fused attention in {fusions.get('Attention', 0)} of {layers} layers of this "
            f"{config.model_type}{expected}: the backbone graph is written unfused (the same inputs and outputs)"
        )
    mask = torch.ones(batch, layers, prompt, dtype=torch.int64)
    mask[:, 0] = 0  # some layers without a prefix, as a task with prefix_from_layer > 0 gives
    args = (*tokens, mask, *(torch.randn(2, batch, heads, prompt, hidden // heads) for _ in range(layers)))
    axes = dynamic_axes(spec.inputs + spec.outputs, {"batch", "tokens", "prompts"})
    _export(FrozenBackbone(model).eval(), args, path, spec.input_names, spec.output_names, axes)
    declare_inputs(path, spec.inputs, known)
    return {}


def export_task(model: IPTModel, tokenizer_path: Path, samples: list, folder: Path) -> None:
    """tasks/<name>/generator.onnx and head.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    ids, mask, _ = example_batch(model, tokenizer_path, samples[:2])
    token_embeds = model.word_embeddings(ids).detach()
    spec = graphs.generator(model.num_layers)
    axes = {**dynamic_axes(spec.inputs, {"batch", "tokens"}), **dynamic_axes(spec.outputs, {"batch"})}
    _export(GeneratorGraph(model).eval(), (ids, token_embeds, mask), folder / "generator.onnx",
            spec.input_names, spec.output_names, axes)  # fmt: skip
    head = {"weight": model.head.weight.detach().contiguous(), "bias": model.head.bias.detach().contiguous()}
    save_file(head, folder / "head.safetensors")


@torch.inference_mode()
def parity(model: IPTModel, classifier: Classifier, tokenizer_path: Path, samples: list) -> float:
    """Max |logit difference| between PyTorch (one padded batch) and the runtime (its own batching:
    batches of 3 and a last one of what is left, none the size the graphs were traced with, 2)."""
    expected = model(*example_batch(model, tokenizer_path, samples)).numpy()
    texts = [tuple(s) if isinstance(s, list) else s for s in samples]
    actual = classifier.logits(texts, batch_size=3)
    return float(np.abs(expected - actual).max())


@dataclass
class ExportReport:
    bundle: Path
    task: str
    parity_max_abs_diff: float


def backbone_info(backbone: Backbone) -> BackboneInfo:
    identity = backbone.identity
    return BackboneInfo(
        name=identity["name"], model_type=identity["model_type"], sha256=identity["sha256"],
        hidden_size=identity["hidden_size"], num_layers=identity["num_layers"],
        num_heads=backbone.model.config.num_attention_heads, vocab_size=identity["vocab_size"], max_positions=identity["max_positions"],
        position_offset=position_offset(backbone.model.config), parameters=identity["parameters"],
    )  # fmt: skip


def task_info(model: IPTModel, folder: str, parity_diff: float) -> TaskInfo:
    config = model.config
    return TaskInfo(
        generator=config.generator, prompt_length=config.prompt_length,
        prefix_from_layer=config.prefix_from_layer, pooling=config.pooling, labels=list(config.labels),
        label_values=list(config.label_values or config.labels), text_pair=config.text_pair,
        max_length=config.max_length, tuned_parameters=model.tuned_parameter_count(),
        parity_max_abs_diff=parity_diff, generator_file=f"{folder}/generator.onnx",
        head_file=f"{folder}/head.safetensors", int8={},
    )  # fmt: skip


def _record_task(manifest: Manifest, root: Path, name: str, info: TaskInfo) -> None:
    manifest.tasks[name] = info
    for relative in (info.generator_file, info.head_file):
        manifest.files[relative] = file_record(root / relative)


INT8_ALPHA = 0.01  # the int8 gate's one-sided significance level (int8_refused)


@dataclass
class Calibration:
    """A labelled file the int8 encoder is judged on, read like `ipt-edge score` reads files: int8
    is refused where it is significantly less accurate than fp32 there by more than `tolerance`
    points (int8_refused)."""

    path: Path
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    tolerance: float = 0.5  # accuracy points int8 may lose, even where the loss is certainly real
    alpha: float = INT8_ALPHA


def read_calibration(calibration: Calibration, config: IPTConfig) -> tuple[list, np.ndarray]:
    """The calibration file's texts and gold label indices, read and checked (columns, labels, rows)
    before anything is exported: a wrong --text-column must not cost the whole export first.
    config: the checkpoint's IPTConfig; a gold label is its name or its training value, as the
    runtime reads gold labels (ipt_edge/task.py)."""
    values = list(config.label_values or config.labels)
    index = {value: i for i, value in enumerate(values)}
    index.update({label: i for i, label in enumerate(config.labels)})
    texts, gold = [], []
    for line, text, value in read_labelled(
        calibration.path, calibration.text_column, calibration.text_pair_column, calibration.label_column
    ):
        if value not in index:
            raise TableError(
                f"{calibration.path}:{line}: label {value!r} is not one of {list(config.labels)}"
            )
        texts.append(text)
        gold.append(index[value])
    if not texts:
        raise TableError(f"{calibration.path}: no rows")
    return texts, np.array(gold)


def mcnemar_p(worse: int, better: int) -> float:
    """The exact one-sided McNemar test on the rows where fp32 and int8 disagree: int8 is wrong on
    `worse` of them and right on `better`. If neither encoder were the more accurate, each of those
    rows would go either way with probability 1/2; this is the chance of `worse` or more against
    int8, the tail of Binomial(worse + better, 1/2) (in logs: 2**-n underflows past 1,074 rows)."""
    n = worse + better
    log_terms = (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(worse, n + 1)
    )
    return min(1.0, sum(math.exp(term - n * math.log(2)) for term in log_terms))


def int8_refused(worse: int, better: int, rows: int, tolerance: float, alpha: float = INT8_ALPHA) -> bool:
    """The int8 gate: refuse a loss only when it is real (mcnemar_p < alpha: a sound quantization
    is refused in fewer than alpha of exports, whatever the file's size) and larger than `tolerance`
    accuracy points (a large file finds real losses too small to matter)."""
    loss = 100 * (worse - better) / rows
    return loss > tolerance and mcnemar_p(worse, better) < alpha


def _correct(classifier: Classifier, texts: list, gold: np.ndarray) -> np.ndarray:
    return classifier.logits(texts).argmax(axis=-1) == gold


def _measure_int8(
    root: Path, manifest: Manifest, name: str, calibration: Calibration, data: tuple[list, np.ndarray], log
) -> dict:
    """Both encoders on the calibration rows, row by row; refuses int8 as `int8_refused` says."""
    texts, gold = data
    fp32_right = _correct(Classifier(Bundle(root, manifest), name), texts, gold)
    with warnings.catch_warnings():  # "int8 accuracy was never measured": this is the measurement
        warnings.simplefilter("ignore")
        int8_right = _correct(Classifier(Bundle(root, manifest, precision="int8"), name), texts, gold)
    rows = len(texts)
    worse = int((fp32_right & ~int8_right).sum())  # the rows the test counts: where the two disagree
    better = int((int8_right & ~fp32_right).sum())
    fp32, int8, p = float(fp32_right.mean()), float(int8_right.mean()), mcnemar_p(worse, better)
    drop = 100 * (worse - better) / rows
    change = f"{-drop:+.2f} points" if drop else "the same"  # +: int8 scored higher
    evidence = (
        f"they disagree on {worse + better} rows, int8 wrong on {worse} and right on {better}: "
        f"exact one-sided McNemar p = {p:.2g}"
    )
    if int8_refused(worse, better, rows, calibration.tolerance, calibration.alpha):
        raise ExportError(
            f"the int8 encoder is significantly less accurate than fp32 on {calibration.path} ({rows} rows): "
            f"it loses {drop:.2f} points ({evidence} < {calibration.alpha:g}), more than the tolerance "
            f"{calibration.tolerance:g}; nothing was written (export without --quantize, or raise --int8-tolerance)"
        )
    real = drop > 0 and p < calibration.alpha
    verdict = "a real loss, within the tolerance" if real else "not significantly less accurate"
    log(
        f"int8 encoder on {calibration.path.name} ({rows} rows): accuracy {int8:.4f} vs fp32 {fp32:.4f} "
        f"({change}); {evidence}: {verdict} (the gate: p < {calibration.alpha:g} and a loss over "
        f"{calibration.tolerance:g} points)"
    )
    return {
        "fp32_accuracy": fp32, "int8_accuracy": int8, "rows": rows, "file": calibration.path.name,
        "int8_wrong_fp32_right": worse, "int8_right_fp32_wrong": better, "p_value": p,
    }  # fmt: skip


def export_checkpoint(
    checkpoint_dir: str | Path,
    bundle_dir: str | Path,
    task: str | None = None,
    backbone: str | None = None,
    replace_task: bool = False,
    tolerance: float = 1e-4,
    optimize: bool = False,
    int8: Calibration | None = None,
    log=print,
) -> ExportReport:
    """Export a checkpoint into a new bundle, or add it as a task to an existing one.

    optimize: fuse attention in the backbone graph at export (export_encoder says why it is off by
    default; new bundles only: a bundle's graph is made once, by its first task). int8: also build
    the dynamically quantized encoder (if the bundle lacks it) and judge it on the calibration file."""
    checkpoint = read_checkpoint(checkpoint_dir)
    name = task or Path(checkpoint_dir).resolve().name
    if not TASK_NAME.match(name):
        raise ExportError(f"task name {name!r} is not allowed: letters, digits, '_', '.', '-' (pass --task)")
    data = read_calibration(int8, checkpoint.config) if int8 else None  # before the slow part
    model, source = model_from_checkpoint(checkpoint, backbone)
    samples = checkpoint.meta["samples"]
    if len(samples) < 2:
        raise ExportError(
            f"{checkpoint_dir}: the checkpoint holds {len(samples)} sample inputs; parity needs 2+"
        )
    bundle_dir = Path(bundle_dir)
    if bundle_dir.is_dir() and any(bundle_dir.iterdir()):
        return _add_task(model, source, samples, bundle_dir, name, replace_task, tolerance, int8, data, log)

    log(f"exporting the backbone {source.identity['name']} and task {name!r} into a new bundle {bundle_dir}")
    stage = temp_dir_beside(bundle_dir)
    try:
        export_shared(source, stage)
        fusions = export_encoder(source, stage / graphs.ENCODER_FILE, optimize, log)
        if fusions:
            log(f"fused the encoder: {fusions}")
        encoder = EncoderInfo(file=graphs.ENCODER_FILE, int8_file="", fusions=fusions)
        if int8:
            quantize_encoder(stage / graphs.ENCODER_FILE, stage / graphs.INT8_ENCODER_FILE)
            encoder.int8_file = graphs.INT8_ENCODER_FILE
        manifest = Manifest(backbone=backbone_info(source), encoder=encoder)
        for relative in manifest.shared_files():
            manifest.files[relative] = file_record(stage / relative)
        export_task(model, source.tokenizer_path, samples, stage / "tasks" / name)
        _record_task(manifest, stage, name, task_info(model, f"tasks/{name}", float("nan")))
        diff = _check_parity(model, stage, manifest, name, source, samples, tolerance)
        manifest.tasks[name].parity_max_abs_diff = diff
        if int8:
            manifest.tasks[name].int8 = _measure_int8(stage, manifest, name, int8, data, log)
        write_manifest(stage, manifest)
        share_files(stage)
        if bundle_dir.is_dir():
            bundle_dir.rmdir()  # existed, but empty
        commit(stage, bundle_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportReport(bundle_dir, name, diff)


def _check_parity(
    model, root: Path, manifest: Manifest, name: str, source: Backbone, samples, tolerance
) -> float:
    classifier = Classifier(Bundle(root, manifest), name)
    diff = parity(model, classifier, source.tokenizer_path, samples)
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"parity check failed: ONNX Runtime logits differ from PyTorch by {diff:.3g} "
            f"(tolerance {tolerance:g}) on {len(samples)} sample inputs; nothing was written"
        )
    return diff


def _add_task(
    model,
    source: Backbone,
    samples,
    bundle_dir: Path,
    name: str,
    replace_task,
    tolerance,
    int8,
    data,
    log,
):
    if not (bundle_dir / MANIFEST).is_file():
        raise ExportError(f"{bundle_dir} exists, is not empty and has no {MANIFEST}: not a bundle to add to")
    manifest = read_manifest(bundle_dir)
    if manifest.backbone.sha256 != source.identity["sha256"]:
        raise ExportError(
            f"{bundle_dir} holds backbone {manifest.backbone.name!r} ({manifest.backbone.sha256[:12]}…); "
            f"this task was trained on {source.identity['name']!r} ({source.identity['sha256'][:12]}…)"
        )
    if name in manifest.tasks and not replace_task:
        raise ExportError(
            f"{bundle_dir} already has a task {name!r}; pass --replace to replace it, or --task NAME"
        )
    log(f"adding task {name!r} to {bundle_dir} (the backbone graph is reused)")
    final = bundle_dir / "tasks" / name
    stage = temp_dir_beside(final)
    old = None
    new_int8 = bundle_dir / graphs.INT8_ENCODER_FILE if int8 and not manifest.encoder.int8_file else None
    try:
        updated = replace(
            manifest,
            encoder=replace(manifest.encoder),
            tasks=dict(manifest.tasks),
            files=dict(manifest.files),
        )
        if new_int8:  # a new shared file, named by the manifest only at the end
            quantize_encoder(verified_path(bundle_dir, updated, updated.encoder.file), new_int8)
            updated.encoder.int8_file = new_int8.name
            updated.files[new_int8.name] = file_record(new_int8)
        export_task(model, source.tokenizer_path, samples, stage)
        staged = replace(updated, tasks=dict(updated.tasks), files=dict(updated.files))
        _record_task(staged, bundle_dir, name, task_info(model, f"tasks/{stage.name}", float("nan")))
        diff = _check_parity(model, bundle_dir, staged, name, source, samples, tolerance)
        quality = _measure_int8(bundle_dir, staged, name, int8, data, log) if int8 else {}
        share_files(stage)
        if final.exists():
            if name in manifest.tasks:  # --replace: keep the old files until the manifest moves on
                old = temp_dir_beside(final)
                os.replace(final, old / name)
            else:  # left by an export that stopped before its manifest was written
                shutil.rmtree(final)
        commit(stage, final)
        if name in manifest.tasks:
            for stale in (manifest.tasks[name].generator_file, manifest.tasks[name].head_file):
                updated.files.pop(stale, None)
        _record_task(updated, bundle_dir, name, task_info(model, f"tasks/{name}", diff))
        updated.tasks[name].int8 = quality
        write_manifest(bundle_dir, updated)
    except BaseException:  # the manifest was not replaced: put back what it names
        shutil.rmtree(stage, ignore_errors=True)
        if new_int8:
            new_int8.unlink(missing_ok=True)
        if old is not None:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(old / name, final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return ExportReport(bundle_dir, name, diff)
