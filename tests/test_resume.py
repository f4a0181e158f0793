"""`score` commits chunks and resumes: after kill -9 at any point, `--resume` finishes with every
row exactly once, in input order, byte-identical (Parquet: equal) to an uninterrupted run.

A kill lands where its test says: the command runs in a subprocess whose `ipt_edge` is patched
(HOOKED below, nothing in ipt_edge itself) to stop at that point and say so; the test kills it
only then, and fails if the run ends or errs first."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ipt_edge.scoring
from ipt_edge.cli import app
from ipt_edge.manifest import file_record, read_manifest, write_manifest

from .conftest import sentiment_rows, write_tsv

runner = CliRunner()
ROWS, CHUNK = 2000, 200

# The `ipt-edge` command with a stop: argv = HOOKED POINT ROWS MARKER ipt-edge-arguments... At the
# stop it writes MARKER and sleeps until it is killed (or stopped by SIGTERM: a Stopped raised in
# the sleep). POINT is one of:
#   committed   right after the commit (progress.json saved) that brings the run to ROWS rows
#   written     the chunk after ROWS rows is written and durable (CSV/TSV/JSONL: flushed to the
#               growing file; Parquet: its part renamed into the sidecar), but not yet committed
#   assembling  every chunk committed, the output being assembled in the sidecar (Parquet: after
#               the first part is copied into it; CSV/TSV/JSONL: as the file is completed), before
#               the run records it as complete
HOOKED = r"""
import sys, time
from pathlib import Path

import ipt_edge.scoring as scoring
from ipt_edge.parquet import ParquetWriter
from ipt_edge.tables import AtomicFile

point, rows, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
del sys.argv[1:4]
out = Path(sys.argv[sys.argv.index("-o") + 1]).resolve()
saved = {"rows": 0}


def stop():
    marker.write_text(point)
    while True:
        time.sleep(0.05)


save = scoring._save


def hooked_save(sidecar, state):
    save(sidecar, state)
    saved["rows"] = state.rows
    if point == "committed" and state.rows == rows and state.final is None:
        stop()


scoring._save = hooked_save


def after(cls, name, condition):
    original = getattr(cls, name)

    def hooked(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if condition(self):
            stop()
        return result

    setattr(cls, name, hooked)


def before(cls, name, condition):
    original = getattr(cls, name)

    def hooked(self, *args, **kwargs):
        if condition(self):
            stop()
        return original(self, *args, **kwargs)

    setattr(cls, name, hooked)


def is_out(writer):
    return writer.path.resolve() == out


if point == "written":
    after(AtomicFile, "checkpoint", lambda w: saved["rows"] == rows)  # text formats: flushed, not committed
    after(AtomicFile, "commit", lambda w: w.path.name.startswith("part-") and saved["rows"] == rows)  # a part
elif point == "assembling":
    after(ParquetWriter, "write_table", lambda w: is_out(w))  # Parquet: the first part copied into the output
    before(AtomicFile, "finish", lambda w: is_out(w))  # text formats: the output completed
else:
    assert point == "committed", point

from ipt_edge.cli import main

sys.argv[0] = "ipt-edge"
main()
"""


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


def sidecar(out: Path) -> Path:
    return out.parent / f".{out.name}.ipt-edge-resume"


def progress(out: Path) -> dict:
    return json.loads((sidecar(out) / "progress.json").read_text())


def stop_at(point: str, rows: int, args: list, sig: signal.Signals = signal.SIGKILL, seconds: float = 120.0):
    """Run `ipt-edge ARGS` until it reaches `point` (HOOKED) at `rows` rows, then send it `sig`.
    Fails if the command ends before it gets there. Returns the exit code and stderr."""
    marker = Path(args[args.index("-o") + 1]).parent / f"stopped-{point}"
    marker.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", HOOKED, point, str(rows), str(marker), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + seconds
    while not marker.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(
                f"the run ended (exit {process.returncode}) before {point} at {rows} rows:\n{err}{out}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {point} at {rows} rows"
        time.sleep(0.01)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    marker.unlink()
    return process.returncode, err


# name -> (HOOKED point, rows committed when it stops)
KILL_POINTS = {
    "after-first-chunk": ("committed", CHUNK),
    "middle": ("committed", ROWS // 2),
    "between-write-and-commit": ("written", ROWS // 2),
    "assembling": ("assembling", ROWS),
}


@pytest.mark.parametrize("suffix", ["tsv", "parquet"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_gives_the_uninterrupted_output(
    bundle, source, reference, tmp_path, suffix, point
):
    pytest.importorskip("pyarrow")
    out = tmp_path / f"out.{suffix}"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    hook, rows = KILL_POINTS[point]
    code, _ = stop_at(hook, rows, args)
    assert code == -signal.SIGKILL
    assert not out.exists()  # never half-written
    state = progress(out)
    assert state["rows"] == rows and state["final"] is None  # the kill landed where its name says
    files = {p.name for p in sidecar(out).iterdir()}
    if point == "between-write-and-commit":  # the next chunk is on disk, but not committed
        if suffix == "parquet":
            assert state["parts"] == rows // CHUNK and f"part-{rows // CHUNK:06d}.parquet" in files
        else:
            assert (sidecar(out) / state["temp"]).stat().st_size > state["bytes"]
    if point == "assembling":  # every chunk committed; Parquet: the output half-joined beside its parts
        if suffix == "parquet":
            assert state["parts"] == ROWS // CHUNK and any(name.endswith(".partial") for name in files)
        else:
            assert (sidecar(out) / state["temp"]).stat().st_size == state["bytes"]
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"{rows} row(s) already committed" in result.output
    assert f"scored {ROWS} rows -> {out} ({rows} of them committed before this run)" in result.output
    assert same_output(out, reference[suffix])
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # the sidecar is gone


def test_without_resume_a_leftover_run_is_refused_with_both_ways_out(bundle, source, tmp_path):
    out = tmp_path / "out.tsv"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    stop_at("committed", CHUNK, args)
    result = run(*args)
    assert result.exit_code == 2
    assert "unfinished run" in result.output and "--resume" in result.output and "--restart" in result.output
    assert f"left {CHUNK} committed row(s)" in result.output
    assert not out.exists() and progress(out)["rows"] == CHUNK  # refused, and the run is kept


def test_restart_discards_the_leftover_run(bundle, source, reference, tmp_path):
    out = tmp_path / "out.tsv"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    stop_at("committed", CHUNK, args)
    result = run(*args, "--restart")
    assert result.exit_code == 0, result.output
    assert "discarding the unfinished run" in result.output and "committed before" not in result.output
    assert same_output(out, reference["tsv"]) and sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]


def stop_after_first_chunk(args: list, monkeypatch) -> None:
    """Run `ipt-edge ARGS` (with --resume) in this process until its first chunk is committed; it
    then fails as a crash would, leaving the sidecar."""
    original = ipt_edge.scoring._save

    def crash_after_first_commit(sidecar, state):
        original(sidecar, state)
        raise RuntimeError("crashed")

    monkeypatch.setattr(ipt_edge.scoring, "_save", crash_after_first_commit)
    with pytest.raises(RuntimeError, match="crashed"):
        runner.invoke(app, [*map(str, args), "--resume"], catch_exceptions=False)
    monkeypatch.setattr(ipt_edge.scoring, "_save", original)


def test_resume_refuses_a_changed_input_and_other_options(bundle, tmp_path, monkeypatch):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(50, seed=22))
    out = tmp_path / "out.tsv"
    stop_after_first_chunk(["score", source, "-o", out, "-b", bundle, "--chunk-rows", 10], monkeypatch)
    other = run("score", source, "-o", out, "-b", bundle, "--resume", "--text-column", "label")
    assert other.exit_code == 2 and "text_column was" in other.output and "--restart" in other.output
    write_tsv(source, ["text", "label"], sentiment_rows(51, seed=22))
    changed = run("score", source, "-o", out, "-b", bundle, "--resume")
    assert changed.exit_code == 2 and "the input file changed" in changed.output
    assert not out.exists() and progress(out)["rows"] == 10


@pytest.fixture(scope="module")
def variant(bundle, tmp_path_factory) -> Path:
    """A copy of the bundle that differs in its manifest only by what it adds: a second task,
    "other", that is "sentiment" under another name (so the same labels and columns)."""
    path = tmp_path_factory.mktemp("variant") / "bundle"
    shutil.copytree(bundle, path)
    manifest = read_manifest(path)
    manifest.tasks["other"] = replace(manifest.tasks["sentiment"])
    write_manifest(path, manifest)
    return path


@pytest.fixture(scope="module")
def int8_variant(variant, tmp_path_factory) -> Path:
    """The variant plus an int8 backbone quantized as `export --quantize int8` does
    (export/onnx_export.py): a copy of the fp32 graph would be refused at load, since it has no
    int8 operator, before the resume check this is for."""
    pytest.importorskip("onnx", reason="quantizing a graph needs onnx (export extra)")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(variant, path)
    manifest = read_manifest(path)
    quantize_dynamic(path / manifest.encoder.file, path / "encoder.int8.onnx", weight_type=QuantType.QInt8,
                     per_channel=True, reduce_range=True, extra_options={"DefaultTensorType": 1})  # fmt: skip
    manifest.encoder.int8_file = "encoder.int8.onnx"
    manifest.files["encoder.int8.onnx"] = file_record(path / "encoder.int8.onnx")
    write_manifest(path, manifest)
    return path


# name -> (the first run's input and options, the resume's, what the refusal names)
CHANGES = {
    "bundle": (["{tsv}", "-b", "{bundle}"], ["{tsv}", "-b", "{variant}", "--task", "sentiment"],
               "bundle_manifest_sha256 was"),
    "task": (["{tsv}", "-b", "{variant}", "--task", "sentiment"], ["{tsv}", "-b", "{variant}", "--task", "other"],
             'task was ["sentiment"], now ["other"]'),
    "precision": (["{tsv}", "-b", "{int8}", "--task", "sentiment"],
                  ["{tsv}", "-b", "{int8}", "--task", "sentiment", "--precision", "int8"],
                  'precision was "fp32", now "int8"'),
    # out.txt has no format of its own: it takes the input's, and the input is the same file read
    # through a .csv link (the same path, size, mtime and bytes once resolved): only the format changes
    "output format": (["{tsv}", "-b", "{bundle}"], ["{csv}", "-b", "{bundle}"], 'output_format was "tsv", now "csv"'),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:int8 accuracy was never measured")
@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_refuses_a_changed_bundle_task_precision_or_output_format(
    bundle, variant, tmp_path, monkeypatch, request, change
):
    # one column and no commas or tabs: the same rows whether read as TSV or as CSV
    source = write_tsv(tmp_path / "in.tsv", ["text"], [(t,) for t, _ in sentiment_rows(50, seed=23)])
    (tmp_path / "in.csv").symlink_to(source)
    out = tmp_path / "out.txt"
    fill = {"{tsv}": source, "{csv}": tmp_path / "in.csv", "{bundle}": bundle, "{variant}": variant}
    if "{int8}" in CHANGES[change][0]:  # only the case that needs it quantizes (and needs onnx)
        fill["{int8}"] = request.getfixturevalue("int8_variant")
    first, second = ([fill.get(o, o) for o in options] for options in CHANGES[change][:2])
    named = CHANGES[change][2]
    stop_after_first_chunk(["score", *first, "-o", out, "--chunk-rows", 10], monkeypatch)
    assert progress(out)["rows"] == 10
    refused = run("score", *second, "-o", out, "--chunk-rows", 10, "--resume")
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())  # as printed, but a long message wraps
    assert "cannot resume the unfinished run" in message and named in message, message
    assert message.count(" was ") == 1, message  # this difference and no other
    assert "--restart" in message and "committed chunks kept for --resume" in message
    assert not out.exists() and progress(out)["rows"] == 10  # the run is kept for its own --resume
    assert (
        run("score", *first, "-o", out, "--chunk-rows", 10, "--resume").exit_code == 0
    )  # which completes it


def test_resume_reuses_the_runs_chunk_rows_and_batch_size(bundle, tmp_path, monkeypatch):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(120, seed=24))
    reference, out = tmp_path / "reference.tsv", tmp_path / "out.tsv"
    assert (
        run("score", source, "-o", reference, "-b", bundle, "--chunk-rows", 20, "--batch-size", 3).exit_code
        == 0
    )
    args = ["score", source, "-o", out, "-b", bundle]
    stop_after_first_chunk([*args, "--chunk-rows", 20, "--batch-size", 3], monkeypatch)
    calls = []
    original = ipt_edge.scoring.probabilities

    def spy(bundle, texts, tasks, outputs, batch_size):
        calls.append((len(texts), batch_size))
        return original(bundle, texts, tasks, outputs, batch_size)

    monkeypatch.setattr(ipt_edge.scoring, "probabilities", spy)
    result = run(*args, "--chunk-rows", 50, "--batch-size", 64, "--resume")
    assert result.exit_code == 0, result.output
    assert "with the unfinished run's --chunk-rows 20 and --batch-size 3" in " ".join(result.output.split())
    assert calls == [(20, 3)] * 5  # the 5 chunks left, each scored as the run scored its chunks
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("resume", [True, False], ids=["with-resume", "without-resume"])
def test_sigterm_keeps_the_committed_chunks_only_under_resume(bundle, source, reference, tmp_path, resume):
    out = tmp_path / "out.tsv"
    args = ["score", source, "-o", out, "-b", bundle, "--chunk-rows", CHUNK]
    code, err = stop_at("committed", ROWS // 2, [*args, *(["--resume"] if resume else [])], signal.SIGTERM)
    assert code == 143 and "stopped by SIGTERM" in err, err
    assert not out.exists()
    if not resume:  # stopped: nothing is left, not even the sidecar
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        return
    state = progress(out)
    assert state["rows"] == ROWS // 2 and state["final"] is None
    assert (sidecar(out) / state["temp"]).stat().st_size == state["bytes"]  # what was committed, kept
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"{ROWS // 2} row(s) already committed" in result.output
    assert same_output(out, reference["tsv"]) and sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]


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
    stop_at("committed", ROWS // 2, args)
    assert out.read_text() == "an earlier good result\n"
    assert run(*args, "--resume").exit_code == 0
    assert same_output(out, reference["tsv"])
