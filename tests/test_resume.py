"""`score` commits chunks and resumes: after kill -9 at any point, `--resume` finishes with every
row exactly once, in input order, byte-identical (Parquet: equal) to an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ipt_edge.scoring
from ipt_edge.cli import app

from .conftest import sentiment_rows, write_tsv

runner = CliRunner()
CLI = [sys.executable, "-c", "from ipt_edge.cli import main; main()"]
ROWS, CHUNK = 6000, 200


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume-data")
    return write_tsv(folder / "in.tsv", ["text", "label"], sentiment_rows(ROWS, seed=21))


@pytest.fixture(scope="module")
def reference(bundle, source, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted outputs, one per format."""
    folder = tmp_path_factory.mktemp("resume-reference")
    outputs = {}
    for suffix in ("tsv", "parquet"):
        out = folder / f"out.{suffix}"
        assert run("score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK).exit_code == 0
        outputs[suffix] = out
    return outputs


def same_output(out: Path, reference: Path) -> bool:
    if out.suffix != ".parquet":
        return out.read_bytes() == reference.read_bytes()
    import pyarrow.parquet as pq

    return pq.read_table(out).equals(pq.read_table(reference))


def progress(out: Path) -> dict:
    try:
        return json.loads((out.parent / f".{out.name}.ipt-edge-resume" / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def kill_when(args: list, predicate, seconds: float = 120.0) -> None:
    process = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


KILL_POINTS = {
    "after-first-chunk": lambda state: state.get("rows", 0) >= CHUNK,
    "middle": lambda state: state.get("rows", 0) >= ROWS // 2,
    "assembling": lambda state: state.get("rows", 0) >= ROWS - CHUNK,
}


@pytest.mark.parametrize("suffix", ["tsv", "parquet"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_gives_the_uninterrupted_output(
    bundle, source, reference, tmp_path, suffix, point
):
    pytest.importorskip("pyarrow")
    out = tmp_path / f"out.{suffix}"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    kill_when(args, lambda: KILL_POINTS[point](progress(out)) or out.exists())
    assert not (tmp_path / out.name).exists() or same_output(out, reference[suffix])  # never half-written
    committed = progress(out)
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    if committed and not committed["final"]:  # killed mid-run: the resume skipped what was committed
        assert f"{committed['rows']} row(s) already committed" in result.output
    assert same_output(out, reference[suffix])
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # the sidecar is gone


def test_without_resume_a_leftover_run_is_refused_with_both_ways_out(bundle, source, tmp_path):
    out = tmp_path / "out.tsv"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    kill_when(args, lambda: progress(out).get("rows", 0) >= CHUNK)
    result = run(*args)
    assert result.exit_code == 2
    assert "unfinished run" in result.output and "--resume" in result.output and "--restart" in result.output
    assert not out.exists()


def test_restart_discards_the_leftover_run(bundle, source, reference, tmp_path):
    out = tmp_path / "out.tsv"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    kill_when(args, lambda: progress(out).get("rows", 0) >= CHUNK)
    result = run(*args, "--restart")
    assert result.exit_code == 0, result.output
    assert same_output(out, reference["tsv"]) and sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]


def test_resume_refuses_a_changed_input_and_other_options(bundle, tmp_path, monkeypatch):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(50, seed=22))
    out = tmp_path / "out.tsv"
    stop = RuntimeError("killed")

    def fail_second_chunk(sidecar, state):
        if state.rows > 10:
            raise stop
        original(sidecar, state)

    original = ipt_edge.scoring._save
    monkeypatch.setattr(ipt_edge.scoring, "_save", fail_second_chunk)
    with pytest.raises(RuntimeError):
        runner.invoke(app, ["score", str(source), "-o", str(out), "-b", str(bundle), "--chunk-rows", "10",
                            "--resume"], catch_exceptions=False)  # fmt: skip
    monkeypatch.setattr(ipt_edge.scoring, "_save", original)
    other = run("score", source, "-o", out, "-b", bundle, "--resume", "--text-column", "label")
    assert other.exit_code == 2 and "text_column was" in other.output and "--restart" in other.output
    write_tsv(source, ["text", "label"], sentiment_rows(51, seed=22))
    changed = run("score", source, "-o", out, "-b", bundle, "--resume")
    assert changed.exit_code == 2 and "the input file changed" in changed.output
    assert not out.exists()


def test_resume_publishes_a_run_killed_between_its_last_commit_and_the_rename(bundle, source, reference,
                                                                               tmp_path, monkeypatch):  # fmt: skip
    out = tmp_path / "out.tsv"
    args = ["score", str(source), "-o", str(out), "-b", str(bundle), "--chunk-rows", str(CHUNK)]

    def killed(*rest):
        raise KeyboardInterrupt

    monkeypatch.setattr(ipt_edge.scoring, "_publish", killed)
    runner.invoke(app, [*args, "--resume"])
    assert not out.exists() and progress(out)["final"]
    monkeypatch.undo()
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert same_output(out, reference["tsv"]) and sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]


def test_resume_after_the_rename_only_cleans_up(bundle, source, reference, tmp_path, monkeypatch):
    out = tmp_path / "out.tsv"
    args = ["score", str(source), "-o", str(out), "-b", str(bundle), "--chunk-rows", str(CHUNK)]
    monkeypatch.setattr(ipt_edge.scoring.shutil, "rmtree", lambda *a, **k: None)
    assert run(*args).exit_code == 0
    monkeypatch.undo()
    assert progress(out)["final"]  # the sidecar outlived the rename
    result = run(*args, "--resume")
    assert result.exit_code == 0 and "nothing left to do" in result.output
    assert same_output(out, reference["tsv"]) and sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]


def test_a_previous_output_stays_until_the_resumed_run_completes(bundle, source, reference, tmp_path):
    out = tmp_path / "out.tsv"
    out.write_text("an earlier good result\n")
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    kill_when(args, lambda: progress(out).get("rows", 0) >= ROWS // 2)
    assert out.read_text() == "an earlier good result\n"
    assert run(*args, "--resume").exit_code == 0
    assert same_output(out, reference["tsv"])
