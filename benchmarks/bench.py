"""Side-by-side speed of one trained task, in one run on one machine (see docs/performance.md).

    python benchmarks/bench.py models/sst2-sentiment --data ../shared/data/sst2/dev.tsv \\
        --text-column sentence --rows 2000 --threads 2

Every configuration runs in a fresh process (so cold start and peak RSS are its own), on the same
rows, batch size and thread count:

  torch-arrival   PyTorch eager (transformers + the IPT model, same weights), batches in file order
  torch-sorted    the same with our length-sorted batching
  backbone-plain  the encoder alone in ONNX Runtime (plain export of the HF model, no prompts) at the
                  same tokens per row (T + P): the floor the generator and glue add to
  backbone-fused  the same graph after ONNX Runtime's transformer fusions
  ipt-plain       ipt-edge, unfused backbone graph
  ipt-arrival     ipt-edge, fused, batches in file order
  ipt-fused       ipt-edge, fused, length-sorted (the default)
  ipt-int8        ipt-edge, fused + dynamic int8 encoder

It also measures the machine's fp32 GEMM peak through ONNX Runtime and the backbone's achieved
FLOP/s (its matmuls counted at the real padded token counts) as a share of that peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = [
    "torch-arrival", "torch-sorted", "backbone-plain", "backbone-fused",
    "ipt-plain", "ipt-arrival", "ipt-fused", "ipt-int8",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Data and bundles


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


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    """Bundles (fused + int8, and plain) and the backbone-alone graphs, cached in --work."""
    from ipt_edge_export.checkpoint import load_backbone, read_checkpoint
    from ipt_edge_export.onnx_export import Calibration, export_checkpoint, optimize_encoder

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    paths = {"fused": work / "bundle-fused", "plain": work / "bundle-plain"}
    calibration = Calibration(args.data, args.text_column, None, args.label_column, tolerance=100.0)
    quiet = lambda message: None  # noqa: E731
    if not paths["fused"].exists():
        export_checkpoint(args.checkpoint, paths["fused"], task="task", int8=calibration, log=quiet)
    if not paths["plain"].exists():
        export_checkpoint(args.checkpoint, paths["plain"], task="task", optimize=False, log=quiet)
    paths["backbone-plain"] = work / "backbone-plain.onnx"
    paths["backbone-fused"] = work / "backbone-fused.onnx"
    if not paths["backbone-fused"].exists():
        import shutil

        import torch

        checkpoint = read_checkpoint(args.checkpoint)
        backbone = load_backbone(checkpoint.meta["backbone"]["source"])
        ids = torch.randint(5, 1000, (2, 9))
        with torch.no_grad():
            torch.onnx.export(
                backbone.model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(paths["backbone-plain"]),
                input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in ["input_ids", "attention_mask", "token_type_ids"]},
                opset_version=17, dynamo=False,
            )  # fmt: skip
        shutil.copyfile(paths["backbone-plain"], paths["backbone-fused"])
        optimize_encoder(paths["backbone-fused"], backbone.model.config)
    return paths


# ---------------------------------------------------------------------------------------------
# One configuration, in its own process


def encoder_flops(hidden: int, intermediate: int, layers: int, batch: int, length: int) -> float:
    """Matmul FLOPs of a BERT encoder on a [batch, length] padded batch (what the machine computes)."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 2 * 2 * length * hidden
    return float(layers * batch * length * per_token)


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def worker(config: str, args: argparse.Namespace, paths: dict[str, Path], started: float) -> dict:
    texts, labels = read_rows(args.data, args.text_column, args.label_column, args.rows)
    threads = args.threads
    result: dict = {"config": config}
    if config.startswith("torch"):
        import torch

        from ipt_edge.tokenization import TextEncoder
        from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        model, backbone = model_from_checkpoint(read_checkpoint(args.checkpoint))
        encoder = TextEncoder(backbone.tokenizer_path, model.config.max_length)
        label_values = model.config.label_values or model.config.labels

        def run(rows: list[str]) -> np.ndarray:
            batch = encoder.encode(rows)
            with torch.inference_mode():
                return model(*(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask,
                                                           batch.token_type_ids))).numpy()  # fmt: skip

        run(texts[:1])
        result["cold_start_s"] = time.time() - started
        lengths = [len(e.ids) for e in encoder.tokenizer.encode_batch(texts)]
        order = list(range(len(texts)))
        if config == "torch-sorted":
            order.sort(key=lambda i: lengths[i])
        logits = np.zeros((len(texts), len(label_values)), dtype=np.float32)
        begin = time.perf_counter()
        for rows in batches(order, args.batch_size):
            logits[rows] = run([texts[i] for i in rows])
        result["rows_per_s"] = len(texts) / (time.perf_counter() - begin)
        predicted = [label_values[i] for i in logits.argmax(-1)]
        single = lambda text: run([text])  # noqa: E731
        np.save(args.work / f"logits-{config}.npy", logits)
    elif config.startswith("backbone"):
        import onnxruntime as ort

        from ipt_edge.bundle import read_manifest
        from ipt_edge.tokenization import TextEncoder

        manifest = read_manifest(paths["fused"])
        task = manifest.tasks["task"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(paths[config]), options, providers=["CPUExecutionProvider"])
        encoder = TextEncoder(paths["fused"] / "tokenizer.json", task.max_length)
        prompt = task.prompt_length

        def run(rows: list[str]) -> np.ndarray:
            batch = encoder.encode(rows)
            # The same tokens per row as ipt-edge: P extra (real, attended) positions in front.
            b = batch.input_ids.shape[0]
            ids = np.concatenate([np.full((b, prompt), 1000, np.int64), batch.input_ids], axis=1)
            mask = np.concatenate([np.ones((b, prompt), np.int64), batch.attention_mask], axis=1)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            return session.run(None, feeds)[0]

        run(texts[:1])
        result["cold_start_s"] = time.time() - started
        lengths = [len(e.ids) for e in encoder.tokenizer.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        begin = time.perf_counter()
        flops = 0.0
        for rows in batches(order, args.batch_size):
            run([texts[i] for i in rows])
            flops += encoder_flops(manifest.backbone.hidden_size, 4 * manifest.backbone.hidden_size,
                                   manifest.backbone.num_layers, len(rows), max(lengths[i] for i in rows) + prompt)  # fmt: skip
        seconds = time.perf_counter() - begin
        result["rows_per_s"] = len(texts) / seconds
        result["gflops_per_s"] = flops / seconds / 1e9
        predicted = None
        single = lambda text: run([text])  # noqa: E731
    else:
        from ipt_edge.classifier import Classifier

        bundle = paths["plain"] if config == "ipt-plain" else paths["fused"]
        precision = "int8" if config == "ipt-int8" else "fp32"
        classifier = Classifier.load(bundle, threads=threads, precision=precision)
        classifier.predict(texts[:1])
        result["cold_start_s"] = time.time() - started
        encoder_seconds = [0.0]
        real_run = classifier.backbone.run

        def timed_run(*a, **k):  # the encoder's own share of the time, for the FLOP/s figure
            t = time.perf_counter()
            out = real_run(*a, **k)
            encoder_seconds[0] += time.perf_counter() - t
            return out

        classifier.backbone.run = timed_run
        begin = time.perf_counter()
        if config == "ipt-arrival":  # file order: one call per batch, so nothing is sorted across batches
            logits = np.concatenate([classifier.logits(texts[i : i + args.batch_size], args.batch_size)
                                     for i in range(0, len(texts), args.batch_size)])  # fmt: skip
        else:
            logits = classifier.logits(texts, args.batch_size)
        result["rows_per_s"] = len(texts) / (time.perf_counter() - begin)
        lengths = sorted(len(e.ids) for e in classifier.encoder_text.tokenize(texts))
        p, bb = classifier.task.prompt_length, classifier.manifest.backbone
        flops = sum(encoder_flops(bb.hidden_size, 4 * bb.hidden_size, bb.num_layers, len(rows), max(rows) + p)
                    for rows in batches(lengths, args.batch_size))  # fmt: skip
        if config in ("ipt-plain", "ipt-fused"):  # fp32 only: the peak is an fp32 figure
            result["gflops_per_s"] = flops / encoder_seconds[0] / 1e9
            result["encoder_share"] = encoder_seconds[0] / (len(texts) / result["rows_per_s"])
        predicted = [classifier.task.label_values[i] for i in logits.argmax(-1)]
        np.save(args.work / f"logits-{config}.npy", logits)
        single = lambda text: classifier.logits([text])  # noqa: E731
    latencies = []
    for text in texts[: args.latency_rows]:
        t = time.perf_counter()
        single(text)
        latencies.append(time.perf_counter() - t)
    result["p50_ms"] = 1000 * float(np.percentile(latencies, 50))
    result["p95_ms"] = 1000 * float(np.percentile(latencies, 95))
    if predicted is not None:
        result["accuracy"] = float(np.mean([p == g for p, g in zip(predicted, labels, strict=True)]))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


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


def table(results: dict[str, dict], peak: float) -> str:
    base_torch = results["torch-arrival"]["rows_per_s"]
    base_sorted = results["torch-sorted"]["rows_per_s"]
    floor = results["backbone-fused"]["rows_per_s"]
    lines = [
        "| config | rows/s | × torch arrival | × torch sorted | × backbone floor (fused) | p50 ms | p95 ms "
        "| cold start s | peak RSS MB | accuracy | GFLOP/s (share of peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        flops = f"{r['gflops_per_s']:.1f} ({r['gflops_per_s'] / peak:.0%})" if "gflops_per_s" in r else ""
        accuracy = f"{r['accuracy']:.4f}" if "accuracy" in r else ""
        lines.append(
            f"| {name} | {r['rows_per_s']:.1f} | {r['rows_per_s'] / base_torch:.2f} | {r['rows_per_s'] / base_sorted:.2f} "
            f"| {r['rows_per_s'] / floor:.2f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['cold_start_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {accuracy} | {flops} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="labelled rows (TSV/CSV/JSONL)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-rows", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=Path("work/bench"))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    paths = {
        "fused": args.work / "bundle-fused", "plain": args.work / "bundle-plain",
        "backbone-plain": args.work / "backbone-plain.onnx", "backbone-fused": args.work / "backbone-fused.onnx",
    }  # fmt: skip
    if args.worker:
        print(json.dumps(worker(args.worker, args, paths, args.started)))
        return
    prepare(args)
    # A shared VM's speed drifts by tens of percent over minutes: every config runs once per round,
    # rounds are interleaved, and the table shows each figure's median over the rounds.
    runs: dict[str, list[dict]] = {config: [] for config in args.configs.split(",")}
    peaks = []
    for round_number in range(args.rounds):
        for config in runs:
            command = [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--worker",
                config,
                "--started",
                repr(time.time()),
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs[config].append(json.loads(output.strip().splitlines()[-1]))
            print(f"round {round_number + 1} {config}: {runs[config][-1]}", file=sys.stderr)
        peaks.append(gemm_peak(args.threads))
    results = {
        config: {key: float(np.median([r[key] for r in rs])) for key in rs[0] if key != "config"}
        for config, rs in runs.items()
    }
    peak = max(peaks)  # the machine at its best: the conservative denominator for a share
    import onnxruntime
    import tokenizers
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; threads {args.threads}; "
          f"batch {args.batch_size}; {args.rows} rows of {args.data}")  # fmt: skip
    print(f"versions: python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
          f"torch {torch.__version__}, tokenizers {tokenizers.__version__}, numpy {np.__version__}")  # fmt: skip
    print(f"fp32 GEMM peak through ONNX Runtime (2048³ MatMul, best of {len(peaks)} rounds): {peak:.1f} GFLOP/s "
          f"(rounds: {', '.join(f'{p:.0f}' for p in peaks)}); figures below: medians of {args.rounds} rounds\n")  # fmt: skip
    print(table(results, peak))
    if "torch-sorted" in results and "ipt-fused" in results:
        a, b = np.load(args.work / "logits-torch-sorted.npy"), np.load(args.work / "logits-ipt-fused.npy")
        print(f"\nmax |logit difference| ipt-fused vs torch: {np.abs(a - b).max():.2e}")
    if "ipt-fused" in results and "ipt-arrival" in results:
        print(f"length-sorted batching: {results['ipt-fused']['rows_per_s'] / results['ipt-arrival']['rows_per_s']:.2f}× "
              "over file order")  # fmt: skip


if __name__ == "__main__":
    main()
