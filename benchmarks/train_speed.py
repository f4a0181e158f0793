"""Training speed, side by side: the loop before issue #28 (`legacy`: random batches tokenized anew
each step, fp32) against today's (`fp32`: length-bucketed batches of rows tokenized once; `bf16`:
the same with the frozen backbone under bf16 autocast, the default where the CPU has native bf16).

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2
    python benchmarks/train_speed.py --task sst2 --configs legacy,fp32,bf16 --max-train-rows 8000
    python benchmarks/train_speed.py --task agnews --configs legacy,bf16
    python benchmarks/train_speed.py table                    # every run of --results, per task and config

Each run is its own process (so its peak RSS is its own), trains one task from the same rows with
the same seed, and is appended to --results (docs/train-speed.jsonl) as soon as it ends: rows/s over
the whole fit (dev evaluations included, the same for every config), peak RSS, dev and test accuracy.
Configs run one after another, never at once: two on 2 cores would spoil both timings. The table
gives each config's rows/s as a ratio to `legacy` on the same task, budget and machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {  # split folders written by ipt_edge_export.datasets; settings as the task ships or defaults
    "sst2": {"folder": "work/sst2", "text_column": "sentence", "labels": "0=negative,1=positive",
             "prompt_length": 8, "eval_every": 400},  # the shipped models/sst2-sentiment recipe
    "agnews": {"folder": "work/agnews", "text_column": "text", "labels": None,
               "prompt_length": 16, "eval_every": None},  # `ipt-edge train` defaults
}  # fmt: skip
CONFIGS = {
    "legacy": {"legacy_loop": True},  # every lever off: the loop as it was
    "fp32": {"precision": "fp32"},  # bucketed batches, rows tokenized once
    "bf16": {"precision": "bf16"},  # and bf16 autocast of the frozen backbone (tuned weights fp32)
}  # runs of configs no longer here stay in the table: `bf16-all`, the generator and head in bf16 too (8e7fa0e)


def worker(args: argparse.Namespace) -> dict:
    """One training run in this process; returns its record."""
    import torch

    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint
    from ipt_edge_export.train import TrainOptions, accuracies, train

    spec = TASKS[args.task]
    folder = Path(spec["folder"])
    with tempfile.TemporaryDirectory() as scratch:
        options = TrainOptions(
            train_file=folder / "train.tsv", dev_file=folder / "dev.tsv", out_dir=Path(scratch) / "ckpt",
            text_column=spec["text_column"], labels=spec["labels"], prompt_length=spec["prompt_length"],
            eval_every=spec["eval_every"], epochs=args.epochs, seed=args.seed, backbone=args.backbone,
            max_train_rows=args.max_train_rows, threads=args.threads, prefix_from_layer=args.prefix_from_layer,
            **CONFIGS[args.config],
        )  # fmt: skip
        record = train(options, progress=lambda message: None)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        model, backbone = model_from_checkpoint(read_checkpoint(options.out_dir))
        encoder = BundleTokenizer(backbone.tokenizer_path, model.config.max_length)
        tested = accuracies(model, encoder, {"test": folder / "test.tsv"}, options, model.config.label_values)
    rows = record["train_rows"] * args.epochs
    return {
        "task": args.task, "config": args.config, "seed": args.seed, "backbone": args.backbone,
        "train_rows": record["train_rows"], "epochs": args.epochs, "steps": record["steps"],
        "prefix_from_layer": args.prefix_from_layer, "train_seconds": record["train_seconds"],
        "rows_per_second": round(rows / record["train_seconds"], 1), "peak_rss_mb": round(peak_mb),
        "dev_accuracy": record["dev_accuracy"], "test_accuracy": tested["test_accuracy"],
        "lr": record["lr"], "threads": torch.get_num_threads(), "commit": commit(),
    }  # fmt: skip


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> None:
    """Every (seed, config) in its own process, one at a time, each appended to --results at once."""
    for seed in args.seeds:
        for config in args.configs:
            command = [sys.executable, __file__, "worker", "--task", args.task, "--config", config,
                       "--seed", str(seed), "--epochs", str(args.epochs), "--backbone", args.backbone,
                       "--prefix-from-layer", str(args.prefix_from_layer)]  # fmt: skip
            command += ["--max-train-rows", str(args.max_train_rows)] if args.max_train_rows else []
            command += ["--threads", str(args.threads)] if args.threads else []
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{args.task} {config} seed {seed} failed:\n{done.stderr[-3000:]}")
            record = json.loads(done.stdout.strip().splitlines()[-1])
            with args.results.open("a") as out:
                out.write(json.dumps(record) + "\n")
            print(f"{args.task} {config} seed {seed}: {record['rows_per_second']} rows/s, "
                  f"peak {record['peak_rss_mb']} MB, dev {record['dev_accuracy']:.4f}, "
                  f"test {record['test_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    table(args.results)


def group_runs(runs: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """Runs by (task, backbone, rows, epochs, K, lr), then by config: what the table and
    benchmarks/figures.py compare side by side (runs before the lr field: 5e-2)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in runs:
        key = (
            r["task"],
            r["backbone"],
            r["train_rows"],
            r["epochs"],
            r["prefix_from_layer"],
            r.get("lr", 5e-2),
        )
        groups.setdefault(key, {}).setdefault(r["config"], []).append(r)
    return groups


def table(results: Path) -> None:
    """Per (task, backbone, budget, K, lr) and config: rows/s, its ratio to legacy, peak RSS,
    accuracies. Rows/s and RSS come from the runs on a quiet machine only; a run marked
    "contended" (taken beside other jobs) counts for accuracy alone. Runs recorded before the lr
    field trained at 5e-2, the one default rate then."""
    groups = group_runs([json.loads(line) for line in results.read_text().splitlines() if line.strip()])
    print(
        "| task | backbone | rows × epochs | K | lr | config | seeds | rows/s | × legacy | peak RSS MB "
        "| dev | test (mean ± sd) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (task, backbone, rows, epochs, first, lr), configs in sorted(groups.items()):
        legacy = [r for r in configs.get("legacy", []) if not r.get("contended")]
        base = statistics.mean(r["rows_per_second"] for r in legacy) if legacy else None
        for config in [c for c in CONFIGS if c in configs] + sorted(set(configs) - set(CONFIGS)):
            rs = configs[config]
            timed = [r for r in rs if not r.get("contended")]
            if not timed:
                print(f"| {task} | {backbone} | {rows:,} × {epochs:g} | {first} | {lr:g} | {config} | {len(rs)} | "
                      f"contended | – | – | {statistics.mean(100 * r['dev_accuracy'] for r in rs):.2f} | "
                      f"{statistics.mean(100 * r['test_accuracy'] for r in rs):.2f} |")  # fmt: skip
                continue
            speed = statistics.mean(r["rows_per_second"] for r in timed)
            tests = [100 * r["test_accuracy"] for r in rs]
            sd = f" ± {statistics.stdev(tests):.2f}" if len(tests) > 1 else ""
            ratio = f"{speed / base:.2f}" if base else "–"
            print(f"| {task} | {backbone} | {rows:,} × {epochs:g} | {first} | {lr:g} | {config} | {len(rs)} | "
                  f"{speed:.1f} | {ratio} | {max(r['peak_rss_mb'] for r in timed):,} | "
                  f"{statistics.mean(100 * r['dev_accuracy'] for r in rs):.2f} | "
                  f"{statistics.mean(tests):.2f}{sd} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", nargs="?", default="run", choices=["run", "table", "worker"])
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--configs", type=lambda s: s.split(","), default=list(CONFIGS))
    parser.add_argument("--config", choices=sorted(CONFIGS))  # worker only
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument("--seed", type=int, default=0)  # worker only
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--prefix-from-layer", type=int, default=0)
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--results", type=Path, default=Path("docs/train-speed.jsonl"))
    args = parser.parse_args()
    if unknown := [c for c in args.configs if c not in CONFIGS]:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    if args.action == "worker":
        print(json.dumps(worker(args)))
    elif args.action == "table":
        table(args.results)
    else:
        run(args)


if __name__ == "__main__":
    main()
