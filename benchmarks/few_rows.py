"""Few labelled rows: `ipt-edge train` at a step budget against the old epoch budget and the linear
probe, on seeded subsets of R rows per class, tested on the task's held-out test split.

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2
    python benchmarks/accuracy.py split --task trec
    python benchmarks/few_rows.py --task sst2 --per-class 16,64 --subsets 3 --methods epochs2,steps100,steps300,probe
    python benchmarks/few_rows.py table

Methods: `epochsN` trains N passes (the default before the step budget: 2, which gives 32 rows 2
optimizer steps), `stepsN` trains N optimizer steps; both with every other option at its default and
no dev file (so no dev selection: these sets are too small to hold rows out). `probe` is logistic
regression (C = 1, L-BFGS) on the frozen backbone's mean-pooled, L2-normalised embeddings: the floor
any frozen-backbone method should clear, trained in seconds. Every run is appended to --results
(docs/few-rows.jsonl) as it ends.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import TASKS  # the split folders and their columns


def subset(task: str, per_class: int, index: int, out: Path) -> Path:
    """R rows of each label of the task's train.tsv (all of a label's rows where it has fewer), drawn
    with seed `index`, as a TSV."""
    from ipt_edge.tables import read_labelled

    spec = TASKS[task]
    rows: dict[str, list[str]] = {}
    for _, text, label in read_labelled(
        Path(spec["folder"]) / "train.tsv", spec["text_column"], None, "label"
    ):
        rows.setdefault(label, []).append(str(text))
    rng = random.Random(index)
    picked = [
        (text, label)
        for label in sorted(rows)
        for text in rng.sample(rows[label], min(per_class, len(rows[label])))
    ]
    rng.shuffle(picked)
    column = spec["text_column"]
    out.write_text(f"{column}\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in picked))
    return out


def probe(task: str, train_file: Path, labels: str | None, backbone_name: str | None = None) -> float:
    """Test accuracy of logistic regression (C = 1) on normalised mean-pooled frozen embeddings."""
    import torch

    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.checkpoint import load_backbone
    from ipt_edge_export.model import masked_mean
    from ipt_edge_export.train import TrainOptions, load_task_data, read_examples

    spec = TASKS[task]
    options = TrainOptions(train_file, Path("unused"), text_column=spec["text_column"], labels=labels)
    if backbone_name:
        options.backbone = backbone_name
    train_set, _, raw_labels, _ = load_task_data(options, lambda message: None)
    test_set = read_examples(Path(spec["folder"]) / "test.tsv", options, raw_labels)[0]
    backbone = load_backbone(options.backbone)
    encoder = BundleTokenizer(backbone.tokenizer_path, 128)

    @torch.no_grad()  # not inference_mode: L-BFGS's autograd reads these
    def embed(texts):
        out = []
        for start in range(0, len(texts), 64):
            batch = encoder.encode(texts[start : start + 64])
            ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
            hidden = backbone.model(input_ids=ids, attention_mask=mask).last_hidden_state
            out.append(torch.nn.functional.normalize(masked_mean(hidden, mask), dim=-1))
        return torch.cat(out)

    x, y = embed(train_set.texts), torch.tensor(train_set.labels)
    weight = torch.zeros(x.shape[1], len(raw_labels), requires_grad=True)
    bias = torch.zeros(len(raw_labels), requires_grad=True)
    solver = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def objective():  # scikit-learn's: 0.5 |w|^2 + C * sum of log losses, C = 1
        solver.zero_grad()
        loss = 0.5 * weight.pow(2).sum() + torch.nn.functional.cross_entropy(
            x @ weight + bias, y, reduction="sum"
        )
        loss.backward()
        return loss

    solver.step(objective)
    predicted = (embed(test_set.texts) @ weight + bias).argmax(-1)
    return (predicted == torch.tensor(test_set.labels)).float().mean().item()


def train_ipt(task: str, train_file: Path, method: str, seed: int) -> dict:
    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint
    from ipt_edge_export.train import TrainOptions, accuracies, train

    spec = TASKS[task]
    budget = {"epochs": float(method[6:])} if method.startswith("epochs") else {"steps": int(method[5:])}
    with tempfile.TemporaryDirectory() as scratch:
        options = TrainOptions(
            train_file, Path(scratch) / "ckpt", text_column=spec["text_column"], labels=spec["labels"], seed=seed,
            **budget,
        )  # fmt: skip
        record = train(options, progress=lambda message: None)
        model, backbone = model_from_checkpoint(read_checkpoint(options.out_dir))
        encoder = BundleTokenizer(backbone.tokenizer_path, model.config.max_length)
        tests = {"test": Path(spec["folder"]) / "test.tsv"}
        tested = accuracies(model, encoder, tests, options, model.config.label_values)
    return {"steps": record["steps"], "train_seconds": record["train_seconds"], **tested}


def run(args: argparse.Namespace) -> None:
    for per_class in args.per_class:
        for index in range(args.subsets):
            with tempfile.TemporaryDirectory() as scratch:
                rows = subset(args.task, per_class, index, Path(scratch) / "train.tsv")
                for method in args.methods:
                    started = time.perf_counter()
                    if method == "probe":
                        report = {"test_accuracy": probe(args.task, rows, TASKS[args.task]["labels"])}
                    else:
                        report = train_ipt(args.task, rows, method, seed=index)
                    report.update(task=args.task, per_class=per_class, subset=index, method=method,
                                  seconds=round(time.perf_counter() - started, 1))  # fmt: skip
                    with args.results.open("a") as out:
                        out.write(json.dumps(report) + "\n")
                    print(json.dumps(report), flush=True)
    table(args.results)


def table(results: Path) -> None:
    runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["per_class"], r["method"]), []).append(100 * r["test_accuracy"])
    print("| task | rows per class | method | subsets | test accuracy, mean (min–max) |")
    print("|---|---|---|---|---|")
    for (task, per_class, method), values in sorted(groups.items()):
        print(f"| {task} | {per_class} | {method} | {len(values)} | {statistics.mean(values):.1f} "
              f"({min(values):.1f}–{max(values):.1f}) |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", nargs="?", default="run", choices=["run", "table"])
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--per-class", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    parser.add_argument("--subsets", type=int, default=3)
    parser.add_argument("--methods", type=lambda s: s.split(","), default=["epochs2", "steps300", "probe"])
    parser.add_argument("--results", type=Path, default=Path("docs/few-rows.jsonl"))
    args = parser.parse_args()
    table(args.results) if args.action == "table" else run(args)


if __name__ == "__main__":
    main()
