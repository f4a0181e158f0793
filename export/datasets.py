"""Honest splits of the real data in ../shared/data, written as TSV files `ipt-edge train` reads.

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2
    python -m ipt_edge_export.datasets agnews ../shared/data/agnews -o work/agnews

SST-2 (GLUE) holds every phrase of each review sentence, and the shared train/dev files split those
phrases at random: dev shares sentences with train. Here dev and test are *full sentences* (rows
no other row contains), and every training row that is a word-span of a held-out sentence is
dropped, so nothing a held-out sentence says was seen in training.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from ipt_edge.tables import AtomicTableWriter, TableReader


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _spans(sentence: str) -> set[str]:
    words = sentence.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def sst2_sentence_split(
    sst2_dir: Path, out_dir: Path, test_size: int = 2000, dev_size: int = 500, seed: int = 0
) -> dict[str, int]:
    labelled: dict[str, str] = {}
    for name in ("train.tsv", "dev.tsv"):  # together: the GLUE SST-2 training set
        with TableReader(sst2_dir / name) as reader:
            for _, row in reader:
                labelled.setdefault(_normalise(row["sentence"]), row["label"])
    texts = sorted(labelled, key=lambda t: (-len(t), t))
    haystack = "\n".join(f" {t} " for t in texts)  # a row is a full sentence if no other contains it
    candidates = [t for t in texts if len(t.split()) >= 5]
    random.Random(seed).shuffle(candidates)
    held_out: list[str] = []
    for text in candidates:
        if haystack.count(f" {text} ") == 1:
            held_out.append(text)
            if len(held_out) == test_size + dev_size:
                break
    test, dev = held_out[:test_size], held_out[test_size:]
    seen = set().union(*(_spans(t) for t in held_out))
    train = [t for t in labelled if t not in seen]
    random.Random(seed).shuffle(train)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        with AtomicTableWriter(out_dir / name, ["sentence", "label"]) as writer:
            for text in rows:
                writer.write({"sentence": text, "label": labelled[text]})
    return {
        "train": len(train),
        "dev": len(dev),
        "test": len(test),
        "dropped": len(labelled) - len(train) - len(held_out),
    }


def agnews_split(
    agnews_dir: Path, out_dir: Path, test_size: int = 1900, dev_size: int = 500, seed: int = 0
) -> dict[str, int]:
    """AG News has no official split here: a seeded, fixed one (stratification is not needed at 10k)."""
    with TableReader(agnews_dir / "train.tsv") as reader:
        rows = [row for _, row in reader]
    random.Random(seed).shuffle(rows)
    parts = {
        "test.tsv": rows[:test_size],
        "dev.tsv": rows[test_size : test_size + dev_size],
        "train.tsv": rows[test_size + dev_size :],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with AtomicTableWriter(out_dir / name, ["text", "label"]) as writer:
            for row in part:
                writer.write({"text": _normalise(row["text"]), "label": row["label"]})
    return {name.removesuffix(".tsv"): len(part) for name, part in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=["sst2", "agnews"])
    parser.add_argument("source", type=Path, help="the dataset's folder in ../shared/data")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    csv.field_size_limit(1 << 24)
    split = sst2_sentence_split if args.dataset == "sst2" else agnews_split
    print(split(args.source, args.out, seed=args.seed))


if __name__ == "__main__":
    main()
