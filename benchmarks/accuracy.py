"""Accuracy of every method on real tasks, one JSON line per (task, method, seed); see docs/accuracy.md.

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2      # once per task
    python benchmarks/accuracy.py run --task sst2 --method mlp-deep --seeds 0,1,2 --max-train-rows 8000
    python benchmarks/accuracy.py table                                          # mean ± sd per row

Methods: probe and finetune (baselines.py), and every generator kind of `ipt-edge train`.
Test accuracy is measured on held-out rows the method never saw (for SST-2: unseen full sentences).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

TASKS = {  # split folders written by ipt_edge_export.datasets
    "sst2": {"folder": "work/sst2", "text_column": "sentence", "labels": "0=negative,1=positive"},
    "agnews": {"folder": "work/agnews", "text_column": "text", "labels": None},
}
BASELINES = ("probe", "finetune")


def run_one(task: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    from ipt_edge.tokenization import TextEncoder
    from ipt_edge_export.baselines import run as run_baseline
    from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint
    from ipt_edge_export.train import TrainOptions, evaluate, read_examples, train

    spec = TASKS[task]
    folder = Path(spec["folder"])
    options = TrainOptions(
        train_file=folder / "train.tsv", dev_file=folder / "dev.tsv",
        out_dir=Path(args.work) / f"{task}-{method}-{seed}", text_column=spec["text_column"],
        labels=spec["labels"], generator=method if method not in BASELINES else "mlp",
        prompt_length=args.prompt_length, epochs=args.epochs, seed=seed,
        max_train_rows=args.max_train_rows, eval_every=args.eval_every,
        lr=args.lr or {"probe": 1e-3, "finetune": 3e-5}.get(method, 5e-3),
    )  # fmt: skip
    started = time.perf_counter()
    if method in BASELINES:
        report = run_baseline(method, options, folder / "test.tsv")
    else:
        record = train(options, progress=lambda message: None)
        model, backbone = model_from_checkpoint(read_checkpoint(options.out_dir))
        encoder = TextEncoder(backbone.tokenizer_path, model.config.max_length)
        test_set, _ = read_examples(folder / "test.tsv", options, model.config.label_values)
        report = {
            "tuned_parameters": model.tuned_parameter_count(),
            "tuned_share": record["tuned_share"],
            "train_rows": record["train_rows"],
            "steps": record["steps"],
            "dev_accuracy": record["dev_accuracy"],
            "test_accuracy": evaluate(model, encoder, test_set),
        }
    report.update(task=task, method=method, seed=seed, epochs=args.epochs, lr=options.lr,
                  max_train_rows=args.max_train_rows, seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    return report


def table(results_file: Path) -> str:
    rows: dict[tuple, list[dict]] = {}
    for line in results_file.read_text().splitlines():
        r = json.loads(line)
        rows.setdefault((r["task"], r["method"], r["train_rows"], r["epochs"]), []).append(r)
    out = [
        "| task | method | tuned share | train rows × epochs | test accuracy (mean ± sd) | seeds | dev accuracy | train time s |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def order(item):  # by task, then training budget, then best first
        (task, _, train_rows, epochs), runs = item
        return task, -train_rows * epochs, -statistics.mean(r["test_accuracy"] for r in runs)

    for (task, method, train_rows, epochs), runs in sorted(rows.items(), key=order):
        accuracy = [100 * r["test_accuracy"] for r in runs]
        spread = f" ± {statistics.stdev(accuracy):.2f}" if len(accuracy) > 1 else " (one seed)"
        dev = statistics.mean(100 * r["dev_accuracy"] for r in runs)
        seconds = statistics.mean(r["seconds"] for r in runs)
        share = runs[0]["tuned_share"]
        out.append(
            f"| {task} | {method} | {share:.3%} | {train_rows} × {epochs:g} | "
            f"{statistics.mean(accuracy):.2f}{spread} | {len(runs)} | {dev:.2f} | {seconds:.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["run", "table"])
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--method", help="probe, finetune, or a generator kind (e.g. mlp-deep)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--work", default="work/accuracy")
    parser.add_argument("--results", type=Path, default=Path("docs/accuracy-results.jsonl"))
    args = parser.parse_args()
    if args.command == "table":
        print(table(args.results))
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        report = run_one(args.task, args.method, seed, args)
        with open(args.results, "a", encoding="utf-8") as file:
            file.write(json.dumps(report) + "\n")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
