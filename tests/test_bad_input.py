"""The bad-input contract: exit 0 done, 2 bad input (the message names the file, line or field),
never a traceback; nothing half-written remains and a previous output stays byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ipt_edge.classifier import Classifier
from ipt_edge.cli import app
from ipt_edge.errors import BundleError

from .tiny import sentiment_rows, write_tsv

runner = CliRunner()
CLI = [sys.executable, "-c", "from ipt_edge.cli import main; main()"]


def run(*args, **kwargs):
    result = runner.invoke(app, [str(a) for a in args], **kwargs)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def retag(bundle: Path, relative: str, data: bytes) -> None:
    """Replace a bundle file and update its size and sha256, as a careless or hostile edit would."""
    (bundle / relative).write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def copy(bundle, tmp_path):
    target = tmp_path / "bundle-copy"
    shutil.copytree(bundle, target)
    return target


# ---- train: an existing output is never lost ---------------------------------------------------


@pytest.mark.export
def test_train_refuses_an_existing_folder_and_keeps_its_files(tiny_backbone, sentiment_files, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run("train", sentiment_files[0], "-o", out, "--backbone", tiny_backbone)
    assert result.exit_code == 2
    assert "already exists; pass --replace" in result.output
    assert (out / "notes.txt").read_text() == "mine" and listing(tmp_path) == ["results"]


@pytest.mark.export
def test_train_refuses_an_existing_file(tiny_backbone, sentiment_files, tmp_path):
    out = tmp_path / "model.bin"
    out.write_bytes(b"precious")
    result = run("train", sentiment_files[0], "-o", out, "--backbone", tiny_backbone)
    assert result.exit_code == 2
    assert out.read_bytes() == b"precious" and listing(tmp_path) == ["model.bin"]


@pytest.mark.export
def test_train_replace_never_deletes_a_folder_that_is_not_a_checkpoint(
    tiny_backbone, sentiment_files, tmp_path
):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run("train", sentiment_files[0], "-o", out, "--replace", "--backbone", tiny_backbone)
    assert result.exit_code == 2
    assert "is not a checkpoint" in result.output
    assert (out / "notes.txt").read_text() == "mine" and listing(tmp_path) == ["results"]


@pytest.mark.export
def test_train_replace_swaps_in_a_complete_checkpoint(tiny_backbone, sentiment_files, checkpoints, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(checkpoints["mlp-prefix"], out)
    args = ["train", sentiment_files[0], "-o", out, "--replace", "--backbone", tiny_backbone,
            "--generator", "prefix", "--prompt-length", "2", "--epochs", "0.1"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["ipt"]["generator"] == "prefix"
    assert listing(tmp_path) == ["ckpt"]  # no temporary or .old folder left


@pytest.mark.export
def test_train_prints_the_labels_it_found_with_counts(tiny_backbone, tmp_path):
    rows = [*sentiment_rows(20, seed=5), ("good film", "pso")]  # a typo'd label
    data = write_tsv(tmp_path / "train.tsv", ["text", "label"], rows)
    result = run("train", data, "-o", tmp_path / "c", "--backbone", tiny_backbone, "--epochs", "0.05",
                 "--prompt-length", "2", "--generator", "prefix")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "labels found in" in result.output and "'pso' x1" in result.output


@pytest.mark.export
def test_train_with_labels_refuses_any_other_label(tiny_backbone, tmp_path):
    rows = [*sentiment_rows(20, seed=5), ("good film", "pso")]
    data = write_tsv(tmp_path / "train.tsv", ["text", "label"], rows)
    result = run("train", data, "-o", tmp_path / "c", "--backbone", tiny_backbone, "--labels", "neg,pos")
    assert result.exit_code == 2
    assert "train.tsv:22: label 'pso' is not one of the task's labels" in result.output


@pytest.mark.export
@pytest.mark.parametrize("option", ["--epochs", "--lr", "--batch-size", "--prompt-length", "--max-length"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_train_validates_numeric_options(tiny_backbone, sentiment_files, tmp_path, option, value):
    result = run(
        "train", sentiment_files[0], "-o", tmp_path / "c", "--backbone", tiny_backbone, option, value
    )
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "c").exists()


# ---- signals: SIGTERM behaves like Ctrl-C --------------------------------------------------------


def _wait_for(predicate, process, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("stop", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130)],  # SIGINT: what Ctrl-C sends
    ids=["sigterm-143", "ctrl-c-130"],
)
def test_a_stop_during_score_exits_with_its_code_and_leaves_the_old_output(bundle, tmp_path, stop, code):
    rows = sentiment_rows(200, seed=6) * 150  # 30,000 rows: seconds of work
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], rows)
    out = tmp_path / "out.tsv"
    out.write_text("an earlier good result\n")
    process = subprocess.Popen([*CLI, "score", str(source), "-o", str(out), "-b", str(bundle),
                                "--chunk-rows", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    # chunks are committed to a hidden sidecar (.out.tsv.ipt-edge-resume/) until the output is complete
    _wait_for(lambda: any(p.name.startswith(".out.tsv") for p in tmp_path.iterdir()), process)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert f"stopped by {stop.name}".encode() in stderr and b"Traceback" not in stderr
    assert out.read_text() == "an earlier good result\n"
    assert listing(tmp_path) == ["in.tsv", "out.tsv"]


@pytest.mark.export
def test_sigterm_during_train_leaves_nothing(tiny_backbone, tmp_path):
    data = write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(400, seed=7))
    out = tmp_path / "ckpt"
    process = subprocess.Popen([*CLI, "train", str(data), "-o", str(out), "--backbone", str(tiny_backbone),
                                "--epochs", "200", "--generator", "prefix", "--prompt-length", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    for line in process.stderr:  # wait until the model is built and steps are running
        if b"tuned parameters" in line:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert listing(tmp_path) == ["train.tsv"]


@pytest.mark.export
def test_sigterm_during_export_leaves_nothing(checkpoints, tmp_path):
    out = tmp_path / "bundle"
    process = subprocess.Popen([*CLI, "export", str(checkpoints["lstm-prefix"]), "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for(lambda: any(p.name.endswith(".partial") for p in tmp_path.iterdir()), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert listing(tmp_path) == []


# ---- score: data kept as it was -----------------------------------------------------------------


def test_score_keeps_jsonl_values_and_types(bundle, tmp_path):
    records = [
        {"id": 7, "text": "good film", "ok": True, "note": None, "tags": ["a", {"b": 1.5}], "x": -0.25},
        {"id": 8, "text": "dull plot", "ok": False, "note": "é\u202e", "tags": [], "x": 1e300},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    result = run("score", source, "-o", out, "-b", bundle)
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    for record, row in zip(records, scored, strict=True):
        assert {k: row[k] for k in record} == record
        assert isinstance(row["prob_pos"], float) and row["prediction"] in ("neg", "pos")


def test_score_keeps_jsonl_keys_first_seen_after_row_one(bundle, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"text": "dull", "late": 3}\n')
    out = tmp_path / "out.jsonl"
    assert run("score", source, "-o", out, "-b", bundle).exit_code == 0
    assert json.loads(out.read_text().splitlines()[1])["late"] == 3


def test_score_to_csv_refuses_a_key_the_first_row_lacked(bundle, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"text": "dull", "late": 3}\n')
    result = run("score", source, "-o", tmp_path / "out.csv", "-b", bundle)
    assert result.exit_code == 2
    assert "['late']" in result.output and listing(tmp_path) == ["in.jsonl"]


def test_duplicated_header_name_is_refused(bundle, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text,id,id\ngood,1,2\n")
    result = run("score", source, "-o", tmp_path / "out.csv", "-b", bundle)
    assert result.exit_code == 2
    assert "in.csv:1: column 'id' appears twice" in result.output


def test_duplicated_jsonl_key_is_refused(bundle, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good", "text": "bad"}\n')
    result = run("score", source, "-o", tmp_path / "out.jsonl", "-b", bundle)
    assert result.exit_code == 2
    assert "in.jsonl:1: invalid JSON (key 'text' appears twice)" in result.output


def test_score_refuses_a_gold_label_the_task_does_not_know(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], [("good", "pos"), ("dull", "neutral")])
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle, "--label-column", "label")
    assert result.exit_code == 2
    assert "in.tsv:3: label 'neutral' is not one of" in result.output
    assert listing(tmp_path) == ["in.tsv"]


def test_jsonl_row_without_the_text_key_names_the_line(bundle, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"review": "dull"}\n')
    result = run("score", source, "-o", tmp_path / "out.jsonl", "-b", bundle)
    assert result.exit_code == 2
    assert "in.jsonl:2: no column 'text'" in result.output


def test_jsonl_text_that_is_not_a_string_names_the_line(bundle, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"text": 7}\n')
    result = run("score", source, "-o", tmp_path / "out.jsonl", "-b", bundle)
    assert result.exit_code == 2
    assert "in.jsonl:2: column 'text' should be a string, got 7" in result.output


def test_nan_in_jsonl_input_is_refused(bundle, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good", "x": NaN}\n')
    result = run("score", source, "-o", tmp_path / "out.jsonl", "-b", bundle)
    assert result.exit_code == 2
    assert "in.jsonl:1: invalid JSON (NaN is not valid JSON)" in result.output


def test_a_field_over_the_csv_modules_default_limit_is_scored(bundle, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text\n" + " ".join(["good"] * 40_000) + "\n")  # 200,000 characters
    result = run("score", source, "-o", tmp_path / "out.csv", "-b", bundle)
    assert result.exit_code == 0, result.output
    assert "1 row(s) were longer than" in result.output


@pytest.mark.parametrize("command", ["score", "predict"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_batch_size_must_be_positive(bundle, tmp_path, command, value):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    args = [source, "-o", tmp_path / "out.tsv"] if command == "score" else ["good"]
    result = run(command, *args, "-b", bundle, "--batch-size", value)
    assert result.exit_code == 2
    assert "--batch-size" in result.output


def test_classifier_refuses_a_batch_size_below_one(bundle):
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        Classifier.load(bundle).predict(["good"], batch_size=0)


def test_output_that_is_a_folder_is_refused(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    folder = tmp_path / "outdir.tsv"
    folder.mkdir()
    result = run("score", source, "-o", folder, "-b", bundle)
    assert result.exit_code == 2
    assert "is a folder" in result.output and listing(folder) == []


def denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_unreadable_input_is_a_clear_error(bundle, tmp_path, monkeypatch):
    import ipt_edge.tables

    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    monkeypatch.setattr(ipt_edge.tables, "open", denied, raising=False)
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert "in.tsv: cannot read it (Permission denied)" in result.output


def test_unwritable_output_is_a_clear_error(bundle, tmp_path, monkeypatch):
    import ipt_edge.tables

    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    monkeypatch.setattr(ipt_edge.tables.tempfile, "mkstemp", denied)
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert "out.tsv: cannot write it (Permission denied)" in result.output


def test_outputs_respect_the_umask(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    previous = os.umask(0o022)
    try:
        assert run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle).exit_code == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "out.tsv").stat().st_mode & 0o777 == 0o644


def test_predict_refuses_an_argument_that_is_not_utf8(bundle):
    result = subprocess.run([*CLI, "predict", "-b", str(bundle), b"good \xff film"], capture_output=True)
    assert result.returncode == 2
    assert b"text 1 is not valid UTF-8" in result.stderr and b"Traceback" not in result.stderr


def test_threads_variable_that_is_not_a_number_is_named(bundle, monkeypatch):
    monkeypatch.setenv("IPT_EDGE_THREADS", "abc")
    result = run("predict", "-b", bundle, "good")
    assert result.exit_code == 2
    assert "IPT_EDGE_THREADS should be a whole number" in result.output


def test_predict_json_writes_null_for_a_probability_that_is_not_a_number(copy):
    from safetensors.numpy import load_file, save

    head = load_file(copy / "tasks/sentiment/head.safetensors")
    head["bias"] = np.full_like(head["bias"], np.nan)
    retag(copy, "tasks/sentiment/head.safetensors", save(head))
    result = run("predict", "-b", copy, "--json", "good")
    assert result.exit_code == 0, result.output

    def refuse(name):
        raise AssertionError(f"{name} in the output")

    record = json.loads(result.stdout, parse_constant=refuse)
    assert set(record["tasks"]["sentiment"]["probabilities"].values()) == {None}


# ---- bundles: a damaged file is a BundleError naming it ------------------------------------------


@pytest.mark.parametrize(
    "relative", ["encoder.onnx", "embed.onnx", "tasks/sentiment/generator.onnx", "tokenizer.json",
                 "tasks/sentiment/head.safetensors"]
)  # fmt: skip
def test_corrupt_bytes_with_a_matching_checksum_name_the_file(copy, relative):
    data = bytearray((copy / relative).read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # the first half zeroed
    retag(copy, relative, bytes(data))
    with pytest.raises(BundleError, match=relative.split("/")[-1]):
        Classifier.load(copy)
    result = run("predict", "-b", copy, "good")
    assert result.exit_code == 2 and relative in result.output


def test_a_graph_with_external_data_is_refused(copy):
    onnx = pytest.importorskip("onnx", reason="writing a graph with external data needs onnx (export extra)")

    relative = "tasks/sentiment/generator.onnx"
    model = onnx.load(copy / relative)
    onnx.save_model(
        model, copy / relative, save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    retag(copy, relative, (copy / relative).read_bytes())
    with pytest.raises(BundleError, match="external data"):
        Classifier.load(copy)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["backbone"].update(hidden_size=10**30),
        lambda m: m["backbone"].update(num_layers=10**12),
        lambda m: m["tasks"]["sentiment"].update(prompt_length=2**40),
        lambda m: m["backbone"].update(parameters=0),
        lambda m: m["tasks"]["sentiment"].update(int8={"rows": 3}),
        lambda m: m["tasks"]["sentiment"].update(max_length=-5),
    ],
)
def test_absurd_manifest_numbers_are_refused(copy, change):
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=r"manifest\.json"):
        Classifier.load(copy)
    for command in (["info", copy], ["predict", "-b", copy, "good"]):
        assert run(*command).exit_code == 2


def test_an_integer_of_thousands_of_digits_is_refused(copy):
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text.replace('"num_layers": 2', '"num_layers": ' + "9" * 5000))
    with pytest.raises(BundleError, match="manifest"):
        Classifier.load(copy)


def test_a_task_needing_more_positions_than_the_backbone_has_is_refused_at_load(copy):
    edit_manifest(copy, lambda m: m["tasks"]["sentiment"].update(max_length=65))  # > 64 positions
    with pytest.raises(BundleError, match="needs 65 positions"):
        Classifier.load(copy)
    edit_manifest(copy, lambda m: m["tasks"]["sentiment"].update(max_length=64))  # the prefix takes none
    assert Classifier.load(copy).predict(["good"]) in (["neg"], ["pos"])


def test_score_creates_a_missing_output_folder(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [("good",)])
    result = run("score", source, "-o", tmp_path / "new" / "deeper" / "out.tsv", "-b", bundle)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "deeper" / "out.tsv").read_text().startswith("text\tprediction")
    assert listing(tmp_path / "new" / "deeper") == ["out.tsv"]


@pytest.mark.export
def test_train_refuses_an_output_folder_it_cannot_write_before_training(
    tiny_backbone, sentiment_files, tmp_path
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run("train", sentiment_files[0], "-o", blocker / "ckpt", "--backbone", tiny_backbone)
    assert result.exit_code == 2
    assert "cannot write a checkpoint there" in result.output and "tuned parameters" not in result.output


@pytest.mark.parametrize("body", ['"a quote left open\n', '"closed" then more\n'])
def test_malformed_csv_quoting_is_refused_naming_the_line(bundle, tmp_path, body):
    source = tmp_path / "in.csv"
    source.write_text("text\ngood\n" + body)
    result = run("score", source, "-o", tmp_path / "out.csv", "-b", bundle)
    assert result.exit_code == 2
    assert "in.csv:3:" in result.output and listing(tmp_path) == ["in.csv"]
