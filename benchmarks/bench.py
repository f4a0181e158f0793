"""Side-by-side speed of trained tasks and their peers, in one run on one machine (docs/performance.md).

    python benchmarks/bench.py models/sst2-sentiment --data work/sst2/test.tsv \\
        --text-column sentence --rows 2000 --threads 2 --rounds 3

Contestants: each CHECKPOINT is exported here (a bundle as `ipt-edge export` writes it by default,
with an int8 encoder, and one exported with --optimize; cached in --work); each `--bundle PATH`
(repeatable) is an exported bundle run as it is, of any generator family (it is loaded through
ipt_edge.Classifier.load). With several contestants their configs are named `ipt@NAME` etc.
(NAME: the checkpoint's or bundle's folder name), and a second table puts the contestants side by side: backbone, accuracy, rows/s fp32 and int8, bundle MB,
cold start and peak RSS. Contestants may have different backbones (choosing a backbone:

    python benchmarks/bench.py --bundle bundle-minilm --bundle bundle-mpnet --data work/sst2/test.tsv \\
        --text-column sentence --rows 2000 --threads 2 --rounds 3

); the peers below are one backbone's, so they are then left out unless --configs names them.

Every configuration runs in a fresh process (so cold start and peak RSS are its own), on the same
rows, tokenizer, batch size and thread count:

  torch-arrival     PyTorch eager (transformers + the IPT model, same weights), batches in file order
  torch-sorted      the same with our length-sorted batching          (both: the first CHECKPOINT)
  backbone-T-fused  the encoder alone in ONNX Runtime (legacy export of the HF model, no prompts,
                    after ONNX Runtime's transformer fusions) at the text's own T tokens: the plain
                    backbone a user would run without prompts; length-sorted
  backbone-T-int8   the same, quantized dynamically as `export --quantize int8` quantizes encoders
  optimum-fp32      what a user would pick instead: the backbone with an AutoModelForSequenceClassification
                    head (freshly initialised: weights do not change speed; no accuracy reported),
                    exported with optimum's exporter and run by ORTModelForSequenceClassification;
                    length-sorted batches
  optimum-arrival   the same, batches in file order
  optimum-int8      optimum-fp32 quantized by optimum's ORTQuantizer (dynamic AVX2 config, per channel)
  ipt               ipt-edge: the bundle as `ipt-edge export` writes it by default (a --bundle: as
                    given), fp32, length-sorted
  ipt-arrival       the same, batches in file order
  ipt-int8          the same with its dynamic int8 encoder (where the bundle has one)
  ipt-optimized     exported with --optimize: attention fused at export, each layer's prefix through
                    the fused Attention's `past` (checkpoint contestants only)

It prints each ipt-edge config's ratio to its peers (backbone-T and optimum, same precision) and
the issue's targets, and measures the machine's fp32 GEMM peak through ONNX Runtime. Every row gets
the encoder matmul FLOPs it had to do (counted at the real padded token counts of its batches, plus
the P prefix keys and values each attention reads for ipt-edge) per second of the whole run, as a
share of that peak (int8 rows: of the fp32 peak, for comparison only).
The optimum configs need the `bench` extra (pip install -e ".[export,bench]").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TORCH = ["torch-arrival", "torch-sorted"]
BACKBONE = ["backbone-T-fused", "backbone-T-int8"]
OPTIMUM = ["optimum-arrival", "optimum-fp32", "optimum-int8"]
IPT = ["ipt-optimized", "ipt-arrival", "ipt", "ipt-int8"]
# Each ipt-edge config's peers at the same precision (and batch order, for optimum); the issue's
# targets (#16): the shipped task at >= 0.95x the plain backbone at T tokens, fp32 and int8.
BACKBONE_PEER = {"ipt-optimized": "backbone-T-fused", "ipt-arrival": "backbone-T-fused",
                 "ipt": "backbone-T-fused", "ipt-int8": "backbone-T-int8"}  # fmt: skip
OPTIMUM_PEER = {"ipt-optimized": "optimum-fp32", "ipt-arrival": "optimum-arrival",
                "ipt": "optimum-fp32", "ipt-int8": "optimum-int8"}  # fmt: skip
TARGETS = {"ipt": 0.95, "ipt-int8": 0.95}
# The order configs run in within a round: each ipt-edge config next to its peers (bench.py main).
RUN_ORDER = ["torch-arrival", "torch-sorted", "optimum-arrival", "ipt-arrival", "ipt-optimized",
             "backbone-T-fused", "ipt", "optimum-fp32", "backbone-T-int8", "ipt-int8", "optimum-int8"]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Contestants, data and graphs


@dataclass
class Contestant:
    name: str
    bundle: Path  # as exported by default, with the int8 encoder where there is one
    optimized: Path | None  # exported with --optimize (built from a checkpoint only)
    checkpoint: Path | None
    task: str | None  # the task in the bundle (None: its only task)


def contestants(args: argparse.Namespace) -> list[Contestant]:
    found: list[Contestant] = []
    names: set[str] = set()

    def unique(path: Path) -> str:
        base = name = path.resolve().name
        number = 1
        while name in names:
            number += 1
            name = f"{base}-{number}"
        names.add(name)
        return name

    for checkpoint in args.checkpoint:
        name = unique(checkpoint)
        # Exports are cached per checkpoint content: a retrained checkpoint in the same folder gets a
        # fresh export, never the previous one's bundle.
        folder = args.work / name / checkpoint_digest(checkpoint)
        found.append(Contestant(name, folder / "bundle", folder / "bundle-optimized", checkpoint, "task"))
    for bundle in args.bundle:
        found.append(Contestant(unique(bundle), bundle, None, None, args.task))
    return found


def checkpoint_digest(checkpoint: Path) -> str:
    """The first 12 hex digits of the sha256 of a checkpoint's config and weights."""
    digest = hashlib.sha256()
    for file in ("config.json", "weights.safetensors"):
        if not (checkpoint / file).is_file():
            raise SystemExit(
                f"{checkpoint}: not a checkpoint folder (no {file}); pass a bundle with --bundle"
            )
        digest.update((checkpoint / file).read_bytes())
    return digest.hexdigest()[:12]


def config_name(kind: str, contestant: Contestant, many: bool) -> str:
    return f"{kind}@{contestant.name}" if many else kind


def split_config(config: str) -> tuple[str, str | None]:
    kind, _, name = config.partition("@")
    return kind, name or None


def in_file_order(config: str) -> bool:
    """The *-arrival configs batch rows in file order; every other config sorts them by length."""
    return split_config(config)[0].endswith("arrival")


def read_rows(path: Path, text_column: str, label_column: str, rows: int) -> tuple[list[str], list[str]]:
    from ipt_edge.tables import TableReader

    texts, labels = [], []
    with TableReader(path) as reader:
        for _, row in reader:
            if row[text_column].strip():
                texts.append(row[text_column])
                labels.append(row[label_column].strip())
            if len(texts) == rows:
                break
    return texts, labels


def graphs_dir(args: argparse.Namespace, first: Contestant) -> Path:
    """The peers' graphs, one folder per backbone (by the sha256 of its weights)."""
    from ipt_edge.manifest import read_manifest

    return args.work / f"peers-{read_manifest(first.bundle).backbone.sha256[:12]}"


def optimum_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("optimum.onnxruntime") is not None  # from optimum-onnx
    except ModuleNotFoundError:  # no optimum at all
        return False


def backbones_of(people: list[Contestant]) -> dict[str, str]:
    """Each contestant's backbone sha256 (its bundle's manifest; a checkpoint's before its export)."""
    from ipt_edge.manifest import read_manifest

    def sha256(person: Contestant) -> str:
        if person.bundle.exists():  # bundles alone need no torch (the runtime tests run this without it)
            return read_manifest(person.bundle).backbone.sha256
        from ipt_edge_export.checkpoint import read_checkpoint

        return read_checkpoint(person.checkpoint).meta["backbone"]["sha256"]

    return {person.name: sha256(person) for person in people}


def prepare(
    args: argparse.Namespace, people: list[Contestant], wanted: set[str], shas: dict[str, str]
) -> None:
    """Bundles of checkpoint contestants; the backbone-alone and optimum graphs (for the one backbone
    of `shas`, backbones_of(people)); cached in --work."""
    from ipt_edge.manifest import read_manifest
    from ipt_edge_export.onnx_export import Calibration, export_checkpoint

    calibration = Calibration(args.data, args.text_column, None, args.label_column, tolerance=100.0)
    quiet = lambda message: None  # noqa: E731
    for person in people:
        if person.checkpoint is None:
            continue
        person.bundle.parent.mkdir(parents=True, exist_ok=True)
        if not person.bundle.exists():
            log(f"exporting {person.checkpoint} to {person.bundle} (the export default + int8)")
            export_checkpoint(person.checkpoint, person.bundle, task="task", int8=calibration, log=quiet)
        if not person.optimized.exists() and "ipt-optimized" in wanted:
            log(f"exporting {person.checkpoint} to {person.optimized} (--optimize)")
            export_checkpoint(person.checkpoint, person.optimized, task="task", optimize=True, log=quiet)
    if not wanted & {*BACKBONE, *OPTIMUM}:
        return
    if len(set(shas.values())) > 1:
        raise SystemExit(
            f"the contestants have different backbones (sha256 {shas}); the backbone and optimum peers "
            "need one: leave them out of --configs (e.g. --configs ipt@NAME,ipt-int8@NAME,...)"
        )
    graphs = graphs_dir(args, people[0])
    graphs.mkdir(parents=True, exist_ok=True)
    backbone = None

    def load() -> object:
        nonlocal backbone
        if backbone is None:
            backbone = peer_backbone(args, people[0], shas[people[0].name])
        return backbone

    if not (graphs / "backbone-fused.int8.onnx").exists() and wanted & set(BACKBONE):
        log(f"exporting the backbone alone to {graphs}")
        export_backbone_alone(load(), graphs)
    if not (graphs / "optimum-int8").exists() and wanted & set(OPTIMUM):
        log(f"exporting the optimum peer to {graphs}")
        labels = len(read_manifest(people[0].bundle).task(people[0].task)[1].labels)
        export_optimum(load(), graphs, labels)


def peer_backbone(args: argparse.Namespace, first: Contestant, sha256: str):
    """The Hugging Face backbone the contestants were exported from (checked by sha256)."""
    from ipt_edge_export.checkpoint import load_backbone, read_checkpoint

    checkpoints = args.checkpoint
    source = read_checkpoint(checkpoints[0]).meta["backbone"]["source"] if checkpoints else args.backbone
    backbone = load_backbone(source)
    if backbone.identity["sha256"] != sha256:
        raise SystemExit(
            f"backbone {source!r} (sha256 {backbone.identity['sha256'][:12]}) is not the one {first.bundle} "
            f"was exported from (sha256 {sha256[:12]}); pass it with --backbone"
        )
    return backbone


def export_backbone_alone(backbone, graphs: Path) -> None:
    """backbone-plain.onnx (legacy export of the HF encoder), backbone-fused.onnx (ONNX Runtime's
    transformer fusions) and backbone-fused.int8.onnx (quantized as `export --quantize int8` does)."""
    import shutil

    import torch

    from ipt_edge_export.onnx_export import optimize_encoder, quantize_encoder

    plain, fused = graphs / "backbone-plain.onnx", graphs / "backbone-fused.onnx"
    ids = torch.randint(5, min(1000, backbone.model.config.vocab_size), (2, 9))  # any real token ids
    with torch.no_grad():
        torch.onnx.export(
            backbone.model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(plain),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in ["input_ids", "attention_mask", "token_type_ids"]},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    shutil.copyfile(plain, fused)
    optimize_encoder(fused, backbone.model.config)
    quantize_encoder(fused, graphs / "backbone-fused.int8.onnx.tmp")
    os.replace(graphs / "backbone-fused.int8.onnx.tmp", graphs / "backbone-fused.int8.onnx")


def export_optimum(backbone, graphs: Path, labels: int) -> None:
    """optimum-fp32/ and optimum-int8/: what a user of optimum would ship for this backbone.

    The classification head is freshly initialised (seeded): a fine-tuned model's weights would not
    change its speed, so this peer is for speed only. The exporter is optimum's (main_export, task
    text-classification, its defaults); int8 is optimum's ORTQuantizer with its dynamic AVX2 config."""
    import logging
    import shutil
    import warnings

    import torch
    import transformers
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    stage = graphs / "optimum.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    torch.manual_seed(0)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "Some weights ... newly initialized": the head, on purpose
    try:
        model = AutoModelForSequenceClassification.from_pretrained(backbone.path, num_labels=labels)
        model.save_pretrained(stage / "source")  # a local classifier folder, as fine-tuning leaves one
        AutoTokenizer.from_pretrained(backbone.path).save_pretrained(stage / "source")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the legacy exporter's, on masks
            # "Weight deduplication check ... requires accelerate": a BERT classifier ties no weights.
            logging.getLogger("optimum").setLevel(logging.ERROR)
            main_export(str(stage / "source"), output=stage / "optimum-fp32", task="text-classification",
                        library_name="transformers")  # fmt: skip
    finally:
        transformers.logging.set_verbosity(verbosity)
    quantizer = ORTQuantizer.from_pretrained(stage / "optimum-fp32")
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=True)
    quantizer.quantize(save_dir=stage / "optimum-int8", quantization_config=config)
    for name in ("optimum-fp32", "optimum-int8"):
        shutil.rmtree(graphs / name, ignore_errors=True)
        os.replace(stage / name, graphs / name)
    shutil.rmtree(stage)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# One configuration, in its own process


def encoder_flops(hidden: int, layers: int, batch: int, length: int, prefix: int = 0) -> float:
    """Matmul FLOPs of a BERT encoder (FFN 4H) on a [batch, length] padded batch, each query also
    attending to `prefix` prefix keys/values: what the machine computes."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * 4 * hidden) + 2 * 2 * (length + prefix) * hidden
    return float(layers * batch * length * per_token)


def batch_flops(
    hidden: int, layers: int, lengths: list[int], order: list[int], size: int, prefix: int = 0
) -> float:
    """encoder_flops over the batches of `size` rows taken in `order` (each padded to its longest)."""
    return sum(encoder_flops(hidden, layers, len(rows), max(lengths[i] for i in rows), prefix)
               for rows in batches(order, size))  # fmt: skip


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@dataclass
class Runner:
    """One config, loaded and warmed up: `run` takes one batch of texts and returns its outputs."""

    run: Callable[[list[str]], np.ndarray]  # logits [B, labels], or hidden states for the backbone alone
    lengths: list[int]  # each text's tokens, as this config tokenizes it
    hidden: int
    layers: int
    prefix: int = 0  # prefix keys/values each attention reads (ipt-edge, torch)
    label_values: list[str] | None = None  # what the logits' columns mean (none: no accuracy)
    ready: float = 0.0  # time.time() once loaded and run on one text: cold start ends here


def load_runner(kind: str, args: argparse.Namespace, people: list[Contestant], person: Contestant,
                texts: list[str]) -> Runner:  # fmt: skip
    """The config `kind` of `person`, loaded with args.threads threads and run once on one text;
    each text's token count is taken after that, so it is not part of the cold start."""
    threads = args.threads
    if kind.startswith("torch"):
        import torch

        from ipt_edge.tokenizer import BundleTokenizer
        from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        checkpoint = next(p.checkpoint for p in people if p.checkpoint is not None)
        model, backbone = model_from_checkpoint(read_checkpoint(checkpoint))
        encoder = BundleTokenizer(backbone.tokenizer_path, model.config.max_length)

        def run(rows: list[str]) -> np.ndarray:
            batch = encoder.encode(rows)
            with torch.inference_mode():
                return model(*(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask,
                                                           batch.token_type_ids))).numpy()  # fmt: skip

        hf = backbone.model.config
        hidden, layers, prefix = hf.hidden_size, hf.num_hidden_layers, model.config.prompt_length
        labels: list[str] | None = list(model.config.label_values or model.config.labels)
    elif kind.startswith(("backbone", "optimum")):
        import onnxruntime as ort

        from ipt_edge.manifest import read_manifest
        from ipt_edge.tokenizer import BundleTokenizer

        # The same tokenizer and text budget as the first contestant, so every config sees the same tokens.
        manifest = read_manifest(person.bundle)
        task = manifest.task(person.task)[1]
        encoder = BundleTokenizer(person.bundle / manifest.tokenizer_file, task.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        graphs = graphs_dir(args, person)
        if kind.startswith("backbone"):
            file = "backbone-fused.int8.onnx" if kind == "backbone-T-int8" else "backbone-fused.onnx"
            session = ort.InferenceSession(str(graphs / file), options, providers=["CPUExecutionProvider"])

            def run(rows: list[str]) -> np.ndarray:
                batch = encoder.encode(rows)
                feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                         "token_type_ids": batch.token_type_ids}  # fmt: skip
                return session.run(None, feeds)[0]

        else:
            from optimum.onnxruntime import ORTModelForSequenceClassification

            int8 = kind == "optimum-int8"
            model = ORTModelForSequenceClassification.from_pretrained(
                graphs / ("optimum-int8" if int8 else "optimum-fp32"),
                file_name="model_quantized.onnx" if int8 else "model.onnx",
                session_options=options, provider="CPUExecutionProvider",
            )  # fmt: skip

            def run(rows: list[str]) -> np.ndarray:
                batch = encoder.encode(rows)  # numpy in, numpy out
                return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             token_type_ids=batch.token_type_ids).logits  # fmt: skip

        bb = manifest.backbone
        hidden, layers, prefix, labels = bb.hidden_size, bb.num_layers, 0, None  # optimum: no trained head
    else:
        from ipt_edge.classifier import Classifier

        bundle = person.optimized if kind == "ipt-optimized" else person.bundle
        precision = "int8" if kind == "ipt-int8" else "fp32"
        classifier = Classifier.load(bundle, task=person.task, threads=threads, precision=precision)
        info, bb = classifier.task.info, classifier.bundle.manifest.backbone

        def run(rows: list[str]) -> np.ndarray:  # one call per batch: the caller has sorted the rows
            return classifier.logits(rows, args.batch_size)

        encoder = classifier.bundle.text_encoder(info.max_length)  # the classifier's, for token counts
        hidden, layers, prefix = bb.hidden_size, bb.num_layers, info.prompt_length
        labels = list(info.label_values)
    run(texts[:1])
    ready = time.time()
    lengths = [len(e.ids) for e in encoder.tokenize(texts)]  # the tokens each config's run reads
    return Runner(run, lengths, hidden, layers, prefix, labels, ready)


def batch_order(lengths: list[int], file_order: bool = False) -> list[int]:
    """The order rows are batched in: by length, or as in the file (in_file_order)."""
    order = list(range(len(lengths)))
    if not file_order:
        order.sort(key=lambda i: lengths[i])
    return order


def contestant_of(config: str, people: list[Contestant]) -> Contestant:
    """The contestant a config runs (`kind@NAME`; without a name, the first)."""
    name = split_config(config)[1]
    return next((p for p in people if p.name == name), people[0])


def worker(config: str, args: argparse.Namespace, people: list[Contestant], started: float) -> dict:
    texts, labels = read_rows(args.data, args.text_column, args.label_column, args.rows)
    kind = split_config(config)[0]
    runner = load_runner(kind, args, people, contestant_of(config, people), texts)
    result: dict = {"config": config, "cold_start_s": runner.ready - started}
    order = batch_order(runner.lengths, in_file_order(config))
    # Logits for the accuracy; the backbone alone's hidden states are dropped.
    logits = (
        None if runner.label_values is None else np.zeros((len(texts), len(runner.label_values)), np.float32)
    )
    begin = time.perf_counter()
    for rows in batches(order, args.batch_size):
        out = runner.run([texts[i] for i in rows])
        if logits is not None:
            logits[rows] = out
    seconds = time.perf_counter() - begin
    result["rows_per_s"] = len(texts) / seconds
    flops = batch_flops(runner.hidden, runner.layers, runner.lengths, order, args.batch_size, runner.prefix)
    result["gflops_per_s"] = flops / seconds / 1e9
    latencies = []
    for text in texts[: args.latency_rows]:
        t = time.perf_counter()
        runner.run([text])
        latencies.append(time.perf_counter() - t)
    result["p50_ms"] = 1000 * float(np.percentile(latencies, 50))
    result["p95_ms"] = 1000 * float(np.percentile(latencies, 95))
    if logits is not None:  # none for optimum: its head is freshly initialised
        np.save(args.work / f"logits-{config}.npy", logits)
        predicted = [runner.label_values[i] for i in logits.argmax(-1)]
        result["accuracy"] = float(np.mean([p == g for p, g in zip(predicted, labels, strict=True)]))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def paired(
    args: argparse.Namespace, people: list[Contestant], configs: list[str]
) -> tuple[dict[str, list[dict]], dict[str, float]]:  # fmt: skip
    """Every config loaded in this one process and timed by paired_blocks (--paired), on the first
    ipt-edge config's length-sorted batches. A second session of the first peer runs alongside as a
    control: its ratio to the first shows how far two identical contestants land apart."""
    texts, _ = read_rows(args.data, args.text_column, args.label_column, args.rows)
    runners: dict[str, Runner] = {}
    for config in configs:
        log(f"loading {config}")
        runners[config] = load_runner(
            split_config(config)[0], args, people, contestant_of(config, people), texts
        )
    peers = [
        BACKBONE_PEER[split_config(c)[0]] for c in configs if BACKBONE_PEER.get(split_config(c)[0]) in runners
    ]
    if peers:
        runners[f"{peers[0]} (control)"] = load_runner(peers[0], args, people, people[0], texts)
    first_ipt = next(c for c in configs if split_config(c)[0] in IPT)
    order = batch_order(runners[first_ipt].lengths)  # one batching for all: the same rows per batch
    return paired_blocks(runners, texts, order, args.batch_size, args.block, args.rounds)


def paired_blocks(
    runners: dict[str, Runner], texts: list[str], order: list[int], batch_size: int, block_size: int,
    rounds: int,
) -> tuple[dict[str, list[dict]], dict[str, float]]:  # fmt: skip
    """Every runner timed side by side on the same batches (`texts` in `order`, `batch_size` rows
    each): bench.py --paired and benchmarks/prompt_tax.py.

    The batches are cut into blocks of `block_size` batches. Each block runs through every runner
    back to back, in a fresh random order per block, so a change in the machine's speed (a shared
    VM drifts by tens of percent over minutes) reaches every runner alike. Before its timed block a
    runner runs the block's first batch once, untimed: its weights are then in cache, as they are
    for a user who runs one model (timed cold, batch by batch, every config lost about a third, and
    the one with more graphs more).

    Returns per-round rows/s and GFLOP/s (a round's time: the sum over its blocks), and each
    runner's robust rows/s: over its robust time, the sum over blocks of the block's median time
    over the rounds, which a stall of the VM in one round of one block does not move. The verdicts
    use the ratio of two runners' robust rows/s ("blocks' medians")."""
    groups = batches(order, batch_size)
    starts = range(0, len(groups), block_size)
    times = {config: np.zeros((rounds, len(starts))) for config in runners}  # [round, block] seconds
    rng = np.random.default_rng(0)
    names = list(runners)
    for round_number in range(rounds):
        for number, start in enumerate(starts):
            block = [[texts[i] for i in rows] for rows in groups[start : start + block_size]]
            for index in rng.permutation(len(names)):
                config = names[index]
                runners[config].run(block[0])  # warm-up, untimed
                begin = time.perf_counter()
                for batch in block:
                    runners[config].run(batch)
                times[config][round_number, number] = time.perf_counter() - begin
        log(
            f"round {round_number + 1}: "
            + ", ".join(f"{c} {len(texts) / t[round_number].sum():.1f} rows/s" for c, t in times.items())
        )
    runs: dict[str, list[dict]] = {}
    for config, runner in runners.items():
        flops = batch_flops(runner.hidden, runner.layers, runner.lengths, order, batch_size, runner.prefix)
        runs[config] = [{"config": config, "rows_per_s": len(texts) / s, "gflops_per_s": flops / s / 1e9}
                        for s in times[config].sum(axis=1)]  # fmt: skip
    robust = {config: len(texts) / float(np.median(t, axis=0).sum()) for config, t in times.items()}
    return runs, robust


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not ru_maxrss: Linux carries that over fork and exec,
    so a worker would report its parent's peak; VmHWM starts afresh with the exec'd program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_peak(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of one large MatMul through ONNX Runtime (the same MLAS kernels the encoder uses)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.rand(size, size).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], [weight],
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.rand(size, size).astype(np.float32)
    session.run(None, {"x": x})
    begin = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {"x": x})
    return repeats * 2 * size**3 / (time.perf_counter() - begin) / 1e9


# ---------------------------------------------------------------------------------------------
# Tables


def table(results: dict[str, dict], peak: float) -> str:
    def base(name: str) -> float | None:
        return results[name]["rows_per_s"] if name in results else None

    bases = [("torch arrival", base("torch-arrival")), ("torch sorted", base("torch-sorted")),
             ("plain backbone at T (fused)", base("backbone-T-fused"))]  # fmt: skip
    bases = [(label, value) for label, value in bases if value]
    header = "| config | rows/s |" + "".join(f" × {label} |" for label, _ in bases)  # no peers: no ratio
    lines = [
        header + " p50 ms | p95 ms | cold start s | peak RSS MB | accuracy | GFLOP/s (share of peak) |",
        "|---|---|" + "---|" * len(bases) + "---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        flops = f"{r['gflops_per_s']:.1f} ({r['gflops_per_s'] / peak:.0%})"  # every config measures it
        accuracy = f"{r['accuracy']:.4f}" if "accuracy" in r else ""
        ratios = "".join(f" {r['rows_per_s'] / value:.2f} |" for _, value in bases)
        lines.append(
            f"| {name} | {r['rows_per_s']:.1f} |{ratios} {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} | {accuracy} | {flops} |"
        )
    return "\n".join(lines)


def bundle_mb(bundle: Path) -> dict[str, float]:
    """MB (1e6 bytes) of a bundle's files as its manifest records them: all of them ("all", plus
    manifest.json), and those each precision runs ("fp32", "int8": tokenizer, embed, the encoder of
    that precision, the tasks' files)."""
    from ipt_edge.manifest import MANIFEST, read_manifest

    manifest = read_manifest(bundle)
    sizes = {path: record.size for path, record in manifest.files.items()}
    total = sum(sizes.values()) + (bundle / MANIFEST).stat().st_size
    fp32 = sum(size for path, size in sizes.items() if path != manifest.encoder.int8_file)
    result = {"all": total / 1e6, "fp32": fp32 / 1e6}
    if manifest.encoder.int8_file:
        result["int8"] = sum(size for path, size in sizes.items() if path != manifest.encoder.file) / 1e6
    return result


def contestant_table(results: dict[str, dict], people: list[Contestant], many: bool) -> str:
    """One row per contestant: its backbone and task, and its ipt (fp32) and ipt-int8 figures
    (medians over the rounds; "–" where that config did not run)."""
    from ipt_edge.manifest import read_manifest

    lines = [
        "| contestant | backbone | task | accuracy fp32 / int8 | rows/s fp32 | rows/s int8 | bundle MB "
        "(all files; fp32 / int8 run) | cold start s fp32 / int8 | peak RSS MB fp32 / int8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for person in people:
        manifest = read_manifest(person.bundle)
        bb = manifest.backbone
        task = manifest.task(person.task)[1]
        fp32 = results.get(config_name("ipt", person, many), {})
        int8 = results.get(config_name("ipt-int8", person, many), {})

        def pair(key: str, form: str, a: dict = fp32, b: dict = int8) -> str:
            return " / ".join(form.format(r[key]) if key in r else "–" for r in (a, b))

        sizes = bundle_mb(person.bundle)
        size = f"{sizes['all']:.1f} ({sizes['fp32']:.1f} / " + (
            f"{sizes['int8']:.1f})" if "int8" in sizes else "–)"
        )
        speed = " | ".join(f"{r['rows_per_s']:.1f}" if r else "–" for r in (fp32, int8))
        lines.append(
            f"| {person.name} | {bb.name} ({bb.model_type}, {bb.num_layers} layers, hidden {bb.hidden_size}) "
            f"| {task.generator}, P={task.prompt_length} | {pair('accuracy', '{:.4f}')} | {speed} | {size} "
            f"| {pair('cold_start_s', '{:.2f}')} | {pair('peak_rss_mb', '{:.0f}')} |"
        )
    return "\n".join(lines)


def round_ratio(runs: dict[str, list[dict]], config: str, peer: str) -> tuple[float, float, float] | None:
    """Median, min and max over rounds of config's rows/s over peer's, both from the same round."""
    if config not in runs or peer not in runs:
        return None
    ratios = [a["rows_per_s"] / b["rows_per_s"] for a, b in zip(runs[config], runs[peer], strict=True)]
    return float(np.median(ratios)), min(ratios), max(ratios)


def format_ratio(ratio: tuple[float, float, float] | None, peer: str) -> str:
    if ratio is None:
        return ""
    median, low, high = ratio
    spread = f" ({low:.2f}–{high:.2f})" if high > low else ""
    return f"{median:.2f}{spread} vs {peer}"


def peer_table(runs: dict[str, list[dict]]) -> tuple[str, list[str]]:
    """Each ipt-edge config against its peers at the same precision, and the issue's targets."""
    lines = [
        "| ipt-edge config | × plain backbone at T tokens (fused; same precision) "
        "| × optimum ORTModelForSequenceClassification (same precision, same batch order) |",
        "|---|---|---|",
    ]
    targets = []
    for config in runs:
        kind, _ = split_config(config)
        if kind not in BACKBONE_PEER:
            continue
        to_backbone = round_ratio(runs, config, BACKBONE_PEER[kind])
        to_optimum = round_ratio(runs, config, OPTIMUM_PEER[kind])
        lines.append(
            f"| {config} | {format_ratio(to_backbone, BACKBONE_PEER[kind])} "
            f"| {format_ratio(to_optimum, OPTIMUM_PEER[kind])} |"
        )
        shown = format_ratio(to_backbone, BACKBONE_PEER[kind])
        line = target_line(config, BACKBONE_PEER[kind], to_backbone[0], shown) if to_backbone else None
        if line:
            targets.append(line)
    return "\n".join(lines), targets


def verdict(config: str, peer: str, target: float, ratio: float, shown: str) -> str:
    """Whether `config` met its speed target against `peer`: `ratio` is its rows/s over the peer's,
    `shown` that ratio as the report estimated it, naming the estimator (bench.py, prompt_tax.py)."""
    return f"target {config} >= {target:.2f}× {peer}: {shown}: {'met' if ratio >= target else 'missed'}"


def target_line(config: str, peer: str, ratio: float, shown: str) -> str | None:
    """The issue's target (#16) for `config` against `peer` (its plain backbone at T tokens), met or
    missed by `ratio` (see verdict); None where `config` has no target against that peer."""
    kind = split_config(config)[0]
    if kind not in TARGETS or peer != BACKBONE_PEER[kind]:
        return None
    return verdict(config, peer, TARGETS[kind], ratio, shown)


def peers_ran(runs: dict[str, list[dict]]) -> bool:
    """Whether a backbone or optimum peer ran: without one there are no ratios to show."""
    return any(peer in runs for peer in (*BACKBONE, *OPTIMUM))


def heading(args: argparse.Namespace, people: list[Contestant], how: str = "") -> str:
    """A report's first lines: the machine, the run's settings (`how`: the measurement's own) and
    the contestants."""
    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; threads {args.threads}; "
        f"batch {args.batch_size}; {args.rows} rows of {args.data}{how}\n"
        f"contestants: {', '.join(f'{p.name} ({p.checkpoint or p.bundle})' for p in people)}"
    )


# ---------------------------------------------------------------------------------------------


def default_configs(people: list[Contestant], peers: bool = True) -> list[str]:
    """Every config that applies; without `peers` (contestants of different backbones), no backbone
    or optimum peer."""
    from ipt_edge.manifest import read_manifest

    configs = list(TORCH) if any(p.checkpoint for p in people) else []
    if peers:
        configs += BACKBONE
        if optimum_available():
            configs += OPTIMUM
        else:
            log(
                'optimum is not installed (pip install -e ".[export,bench]"): the optimum configs are left out'
            )
    many = len(people) > 1
    for person in people:
        manifest = read_manifest(person.bundle)
        int8 = manifest.encoder.int8_file
        for kind in IPT:
            if kind == "ipt-optimized" and person.optimized is None:
                continue
            if kind == "ipt-int8" and not int8:
                log(f"{person.bundle} has no int8 encoder: ipt-int8 is left out for {person.name}")
                continue
            configs.append(config_name(kind, person, many))
    return configs


def check_configs(configs: list[str], people: list[Contestant]) -> None:
    names = {p.name for p in people}
    for config in configs:
        kind, name = split_config(config)
        if kind not in {*TORCH, *BACKBONE, *OPTIMUM, *IPT}:
            raise SystemExit(f"unknown config {config!r}")
        if name is not None and (kind not in IPT or name not in names):
            raise SystemExit(f"config {config!r}: contestants are {sorted(names)}, and only ipt-* take one")
        if kind in IPT and name is None and len(people) > 1:
            raise SystemExit(f"config {config!r}: name the contestant, e.g. {kind}@{people[0].name}")
        if kind in TORCH and not any(p.checkpoint for p in people):
            raise SystemExit(f"config {config!r} needs a CHECKPOINT (PyTorch runs the checkpoint)")
        if kind == "ipt-optimized" and not all(p.optimized for p in people if name in (None, p.name)):
            raise SystemExit(f"config {config!r}: only checkpoint contestants are exported with --optimize")


def report_paired(args: argparse.Namespace, people: list[Contestant], configs: list[str]) -> None:
    if not any(split_config(c)[0] in IPT for c in configs):
        raise SystemExit("--paired needs an ipt-* config: its ratios are to the peers")
    runs, robust = paired(args, people, configs)
    (args.work / "runs-paired.json").write_text(
        json.dumps({"args": sys.argv[1:], "runs": runs, "robust_rows_per_s": robust}, indent=1)
    )
    print(heading(args, people, f"; paired, {args.rounds} rounds, blocks of {args.block} batches") + "\n")
    print(
        "| config | rows/s (blocks' medians) | rows/s per round: median (min–max) | GFLOP/s (median round) |"
    )
    print("|---|---|---|---|")
    for config, rounds in runs.items():
        speeds = [r["rows_per_s"] for r in rounds]
        print(f"| {config} | {robust[config]:.1f} | {np.median(speeds):.1f} ({min(speeds):.1f}–{max(speeds):.1f}) "
              f"| {np.median([r['gflops_per_s'] for r in rounds]):.1f} |")  # fmt: skip
    if not peers_ran(runs):
        return
    print("\nipt-edge against its peers, same precision: the ratio of the blocks' median times summed, and "
          f"the per-round ratios (median, min–max over {args.rounds} rounds)\n")  # fmt: skip
    print("| ipt-edge config | peer | × peer (blocks' medians) | × peer per round |\n|---|---|---|---|")
    pairs = [(c, peer) for c in runs if split_config(c)[0] in BACKBONE_PEER
             for peer in (BACKBONE_PEER[split_config(c)[0]], OPTIMUM_PEER[split_config(c)[0]]) if peer in runs]  # fmt: skip
    for config, peer in pairs:
        print(f"| {config} | {peer} | {robust[config] / robust[peer]:.2f} "
              f"| {format_ratio(round_ratio(runs, config, peer), peer)} |")  # fmt: skip
    print()
    for control in (c for c in runs if c.endswith(" (control)")):
        first = control.removesuffix(" (control)")
        print(f"control: a second session of {first}: {robust[control] / robust[first]:.2f} (blocks' medians); "
              f"per round {format_ratio(round_ratio(runs, control, first), first)}")  # fmt: skip
    for config, peer in pairs:
        ratio = robust[config] / robust[peer]
        line = target_line(config, peer, ratio, f"{ratio:.2f} (blocks' medians)")
        if line:
            print(line)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, nargs="*", help="training checkpoints, exported here")
    parser.add_argument("--bundle", type=Path, action="append", default=[],
                        help="an exported bundle to run as it is (repeatable)")  # fmt: skip
    parser.add_argument("--task", help="the task in --bundle bundles (default: their only task)")
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2",
                        help="the peers' backbone when no CHECKPOINT names it (checked against the bundle)")  # fmt: skip
    parser.add_argument("--data", type=Path, required=True, help="labelled rows (TSV/CSV/JSONL)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-rows", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=Path("work/bench"))
    parser.add_argument("--configs", default="", help="comma-separated (default: every one that applies)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paired", action="store_true",
                        help="time every config in one process, block by block of --block batches, in a random order per block "
                             "(ratios only: no cold start, latency or RSS); the *-arrival configs are left out")  # fmt: skip
    parser.add_argument("--block", type=positive, default=8, help="batches per block in --paired (default 8)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    people = contestants(args)
    if not people:
        parser.error("pass a CHECKPOINT or --bundle PATH")
    if args.worker:
        print(json.dumps(worker(args.worker, args, people, args.started)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    requested = [c for c in args.configs.split(",") if c]
    check_configs(requested, people)
    arrival = [c for c in requested if in_file_order(c)]
    if args.paired and arrival:
        raise SystemExit(
            f"--paired runs every config on the same length-sorted batches: drop {', '.join(arrival)}"
        )
    kinds = {split_config(c)[0] for c in requested} or {*TORCH, *BACKBONE, *IPT, *OPTIMUM}
    if not requested and not optimum_available():
        kinds -= set(OPTIMUM)
    shas = backbones_of(people)
    one_backbone = len(set(shas.values())) == 1
    if not requested and not one_backbone:
        log("the contestants have different backbones: the backbone and optimum peers are left out")
        kinds -= {*BACKBONE, *OPTIMUM}
    prepare(args, people, kinds, shas)
    configs = requested or default_configs(people, one_backbone)
    if args.paired:  # the file-order configs asked for are refused above; the defaults' are left out
        report_paired(args, people, [c for c in configs if not in_file_order(c)])
    else:
        report_rounds(args, people, configs)


def report_rounds(args: argparse.Namespace, people: list[Contestant], configs: list[str]) -> None:
    """Every config in a fresh process per round (worker); the tables of the rounds' medians."""
    # A shared VM's speed drifts by tens of percent over minutes: every config runs once per round,
    # rounds are interleaved, and the table shows each figure's median over the rounds. Within a
    # round each ipt-edge config runs between its peers, and every other round runs backwards, so a
    # per-round ratio compares runs seconds apart and no config always goes first.
    runs: dict[str, list[dict]] = {config: [] for config in configs}
    order = sorted(configs, key=lambda config: RUN_ORDER.index(split_config(config)[0]))
    peaks = []
    for round_number in range(args.rounds):
        for config in order if round_number % 2 == 0 else order[::-1]:
            command = [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--worker",
                config,
                "--started",
                repr(time.time()),
            ]
            output = subprocess.run(command, capture_output=True, text=True)
            if output.returncode:
                raise SystemExit(f"config {config} failed:\n{output.stderr[-4000:]}")
            runs[config].append(json.loads(output.stdout.strip().splitlines()[-1]))
            log(f"round {round_number + 1} {config}: {runs[config][-1]}")
        peaks.append(gemm_peak(args.threads))
    (args.work / "runs.json").write_text(
        json.dumps({"args": sys.argv[1:], "runs": runs, "peaks": peaks}, indent=1)
    )
    results = {
        config: {key: float(np.median([r[key] for r in rs])) for key in rs[0] if key != "config"}
        for config, rs in runs.items()
    }
    peak = max(peaks)  # the machine at its best: the conservative denominator for a share
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "absent"

    print(heading(args, people))
    packages = ["onnxruntime", "torch", "tokenizers", "numpy", "transformers", "optimum", "optimum-onnx"]
    print(f"versions: python {platform.python_version()}, "
          + ", ".join(f"{p} {installed(p)}" for p in packages))  # fmt: skip
    print(f"fp32 GEMM peak through ONNX Runtime (2048³ MatMul, best of {len(peaks)} rounds): {peak:.1f} GFLOP/s "
          f"(rounds: {', '.join(f'{p:.0f}' for p in peaks)}); figures below: medians of {args.rounds} rounds\n")  # fmt: skip
    print(table(results, peak))
    if len(people) > 1:
        print("\nper contestant (fp32: ipt, int8: ipt-int8; medians of the rounds; MB = 1e6 bytes)\n")
        print(contestant_table(results, people, True))
    peers, targets = peer_table(runs)
    if peers_ran(runs):
        print(
            f"\nipt-edge against its peers: medians of the per-round ratios (min–max over {args.rounds} rounds)\n"
        )
        print(peers)
        print()
    for line in targets:
        print(line)
    first = next((p for p in people if p.checkpoint), None)
    default = first and config_name("ipt", first, len(people) > 1)
    if first and "torch-sorted" in results and default in results:
        a, b = np.load(args.work / "logits-torch-sorted.npy"), np.load(args.work / f"logits-{default}.npy")
        print(f"max |logit difference| {default} vs torch: {np.abs(a - b).max():.2e}")
    # Each length-sorted config against its twin in file order.
    twins = [tuple(config_name(k, p, len(people) > 1) for k in ("ipt", "ipt-arrival")) for p in people]
    for sorted_, arrival in [*twins, ("optimum-fp32", "optimum-arrival")]:
        if sorted_ in results and arrival in results:
            ratio = results[sorted_]["rows_per_s"] / results[arrival]["rows_per_s"]
            print(f"length-sorted batching, {sorted_}: {ratio:.2f}× over file order")


if __name__ == "__main__":
    main()
