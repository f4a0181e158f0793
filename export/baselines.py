"""Reference points for a task, on the same backbone, data and dev selection as `ipt-edge train`:

- probe:    a linear head on the frozen backbone's pooled states, no prompt (the floor);
- finetune: every backbone weight trained with the head (the ceiling IPT aims to get close to).

    python -m ipt_edge_export.baselines probe work/sst2/train.tsv --dev work/sst2/dev.tsv \\
        --test work/sst2/test.tsv --text-column sentence
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from ipt_edge.tokenizer import BundleTokenizer
from ipt_edge_export.checkpoint import load_backbone
from ipt_edge_export.model import pool
from ipt_edge_export.train import TrainOptions, accuracies, fit, load_task_data, resolve_device


class PooledClassifier(nn.Module):
    """Backbone (frozen or not) -> mean of the real tokens' states -> linear head."""

    def __init__(self, hf_model, num_labels: int, pooling: str, train_backbone: bool):
        super().__init__()
        self.backbone = hf_model
        for parameter in hf_model.parameters():
            parameter.requires_grad_(train_backbone)
        self.train_backbone = train_backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(hf_model.config.hidden_size, num_labels)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()
        return self

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))


def run(method: str, options: TrainOptions, tests: dict[str, Path]) -> dict:
    """Train, select on dev, and report `<name>_accuracy` for every labelled file in `tests`."""
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    train_set, dev_set, raw_labels, _ = load_task_data(options)
    backbone = load_backbone(options.backbone)
    model = PooledClassifier(
        backbone.model, len(raw_labels), options.pooling, train_backbone=method == "finetune"
    )
    model.to(resolve_device(options.device))  # fit and evaluate run where the model is
    encoder = BundleTokenizer(backbone.tokenizer_path, options.max_length)
    tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = fit(model, encoder, train_set, dev_set, options, snapshot=model.state_dict)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    report = {
        "method": method,
        "tuned_parameters": tuned,
        "tuned_share": tuned / backbone.identity["parameters"],
        "train_rows": len(train_set.texts),
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "dev_accuracy": result.best_dev,
        "seed": options.seed,
    }
    report.update(accuracies(model, encoder, tests, options, raw_labels))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("method", choices=["probe", "finetune"])
    parser.add_argument("train_file", type=Path)
    parser.add_argument("--dev", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--text-pair-column")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, help="default: 1e-3 probe, 3e-5 finetune")
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    options = TrainOptions(
        train_file=args.train_file, out_dir=Path("."), dev_file=args.dev, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column, backbone=args.backbone,
        epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr or (1e-3 if args.method == "probe" else 3e-5),
        max_train_rows=args.max_train_rows, eval_every=args.eval_every, seed=args.seed, threads=args.threads,
    )  # fmt: skip
    print(json.dumps(run(args.method, options, {"test": args.test} if args.test else {})))


if __name__ == "__main__":
    main()
