"""`ipt-edge predict`: answers stream batch by batch in input order, a bad line costs only itself,
`--json` has one shape whatever the tasks, and a bundle of pair and single-text tasks answers each
line with the tasks that fit it."""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ipt_edge import Bundle, Classifier
from ipt_edge.cli import app

from .tiny import PAIR_BUNDLE, SENTIMENT_BUNDLE, cli_runner

runner = cli_runner()  # stderr apart from stdout at every click version
CLI = [sys.executable, "-c", "from ipt_edge.cli import main; main()"]


def run(*args, stdin: bytes | str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def answer(bundle, task: str, text):
    """(label, probabilities) of one text under one task, run alone."""
    classifier = Classifier(Bundle.load(bundle), task)
    row = classifier.predict_proba([text])[0]
    return classifier.labels[int(row.argmax())], row


@pytest.fixture
def mixed(tmp_path):
    """One bundle of a single-text task ("sentiment") and a pair task ("entail"): the committed
    bundles share their backbone, tokenizer and embedding files, so the tasks combine as they are."""
    path = tmp_path / "mixed"
    shutil.copytree(SENTIMENT_BUNDLE, path)
    shutil.copytree(PAIR_BUNDLE / "tasks" / "entail", path / "tasks" / "entail")
    manifest = json.loads((path / "manifest.json").read_text())
    pair = json.loads((PAIR_BUNDLE / "manifest.json").read_text())
    shared = ["tokenizer.json", "embed.onnx", "encoder.onnx"]
    assert [pair["files"][f] for f in shared] == [manifest["files"][f] for f in shared]
    manifest["tasks"]["entail"] = pair["tasks"]["entail"]
    manifest["files"].update({f: entry for f, entry in pair["files"].items() if f.startswith("tasks/")})
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


# ---- a bad line costs only itself ---------------------------------------------------------------


def test_a_bad_stdin_line_is_named_and_the_others_are_answered(bundle):
    lines = [b"the film was good", b"", b"\xff\xfe broken", b"   ", b"a dull movie"]
    result = run("predict", "-b", bundle, stdin=b"\n".join(lines) + b"\n")
    assert result.exit_code == 2
    answered = [line.split("\t")[-1] for line in result.stdout.splitlines()]
    assert answered == ["the film was good", "a dull movie"]  # in input order, the bad ones left out
    assert "stdin line 2 is empty" in result.stderr
    assert "stdin line 3 is not valid UTF-8" in result.stderr
    assert "stdin line 4 is empty" in result.stderr
    assert "3 of 5 inputs were not answered" in result.stderr


def test_a_pair_line_with_a_blank_part_names_the_part(mixed):
    lines = "a good film\tit is good\ngood\t \n\tit is good\nno tab here\n"
    result = run("predict", "-b", mixed, "--task", "entail", stdin=lines)
    assert result.exit_code == 2
    assert [line.split("\t")[-2:] for line in result.stdout.splitlines()] == [["a good film", "it is good"]]
    assert result.stderr.splitlines()[:3] == [  # in input order, the bundle's refusals and predict's own
        "error: stdin line 2: TEXT_PAIR is empty",
        "error: stdin line 3: TEXT is empty",
        "error: stdin line 4: task 'entail' takes pairs, written TEXT<tab>TEXT_PAIR",
    ]


def test_a_bad_argument_is_named_and_the_others_are_answered(bundle):
    result = run("predict", "-b", bundle, "--json", "good", "", "dull")
    assert result.exit_code == 2
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["good", "dull"]
    assert "text 2 is empty" in result.stderr


def test_answers_stream_before_stdin_ends(bundle):
    """A whole chunk of lines is answered and flushed while stdin is still open: predict does not
    read everything first (so its memory does not grow with the input, either)."""
    from ipt_edge.cli.predict import STDIN_CHUNK

    process = subprocess.Popen(
        [*CLI, "predict", "-b", str(bundle)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        process.stdin.write(b"the film was good\n" * STDIN_CHUNK)
        process.stdin.flush()
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=120), "no answer while stdin stayed open"
        first = os.read(process.stdout.fileno(), 1 << 16).decode()
        assert first.startswith(answer(bundle, "sentiment", "the film was good")[0] + "\t")
        process.stdin.write(b"dull\n")
        process.stdin.close()
        rest = first + process.stdout.read().decode()
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
    assert len(rest.splitlines()) == STDIN_CHUNK + 1 and rest.endswith("\tdull\n")


def test_no_input_at_all_is_an_error(bundle):
    result = run("predict", "-b", bundle, stdin="")
    assert result.exit_code == 2
    assert "no texts" in result.stderr


# ---- --json: one shape ----------------------------------------------------------------------------


def test_json_has_the_tasks_object_with_one_task_too(bundle):
    result = run("predict", "-b", bundle, "--json", "the film was good")
    assert result.exit_code == 0, result.stderr
    label, row = answer(bundle, "sentiment", "the film was good")
    record = json.loads(result.stdout)
    assert list(record) == ["text", "tasks"] and list(record["tasks"]) == ["sentiment"]
    assert record["tasks"]["sentiment"]["label"] == label
    got = record["tasks"]["sentiment"]["probabilities"]
    assert list(got) == ["neg", "pos"]
    np.testing.assert_allclose(list(got.values()), row, atol=1e-6)


def test_json_writes_null_for_a_probability_that_is_not_a_number(bundle, tmp_path):
    from safetensors.numpy import load_file, save

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    relative = "tasks/sentiment/head.safetensors"
    head = load_file(copy / relative)
    head["bias"] = np.full_like(head["bias"], np.nan)
    data = save(head)
    (copy / relative).write_bytes(data)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("predict", "-b", copy, "--json", "good")
    assert result.exit_code == 0, result.stderr

    def refuse(name):
        raise AssertionError(f"{name} in the output")

    record = json.loads(result.stdout, parse_constant=refuse)
    assert record["tasks"]["sentiment"]["probabilities"] == {"neg": None, "pos": None}


def test_json_shows_a_pair_as_text_and_text_pair(pair_bundle):
    result = run("predict", "-b", pair_bundle, "--json", "the film was good\tit is good")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["text"] == "the film was good" and record["text_pair"] == "it is good"
    assert list(record["tasks"]) == ["entail"]


def test_the_json_line_is_the_record_a_server_would_build(multi):
    """The dict comes from the runtime (Bundle.predict_tasks(...).record(i)), not the CLI's printing."""
    result = run("predict", "-b", multi, "--json", "--task", "rating3", "--task", "mlp4", "good", "bad")
    assert result.exit_code == 0, result.stderr
    answers = Bundle.load(multi).predict_tasks(["good", "bad"], ["rating3", "mlp4"])
    expected = [json.dumps(answers.record(i), ensure_ascii=False) for i in range(2)]
    assert result.stdout.splitlines() == expected


# ---- a bundle of pair and single-text tasks ------------------------------------------------------


@pytest.mark.parametrize("choose", [[], ["--all-tasks"]])
def test_each_line_is_answered_by_the_tasks_that_fit_it(mixed, choose):
    result = run(
        "predict", "-b", mixed, "--json", *choose, "the film was good", "the film was good\tit is good"
    )
    assert result.exit_code == 0, result.stderr
    single, pair = [json.loads(line) for line in result.stdout.splitlines()]
    assert single["text"] == "the film was good" and list(single["tasks"]) == ["sentiment"]
    assert (pair["text"], pair["text_pair"]) == ("the film was good", "it is good")
    assert list(pair["tasks"]) == ["entail"]
    label, row = answer(mixed, "entail", ("the film was good", "it is good"))
    assert pair["tasks"]["entail"]["label"] == label
    np.testing.assert_allclose(list(pair["tasks"]["entail"]["probabilities"].values()), row, atol=1e-6)


def test_plain_lines_name_the_task_that_answered_on_a_mixed_bundle(mixed):
    result = run("predict", "-b", mixed, "dull", "the film was good\tit is good")
    assert result.exit_code == 0, result.stderr
    single, pair = result.stdout.splitlines()
    label, row = answer(mixed, "sentiment", "dull")
    assert single == f"sentiment:{label} {row.max():.4f}\tdull"
    label, row = answer(mixed, "entail", ("the film was good", "it is good"))
    assert pair == f"entail:{label} {row.max():.4f}\tthe film was good\tit is good"


def test_asking_for_a_pair_task_and_a_single_text_task_says_what_to_pass(mixed):
    result = run("predict", "-b", mixed, "--task", "sentiment", "--task", "entail", "good")
    assert result.exit_code == 2
    assert "'entail' takes text pairs and 'sentiment' single texts" in result.stderr
    assert "leave out --task" in result.stderr
    assert result.stdout == ""


def test_a_pair_task_asked_for_names_a_line_without_a_tab(mixed):
    result = run("predict", "-b", mixed, "--task", "entail", stdin="a good film\tit is good\nno tab here\n")
    assert result.exit_code == 2
    assert [line.split("\t")[-2:] for line in result.stdout.splitlines()] == [["a good film", "it is good"]]
    assert "stdin line 2: task 'entail' takes pairs, written TEXT<tab>TEXT_PAIR" in result.stderr
