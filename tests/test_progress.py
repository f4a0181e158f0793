"""Long commands show life without a terminal: a plain progress line every IPT_EDGE_PROGRESS_SECONDS
(default 30) when stderr is not a terminal (a log file, CI, nohup), a live bar when it is."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from ipt_edge.progress import Progress

from .conftest import sentiment_rows, write_tsv

CLI = [sys.executable, "-c", "from ipt_edge.cli import main; main()"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_line_reports_rows_rate_eta_and_status(monkeypatch):
    monkeypatch.setenv("IPT_EDGE_PROGRESS_SECONDS", "0")
    log = io.StringIO()
    with Progress("training", total=10, unit="steps", stream=log) as progress:
        progress.update(4, rows=128, status="loss 0.4123")
    line = log.getvalue().strip()
    assert re.fullmatch(
        r"training: 128 rows, 4/10 steps \(40%\), [\d,.]+ rows/s, ETA \dm\d\ds, loss 0\.4123", line
    )


def test_lines_are_spaced_by_the_interval(monkeypatch):
    monkeypatch.setenv("IPT_EDGE_PROGRESS_SECONDS", "3600")
    log = io.StringIO()
    with Progress("scoring", unit="bytes", stream=log) as progress:
        for done in range(1, 100):
            progress.update(done, total=100, rows=done)
    assert log.getvalue() == ""  # an hour has not passed


def test_a_line_that_stays_is_written_in_both_modes(monkeypatch):
    monkeypatch.setenv("IPT_EDGE_PROGRESS_SECONDS", "3600")
    for stream in (io.StringIO(), Terminal()):
        with Progress("training", total=2, unit="steps", stream=stream) as progress:
            progress.line("step 1/2: dev accuracy 0.5000")
        assert "step 1/2: dev accuracy 0.5000" in stream.getvalue()


def test_on_a_terminal_the_bar_draws_instead_of_lines(monkeypatch):
    monkeypatch.setenv("IPT_EDGE_PROGRESS_SECONDS", "0")
    stream = Terminal()
    with Progress("training", total=4, unit="steps", stream=stream) as progress:
        progress.update(2, rows=64, status="loss 0.5")
    assert "training: 64 rows" not in stream.getvalue()  # the plain line is for logs only


def test_an_interval_that_is_not_a_number_is_named(monkeypatch):
    monkeypatch.setenv("IPT_EDGE_PROGRESS_SECONDS", "soon")
    with pytest.raises(
        ValueError, match=r"IPT_EDGE_PROGRESS_SECONDS must be a number of seconds >= 0, got .soon."
    ):
        Progress("scoring")


def test_score_logs_progress_lines_when_stderr_is_a_file(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(300, seed=3))
    env = {**os.environ, "IPT_EDGE_PROGRESS_SECONDS": "0"}
    with open(tmp_path / "log.txt", "w") as log:
        result = subprocess.run(
            [*CLI, "score", str(source), "-o", str(tmp_path / "out.tsv"), "-b", str(bundle), "--chunk-rows", "100"],
            stderr=log, env=env, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 0
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in lines if line.startswith("scoring:")] == [
        "scoring: 100 rows",
        "scoring: 200 rows",
        "scoring: 300 rows",
    ]


@pytest.mark.export
def test_train_logs_rows_rate_eta_and_loss_when_stderr_is_a_file(tiny_backbone, sentiment_files, tmp_path):
    train, _ = sentiment_files
    env = {**os.environ, "IPT_EDGE_PROGRESS_SECONDS": "0"}
    with open(tmp_path / "log.txt", "w") as log:
        result = subprocess.run(
            [*CLI, "train", str(train), "-o", str(tmp_path / "ckpt"), "--backbone", str(tiny_backbone),
             "--generator", "mlp-prefix", "--prompt-length", "2", "--epochs", "1", "--batch-size", "32",
             "--recipe", "cross-entropy"],
            stderr=log, env=env, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 0
    lines = [line for line in (tmp_path / "log.txt").read_text().splitlines() if line.startswith("training:")]
    assert lines, (tmp_path / "log.txt").read_text()
    assert re.fullmatch(
        r"training: \d+ rows, 3/3 steps \(100%\), [\d,.]+ rows/s, ETA 0m00s, loss \d\.\d{4}", lines[-1]
    )


@pytest.mark.parametrize("value", ["soon", "nan", "-1"])
def test_score_with_a_bad_progress_interval_exits_2_naming_it(bundle, tmp_path, monkeypatch, value):
    from typer.testing import CliRunner

    from ipt_edge.cli import app

    monkeypatch.setenv("IPT_EDGE_PROGRESS_SECONDS", value)
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(3, seed=3))
    result = CliRunner().invoke(
        app, ["score", str(source), "-o", str(tmp_path / "out.tsv"), "-b", str(bundle)]
    )
    assert result.exit_code == 2
    assert "IPT_EDGE_PROGRESS_SECONDS must be a number of seconds >= 0" in result.output
    assert not (tmp_path / "out.tsv").exists()
