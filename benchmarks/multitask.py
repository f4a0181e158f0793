"""Many tasks, one backbone: memory and throughput as a bundle grows from 1 to N tasks.

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2
    python benchmarks/multitask.py models/sst2-sentiment --data work/sst2/test.tsv --text-column sentence

The bundle holds N copies of one checkpoint under different names (the speed and memory of a task
do not depend on its weights), exported once into --work. Each measurement runs in a fresh process:

    separate   N `Classifier.load`s of the bundle, as before the Bundle class: each opens the backbone
    shared     one `Bundle.load`, N `Classifier(bundle, name)`, the rows scored task after task
    mixed      one Bundle, every row with a random task, scored as mixed batches (`bundle.run`)

rows/s counts the same rows in every configuration; RSS is the process's resident memory (VmRSS)
after loading every task, and again once every task has run on a few rows (a session's buffers
are made on its first run), and the peak over the run (VmHWM). Before the tasks run, the first
task runs --warmup times, so that the shared sessions' own growth over their first calls (the
same for any number of tasks) is not counted as the tasks'.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def read_texts(path: Path, column: str, rows: int) -> list[str]:
    from ipt_edge.tables import TableReader

    with TableReader(path) as reader:
        texts = [row[column] for _, row in reader if row[column].strip()]
    return (texts * (rows // max(1, len(texts)) + 1))[:rows]


def worker(args: argparse.Namespace) -> dict:
    """One configuration in this process; prints one JSON line."""
    from ipt_edge import Bundle, Classifier

    texts = read_texts(args.data, args.text_column, args.rows)
    names = [f"task{i}" for i in range(args.tasks)]
    started = time.perf_counter()
    if args.config == "separate":
        classifiers = [Classifier.load(args.bundle, task=name, threads=args.threads) for name in names]
    else:
        bundle = Bundle.load(args.bundle, threads=args.threads)
        classifiers = [Classifier(bundle, name) for name in names]
    load_seconds = time.perf_counter() - started
    rss_loaded = rss_mb()
    rng = random.Random(0)
    tasks = [rng.choice(names) for _ in texts]
    # The shared sessions (embedding, backbone) grow their buffers over their first calls (about
    # 22 MB at the second call of 8 sentences, then flat: the printed warm-up curve), whatever the
    # number of tasks; without this warm-up that growth was counted as the tasks' (docs/performance.md).
    warmup_curve = []
    for _ in range(args.warmup):
        classifiers[0].predict(texts[:8], batch_size=args.batch_size)
        warmup_curve.append(round(rss_mb(), 1))
    for classifier in classifiers:  # each task's first run: its generator session's buffers
        classifier.predict(texts[:8], batch_size=args.batch_size)
    rss_ran = rss_mb()
    started = time.perf_counter()
    if args.config == "mixed":
        bundle.run(texts, tasks, batch_size=args.batch_size)
    else:  # the same rows, each task scoring its own share
        for classifier in classifiers:
            mine = [t for t, name in zip(texts, tasks, strict=True) if name == classifier.task_name]
            classifier.predict(mine, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    return {
        "config": args.config, "tasks": args.tasks, "rows": len(texts), "rows_per_s": len(texts) / seconds,
        "load_s": load_seconds, "rss_loaded_mb": rss_loaded, "warmup_curve_mb": warmup_curve, "rss_ran_mb": rss_ran, "peak_rss_mb": rss_mb("VmHWM"),
    }  # fmt: skip


def build_bundle(checkpoint: Path, folder: Path, tasks: int) -> Path:
    """A bundle with `tasks` copies of the checkpoint, named task0..; extended as needed."""
    from ipt_edge.manifest import read_manifest
    from ipt_edge_export.onnx_export import export_checkpoint

    have = set(read_manifest(folder).tasks) if (folder / "manifest.json").is_file() else set()
    for i in range(tasks):
        if f"task{i}" not in have:
            print(f"exporting task{i} into {folder}", file=sys.stderr, flush=True)
            export_checkpoint(checkpoint, folder, task=f"task{i}", log=lambda message: None)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, nargs="?")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--counts", default="1,2,4,8,9", help="numbers of tasks to measure")
    parser.add_argument("--configs", default="separate,shared,mixed")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--warmup", type=int, default=10, help="calls of the first task before memory is measured"
    )
    parser.add_argument("--work", type=Path, default=Path("work/multitask"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    counts = [int(c) for c in args.counts.split(",")]
    bundle = build_bundle(args.checkpoint, args.work / "bundle", max(counts))
    runs: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):
        for n in counts:
            for config in args.configs.split(","):
                command = [sys.executable, __file__, "--worker", "--config", config, "--tasks", str(n),
                           "--bundle", str(bundle), "--data", str(args.data), "--text-column", args.text_column,
                           "--rows", str(args.rows), "--threads", str(args.threads),
                           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup)]  # fmt: skip
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                runs.setdefault((n, config), []).append(json.loads(out.strip().splitlines()[-1]))

    def median(key, n, config):
        values = sorted(r[key] for r in runs[(n, config)])
        return values[len(values) // 2]

    print(f"{args.rows} rows of {args.data}, threads {args.threads}, batch {args.batch_size}, "
          f"medians of {args.rounds} interleaved rounds, each configuration in a fresh process\n")  # fmt: skip
    print(
        "| tasks | config | rows/s | × one task | RSS after loading MB | + over one task "
        "| RSS once each task ran MB | + per extra task | peak RSS MB | load s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    base_speed = median(
        "rows_per_s", counts[0], "shared" if "shared" in args.configs else args.configs.split(",")[0]
    )
    base_rss = {c: median("rss_loaded_mb", counts[0], c) for c in args.configs.split(",")}
    base_ran = {c: median("rss_ran_mb", counts[0], c) for c in args.configs.split(",")}

    def per_task(n: int, config: str) -> float:  # MB each task beyond the first adds, once it has run
        return (median("rss_ran_mb", n, config) - base_ran[config]) / max(1, n - counts[0])

    for n in counts:
        for config in args.configs.split(","):
            speed, rss = median("rows_per_s", n, config), median("rss_loaded_mb", n, config)
            extra = f"{per_task(n, config):+.2f}" if n > counts[0] else ""
            print(f"| {n} | {config} | {speed:.1f} | {speed / base_speed:.2f} | {rss:.0f} | "
                  f"+{rss - base_rss[config]:.0f} | {median('rss_ran_mb', n, config):.0f} | {extra} | "
                  f"{median('peak_rss_mb', n, config):.0f} | {median('load_s', n, config):.2f} |")  # fmt: skip
    top = max(counts)
    curve = runs[(counts[0], args.configs.split(",")[0])][0]["warmup_curve_mb"]
    print(f"\nRSS MB after each warm-up call of the first task ({counts[0]} task(s), "
          f"{args.configs.split(',')[0]}, round 1): {' '.join(f'{mb:.1f}' for mb in curve)}")  # fmt: skip
    if "shared" in args.configs:
        print(f"\ntarget: one Bundle with {top} tasks <= 1 task + 40 MB: "
              f"+{median('rss_loaded_mb', top, 'shared') - base_rss['shared']:.0f} MB")  # fmt: skip
        print(f"target: each extra task that has run <= +2 MB RSS: {per_task(top, 'shared'):+.2f} MB")
    if "mixed" in args.configs:
        ratio = median("rows_per_s", top, "mixed") / base_speed
        print(f"target: a mixed-task stream ({top} tasks) >= 0.9x one task's throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
