"""Rebuild every committed test bundle from the tiny random BERT (needs the export extra):

    python tests/bundles/make.py

Seeds are fixed (the backbone's, the data's and training's) and training runs on one thread, so a
rerun with the same torch gives the same weights. Each bundle is built in a temporary folder and
then replaces tests/bundles/<name>/.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.tiny import (
    BUNDLES,
    MULTI_TASKS,
    pair_rows,
    rating_rows,
    sentiment_rows,
    train_checkpoint,
    write_backbone,
    write_tsv,
)

# Enough steps that the tasks separate their classes (tests check rows of different labels), few
# enough that the whole script runs in about a minute on two cores.
TRAINING = {"epochs": 30.0, "batch_size": 16, "lr": 1e-2, "threads": 1, "seed": 0}


def quiet(message: str) -> None:
    pass


def build(name: str, work: Path, tasks: dict[str, dict]) -> Path:
    """Train each task (name -> train options incl. train/dev files) and export all into one bundle."""
    from ipt_edge_export.onnx_export import export_checkpoint

    stage = work / f"bundle-{name}"
    for task, options in tasks.items():
        options = dict(options)
        train, dev = options.pop("train"), options.pop("dev")
        checkpoint = train_checkpoint(work / "tiny-bert", train, dev, work / f"ckpt-{name}-{task}", **options)
        # The fused route (export --optimize): runtime tests without torch then run that graph form,
        # and the tests that export run the default, unfused one.
        export_checkpoint(checkpoint, stage, task=task, optimize=True, log=quiet)
        print(f"{name}: {task} exported", flush=True)
    target = BUNDLES / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(stage, target)
    return target


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        write_backbone(work / "tiny-bert")  # the folder's name is the backbone's name in manifests
        sentiment = (
            write_tsv(work / "train.tsv", ["text", "label"], sentiment_rows(256, seed=1)),
            write_tsv(work / "dev.tsv", ["text", "label"], sentiment_rows(24, seed=2)),
        )
        rating = (
            write_tsv(work / "rating-train.tsv", ["text", "label"], rating_rows(384, seed=3)),
            write_tsv(work / "rating-dev.tsv", ["text", "label"], rating_rows(24, seed=4)),
        )
        pairs = (
            write_tsv(work / "pair-train.tsv", ["premise", "hypothesis", "label"], pair_rows(384, seed=5)),
            write_tsv(work / "pair-dev.tsv", ["premise", "hypothesis", "label"], pair_rows(24, seed=6)),
        )
        build(
            "sentiment",
            work,
            {"sentiment": {**TRAINING, "generator": "mlp-prefix", "prompt_length": 4, "labels": "neg,pos",
                           "train": sentiment[0], "dev": sentiment[1]}},
        )  # fmt: skip
        multi = {}
        for task, (generator, p, extra) in MULTI_TASKS.items():
            train, dev = rating if extra.get("labels") == "low,mid,high" else sentiment
            labels = {} if "labels" in extra else {"labels": "neg,pos"}
            multi[task] = {**TRAINING, "generator": generator, "prompt_length": p, **labels, **extra,
                           "train": train, "dev": dev}  # fmt: skip
        build("multi", work, multi)
        build(
            "pair",
            work,
            {"entail": {**TRAINING, "generator": "lookup-prefix", "prompt_length": 4, "labels": "differ,same",
                        "text_column": "premise", "text_pair_column": "hypothesis",
                        "train": pairs[0], "dev": pairs[1]}},
        )  # fmt: skip


if __name__ == "__main__":
    main()
