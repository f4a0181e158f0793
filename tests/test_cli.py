"""The ipt-edge command line, end to end and on bad input (exit code 2, a message, no partial output)."""

import csv
import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ipt_edge.classifier import Classifier
from ipt_edge.cli import app
from ipt_edge.cli.app import HELP_WIDTH
from ipt_edge.cli.score import score as score_command
from ipt_edge.tables import TableReader

from .tiny import cli_runner, pair_rows, sentiment_rows, write_tsv

runner = CliRunner()


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def printed_accuracy(output: str) -> tuple[float, int, int]:
    found = re.search(r"accuracy (\d\.\d{4}) \((\d+)/(\d+)\) against column 'label'", output)
    assert found, output
    return float(found[1]), int(found[2]), int(found[3])


def accuracy_of(out, gold_to_name: dict[str, str]) -> tuple[int, int]:
    """(correct, rows) recomputed from a scored file's `prediction` and gold `label` columns."""
    with TableReader(out) as reader:
        rows = [row for _, row in reader]
    return sum(row["prediction"] == gold_to_name[row["label"]] for row in rows), len(rows)


@pytest.mark.export
def test_train_export_score_info_end_to_end(tiny_backbone, sentiment_files, tmp_path):
    train, dev = sentiment_files
    checkpoint, bundle, out = tmp_path / "ckpt", tmp_path / "bundle", tmp_path / "scored.tsv"
    # --no-probe-floor: this test follows the default family end to end, not the probe it may lose to.
    result = run("train", train, "--dev", dev, "-o", checkpoint, "--backbone", tiny_backbone, "--no-probe-floor",
                 "--prompt-length", "4", "--epochs", "1", "--labels", "neg=negative,pos=positive")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tuned parameters" in result.output
    result = run("export", checkpoint, "-o", bundle, "--task", "sentiment")
    assert result.exit_code == 0, result.output
    assert "parity: max |logit difference|" in result.output
    result = run("score", dev, "-o", out, "-b", bundle, "--label-column", "label")
    assert result.exit_code == 0, result.output
    # gold labels 'neg'/'pos' compare to the names 'negative'/'positive' via the task's label values
    correct, rows = accuracy_of(out, {"neg": "negative", "pos": "positive"})
    assert printed_accuracy(result.output) == (round(correct / rows, 4), correct, rows)
    lines = out.read_text().splitlines()
    assert lines[0] == "text\tlabel\tprediction\tprob_negative\tprob_positive"
    assert len(lines) == 1 + len(dev.read_text().splitlines()) - 1
    result = run("info", bundle)
    assert result.exit_code == 0
    assert "sentiment: attn-prefix generator, P=4" in result.output  # the default kind
    assert "checksums: all 5 files match" in result.output


def test_score_prints_its_accuracy_against_the_label_column(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(40, seed=8))
    out = tmp_path / "out.tsv"
    result = run("score", source, "-o", out, "-b", bundle, "--label-column", "label")
    assert result.exit_code == 0, result.output
    correct, rows = accuracy_of(out, {"neg": "neg", "pos": "pos"})
    assert 0 < correct < rows == 40  # the committed task gets most, not all, right: a wrong count shows
    assert printed_accuracy(result.output) == (round(correct / rows, 4), correct, rows)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_score_writes_the_format_it_reads(bundle, tmp_path, suffix):
    rows = sentiment_rows(5, seed=3)
    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        texts = [f"{t}, really" for t, _ in rows]  # a comma: the field must be quoted
        source.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)))
    else:
        texts = [t for t, _ in rows]
        source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / f"out{suffix}"
    result = run("score", source, "-o", out, "-b", bundle)
    assert result.exit_code == 0, result.output
    expected = Classifier.load(bundle).predict_proba(texts)
    if suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in records] == [0, 1, 2, 3, 4]  # JSON numbers stay numbers
        assert all(isinstance(r["prob_pos"], float) for r in records)  # probabilities are JSON numbers
    else:
        with open(out, newline="", encoding="utf-8") as file:
            records = list(csv.DictReader(file))
        assert list(records[0]) == ["id", "text", "prediction", "prob_neg", "prob_pos"]
        assert [r["id"] for r in records] == ["0", "1", "2", "3", "4"]
        assert all(re.fullmatch(r"0\.\d{6}|1\.000000", r["prob_pos"]) for r in records)  # 6 decimals
    assert [r["text"] for r in records] == texts
    assert [r["prediction"] for r in records] == [["neg", "pos"][int(p.argmax())] for p in expected]
    np.testing.assert_allclose(
        [[float(r["prob_neg"]), float(r["prob_pos"])] for r in records], expected, atol=1e-6
    )


def test_score_counts_one_row_as_a_row(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 0, result.output
    assert f"scored 1 row -> {tmp_path / 'out.tsv'}" in result.output


def test_score_streams_in_chunks_and_keeps_row_order(bundle, tmp_path):
    rows = sentiment_rows(23, seed=4)
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], rows)
    out = tmp_path / "out.tsv"
    assert run("score", source, "-o", out, "-b", bundle, "--chunk-rows", "5").exit_code == 0
    scored = [line.split("\t")[0] for line in out.read_text().splitlines()[1:]]
    assert scored == [text for text, _ in rows]


def test_score_missing_column_names_it_and_writes_nothing(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["sentence"], [("good",)])
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert "no column 'text'" in result.output and "the file has: sentence" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv"]


def test_score_non_utf8_line_keeps_the_previous_output(bundle, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_bytes(b"text\ngood film\n\xff\xfe broken\n")
    out = tmp_path / "out.tsv"
    out.write_text("an earlier good result\n")
    result = run("score", source, "-o", out, "-b", bundle, "--chunk-rows", "1")
    assert result.exit_code == 2
    assert "in.tsv:3: not valid UTF-8" in result.output
    assert out.read_text() == "an earlier good result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv", "out.tsv"]


def test_score_empty_text_names_the_line(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], [("good", "pos"), ("  ", "neg")])
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert "in.tsv:3: column 'text' is empty" in result.output
    assert not (tmp_path / "out.tsv").exists()


def test_predict_reads_stdin_lines(bundle):
    result = runner.invoke(app, ["predict", "-b", str(bundle), "--json"], input="the film was good\ndull\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["the film was good", "dull"]
    assert set(records[0]["tasks"]["sentiment"]["probabilities"]) == {"neg", "pos"}


def test_predict_prints_label_probability_and_text_per_line(bundle):
    texts = ["the film was good", "it was a dull movie"]
    result = run("predict", "-b", bundle, *texts)
    assert result.exit_code == 0, result.output
    probabilities = Classifier.load(bundle).predict_proba(texts)
    assert result.stdout.splitlines() == [
        f"{['neg', 'pos'][int(p.argmax())]}\t{p.max():.4f}\t{text}"
        for text, p in zip(texts, probabilities, strict=True)
    ]  # label p<TAB>text


def test_the_bundle_may_come_from_ipt_edge_bundle(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./bundle to fall back on
    result = run("predict", "--json", "the film was good", env={"IPT_EDGE_BUNDLE": str(bundle)})
    assert result.exit_code == 0, result.output
    label = json.loads(result.stdout)["tasks"]["sentiment"]["label"]
    assert label == Classifier.load(bundle).predict(["the film was good"])[0]


def test_predict_reads_a_pair_as_premise_tab_hypothesis(pair_bundle):
    pairs = [("the film was good", "it is good"), ("the film was dull", "it is superb")]
    result = run("predict", "-b", pair_bundle, "--json", *(f"{a}\t{b}" for a, b in pairs))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = Classifier.load(pair_bundle).predict_proba(pairs)
    assert [(r["text"], r["text_pair"]) for r in records] == pairs
    got = [[r["tasks"]["entail"]["probabilities"][label] for label in ("differ", "same")] for r in records]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_predict_on_a_pair_task_refuses_a_text_without_a_tab(pair_bundle):
    result = run("predict", "-b", pair_bundle, "the film was good")
    assert result.exit_code == 2
    assert "takes pairs, written TEXT<tab>TEXT_PAIR" in result.output


def test_score_text_pair_column_scores_pairs(pair_bundle, tmp_path):
    rows = pair_rows(6, seed=10)
    source = write_tsv(tmp_path / "in.tsv", ["premise", "hypothesis", "label"], rows)
    out = tmp_path / "out.jsonl"
    result = run("score", source, "-o", out, "-b", pair_bundle, "--text-column", "premise",
                 "--text-pair-column", "hypothesis")  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["premise"], r["hypothesis"]) for r in records] == [(a, b) for a, b, _ in rows]
    expected = Classifier.load(pair_bundle).predict_proba([(a, b) for a, b, _ in rows])
    np.testing.assert_allclose([[r["prob_differ"], r["prob_same"]] for r in records], expected, atol=1e-6)


def test_score_names_the_column_of_a_refused_pair_text(pair_bundle, tmp_path):
    rows = [("a good film", "it is good", "same"), ("a film", "\u3000", "same")]
    source = write_tsv(tmp_path / "in.tsv", ["premise", "hypothesis", "label"], rows)
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", pair_bundle, "--text-column", "premise",
                 "--text-pair-column", "hypothesis")  # fmt: skip
    assert result.exit_code == 2
    assert "in.tsv:3: column 'hypothesis' is empty" in result.output


def test_score_on_a_pair_task_without_text_pair_column_says_to_pass_it(pair_bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "hypothesis"], [("the film was good", "it is good")])
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", pair_bundle)
    assert result.exit_code == 2
    assert "takes text pairs: pass --text-pair-column" in result.output


@pytest.mark.export
def test_train_text_pair_column_trains_a_pair_task(tiny_backbone, tmp_path):
    from ipt_edge_export.checkpoint import read_checkpoint

    rows = pair_rows(32, seed=11)
    train = write_tsv(tmp_path / "pairs.tsv", ["premise", "hypothesis", "label"], rows)
    checkpoint, bundle = tmp_path / "ckpt", tmp_path / "bundle"
    result = run("train", train, "-o", checkpoint, "--backbone", tiny_backbone, "--text-column", "premise",
                 "--text-pair-column", "hypothesis", "--generator", "prefix", "--prompt-length", "2",
                 "--epochs", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_checkpoint(checkpoint).config.text_pair
    assert run("export", checkpoint, "-o", bundle).exit_code == 0
    assert Classifier.load(bundle).task.text_pair


def test_predict_reports_truncation(bundle):
    result = run("predict", "-b", bundle, " ".join(["good film"] * 200))
    assert result.exit_code == 0
    assert "1 text(s) were longer than" in result.output


def test_predict_empty_text_fails_after_answering_the_others(bundle):
    result = cli_runner().invoke(app, ["predict", "-b", str(bundle), "good", ""])
    assert result.exit_code == 2
    assert "text 2 is empty" in result.stderr
    assert [line.split("\t")[-1] for line in result.stdout.splitlines()] == ["good"]


def test_predict_on_a_corrupt_bundle_fails_clearly(bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "embed.onnx").write_bytes(b"garbage")
    result = run("predict", "-b", copy, "good")
    assert result.exit_code == 2
    assert "embed.onnx" in result.output and "the manifest says" in result.output


@pytest.mark.export
def test_train_refuses_a_label_the_task_does_not_know(tiny_backbone, sentiment_files, tmp_path):
    train, _ = sentiment_files
    dev = write_tsv(tmp_path / "dev.tsv", ["text", "label"], [("good", "pos"), ("meh", "neutral")])
    result = run("train", train, "--dev", dev, "-o", tmp_path / "ckpt", "--backbone", tiny_backbone)
    assert result.exit_code == 2
    assert "dev.tsv:3: label 'neutral' is not one of the task's labels ['neg', 'pos']" in result.output
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.export
def test_train_missing_column_names_the_option(tiny_backbone, sentiment_files, tmp_path):
    train, _ = sentiment_files
    result = run(
        "train", train, "-o", tmp_path / "ckpt", "--backbone", tiny_backbone, "--text-column", "review"
    )
    assert result.exit_code == 2
    assert "no column 'review' (asked for by --text-column)" in result.output


def test_train_without_the_export_extra_says_how_to_install_it(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from ipt_edge.cli import app\n"
        f"app(['train', 'x.tsv', '-o', {str(tmp_path / 'c')!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert "pip install 'ipt-edge[export]'" in result.stderr


@pytest.mark.export
def test_train_can_start_from_a_pretrained_generator(tiny_backbone, sentiment_files, checkpoints, tmp_path):
    from safetensors.numpy import load_file

    train, _ = sentiment_files
    out = tmp_path / "ckpt"
    result = run("train", train, "-o", out, "--backbone", tiny_backbone, "--prompt-length", "4", "--epochs", "0.01",
                 "--lr", "1e-12", "--generator", "mlp-prefix", "--init-generator", checkpoints["mlp-prefix"],
                 "--no-probe-floor")  # fmt: skip
    assert result.exit_code == 0, result.output
    pretrained = load_file(checkpoints["mlp-prefix"] / "weights.safetensors")
    started = load_file(out / "weights.safetensors")
    assert np.abs(pretrained["generator.up.weight"]).max() > 1e-3  # trained away from its zero start
    names = sorted(name for name in pretrained if name.startswith("generator."))
    assert "generator.base" in names and sorted(n for n in started if n.startswith("generator.")) == names
    for name in names:
        np.testing.assert_allclose(started[name], pretrained[name], atol=1e-6, err_msg=name)


@pytest.mark.export
def test_pretrained_generator_of_another_kind_is_refused(
    tiny_backbone, sentiment_files, checkpoints, tmp_path
):
    train, _ = sentiment_files
    result = run("train", train, "-o", tmp_path / "c", "--backbone", tiny_backbone, "--prompt-length", "4",
                 "--generator", "cnn-prefix", "--init-generator", checkpoints["mlp-prefix"])  # fmt: skip
    assert result.exit_code == 2
    assert "its generator is mlp-prefix with P=4; this task trains cnn-prefix with P=4" in result.output


def help_without_a_terminal(command: str, **env: str) -> list[str]:
    """`ipt-edge COMMAND --help` as CI logs or a script's pipe get it: no standard stream is a
    terminal, and no width is set unless `env` sets one."""
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    result = subprocess.run([sys.executable, "-m", "ipt_edge", command, "--help"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, env={**environ, **env}, check=True)  # fmt: skip
    return [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in result.stdout.splitlines()]


def test_help_without_a_terminal_keeps_its_lines_whole():
    # Rich falls back to 80 columns without a terminal, which broke the help's own 100-column lines
    lines = help_without_a_terminal("score")
    written = [line.strip() for line in inspect.cleandoc(score_command.__doc__).splitlines() if line.strip()]
    assert max(map(len, written)) > 80  # what there is to break
    # typer < 0.16 reflows a paragraph's lines, so the test is the width, not the docstring's breaks
    assert 80 < max(map(len, lines)) <= HELP_WIDTH


def test_help_follows_a_width_the_user_sets():
    assert max(len(line) for line in help_without_a_terminal("score", COLUMNS="70")) == 70
