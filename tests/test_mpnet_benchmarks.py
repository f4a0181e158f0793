"""What issue #17 (choosing a backbone) added to the benchmark scripts: a run's backbone in
benchmarks/accuracy.py (recorded, shown, filtered; rows of the default backbone print as before),
its pair-task split folders, and benchmarks/bench.py's side-by-side table of contestants. The committed
tiny bundles, no ../shared; the bench.py test is marked export (the script needs torch)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .tiny import SENTIMENT_BUNDLE, sentiment_rows, write_tsv

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_record(**fields) -> dict:
    record = {"task": "sst2", "method": "attn-prefix", "seed": 0, "epochs": 1.0, "lr": 0.05, "prompt_length": 16,
              "max_train_rows": None, "prefix_from_layer": 0, "train_rows": 2000, "tuned_share": 0.0138,
              "test_accuracy": 0.85, "dev_accuracy": 0.84, "train_seconds": 100.0}  # fmt: skip
    return {**record, **fields}


def test_accuracy_table_marks_and_filters_runs_of_another_backbone(tmp_path):
    accuracy = load("accuracy")
    results = tmp_path / "results.jsonl"
    default = run_record()
    results.write_text(json.dumps(default) + "\n")
    before = accuracy.table(results)
    mpnet = run_record(backbone="all-mpnet-base-v2", test_accuracy=0.9, prompt_length=15)
    results.write_text(json.dumps(default) + "\n" + json.dumps(mpnet) + "\n")
    both = accuracy.table(results)
    assert before.splitlines()[2] in both.splitlines()  # the default backbone's row is unchanged
    assert "| sst2 | attn-prefix (P=15, all-mpnet-base-v2) |" in both
    only = accuracy.table(results, backbone="all-mpnet-base-v2")
    assert "all-mpnet-base-v2" in only and len(only.splitlines()) == 3
    assert accuracy.table(results, backbone="all-MiniLM-L6-v2") == before  # no field: the default
    # A grid job names its backbone; jobs without one are the default backbone's.
    job = {"task": "sst2", "method": "attn-prefix", "seed": 0}
    assert accuracy.from_job(default, job) and not accuracy.from_job(mpnet, {**job, "prompt_length": 15})
    assert accuracy.from_job(mpnet, {**job, "prompt_length": 15, "backbone": "all-mpnet-base-v2"})


def test_accuracy_split_writes_seeded_pair_task_folders(tmp_path):
    accuracy = load("accuracy")
    source = tmp_path / "cb"
    source.mkdir()
    rows = [f"premise {i}\thypothesis {i}\t{['entailment', 'neutral'][i % 2]}" for i in range(60)]
    (source / "train.tsv").write_text("text\ttext_pair\tlabel\n" + "\n".join(rows) + "\n")
    (source / "dev.tsv").write_text("text\ttext_pair\tlabel\n" + "\n".join(rows[:7]) + "\n")
    counts = accuracy.split("cb", source, tmp_path / "out")
    assert counts == {"dev": 50, "train": 10, "test": 7}
    parts = {part: (tmp_path / "out" / f"{part}.tsv").read_text().splitlines() for part in counts}
    assert all(lines[0] == "text\ttext_pair\tlabel" for lines in parts.values())
    assert sorted(parts["dev"][1:] + parts["train"][1:]) == sorted(rows)  # every row once
    assert accuracy.split("cb", source, tmp_path / "again") == counts  # seeded: the same rows
    assert (tmp_path / "again" / "dev.tsv").read_text() == (tmp_path / "out" / "dev.tsv").read_text()
    assert {"cb", "boolq", "rte"} <= set(accuracy.TASKS)
    assert all(accuracy.TASKS[t]["text_pair_column"] for t in ("cb", "boolq", "rte"))


def test_accuracy_split_puts_the_wic_target_word_in_front_of_the_first_text(tmp_path):
    accuracy = load("accuracy")
    source = tmp_path / "wic"
    source.mkdir()
    header = "text\ttext_pair\tword\tstart1\tend1\tstart2\tend2\tlabel"
    rows = [
        f"I read it {i}.\tShe reads {i}.\tread\t2\t6\t4\t9\t{['true', 'false'][i % 2]}" for i in range(420)
    ]
    (source / "train.tsv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (source / "dev.tsv").write_text(header + "\n" + "\n".join(rows[:5]) + "\n")
    counts = accuracy.split("wic", source, tmp_path / "out")
    assert counts == {"dev": 400, "train": 20, "test": 5}
    test = (tmp_path / "out" / "test.tsv").read_text().splitlines()
    assert test[0] == header  # the columns stay; only the first text gains its word
    assert all(line.startswith("read: I read it ") for line in test[1:])
    assert all(line.split("\t")[1].startswith("She reads ") for line in test[1:])
    for line in test[1:]:  # the word's offsets in the first text moved with it
        text, _, word, start1, end1 = line.split("\t")[:5]
        assert text[int(start1) : int(end1)].startswith(word)


def test_bench_caches_a_checkpoints_export_by_its_content(tmp_path):
    bench = load("bench")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "weights.safetensors").write_bytes(b"first")
    before = bench.checkpoint_digest(checkpoint)
    (checkpoint / "weights.safetensors").write_bytes(b"retrained")  # same folder, new weights
    assert bench.checkpoint_digest(checkpoint) != before


@pytest.mark.export  # benchmarks/bench.py needs the export extra (docs/performance.md), even for bundles
def test_bench_puts_contestants_side_by_side(tmp_path):
    other = shutil.copytree(SENTIMENT_BUNDLE, tmp_path / "other")
    data = write_tsv(tmp_path / "rows.tsv", ["text", "label"], sentiment_rows(12, seed=3))
    command = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--bundle", str(SENTIMENT_BUNDLE),
               "--bundle", str(other), "--data", str(data), "--rows", "12", "--latency-rows", "2",
               "--threads", "1", "--rounds", "1", "--batch-size", "4", "--work", str(tmp_path / "work"),
               "--configs", "ipt@sentiment,ipt@other"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert output.returncode == 0, output.stderr[-3000:]
    lines = output.stdout.split("per contestant", 1)[1].splitlines()
    rows = [line for line in lines if line.startswith("| sentiment |") or line.startswith("| other |")]
    assert len(rows) == 2
    bench = load("bench")
    sizes = bench.bundle_mb(SENTIMENT_BUNDLE)
    total = sum(p.stat().st_size for p in SENTIMENT_BUNDLE.rglob("*") if p.is_file()) / 1e6
    assert abs(sizes["all"] - total) < 1e-6 and sizes["fp32"] <= sizes["all"] and "int8" not in sizes
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[1].startswith("tiny-bert (bert, 2 layers, hidden 32)") or "(bert, 2 layers" in cells[1]
    assert cells[5] == "–"  # no int8 encoder in the committed bundles: that cell is empty
    assert cells[6].startswith(f"{sizes['all']:.1f} (")


@pytest.mark.export
def test_bench_paired_sets_each_config_against_its_peer_and_a_control(checkpoints, tmp_path):
    data = write_tsv(tmp_path / "rows.tsv", ["text", "label"], sentiment_rows(12, seed=3))
    command = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), str(checkpoints["attn-prefix"]),
               "--data", str(data), "--rows", "12", "--threads", "1", "--rounds", "2", "--batch-size", "4",
               "--block", "2", "--paired", "--work", str(tmp_path / "work"), "--configs", "backbone-T-fused,ipt"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert output.returncode == 0, output.stderr[-3000:]
    lines = output.stdout.splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert {"ipt", "backbone-T-fused", "backbone-T-fused (control)"} <= set(rows)
    assert "vs backbone-T-fused" in rows["ipt"]  # the peer table's row: ipt against its plain backbone
    assert any(line.startswith("control: a second session of backbone-T-fused: ") for line in lines)
    assert any(line.startswith("target ipt >= 0.95× backbone-T-fused: ") for line in lines)
    runs = json.loads((tmp_path / "work" / "runs-paired.json").read_text())["runs"]
    assert all(len(rounds) == 2 for rounds in runs.values())  # every config timed in every round


def test_bench_paired_refuses_file_order_configs_by_name(tmp_path):
    data = write_tsv(tmp_path / "rows.tsv", ["text", "label"], sentiment_rows(4, seed=3))
    command = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--bundle", str(SENTIMENT_BUNDLE),
               "--data", str(data), "--paired", "--work", str(tmp_path / "work"),
               "--configs", "ipt,ipt-arrival"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert output.returncode != 0 and "drop ipt-arrival" in output.stderr


@pytest.mark.export
def test_accuracy_run_records_the_backbone_by_name_as_json(tmp_path, monkeypatch):
    """A run's report is one JSON line: the backbone by the name it was given, never the loaded model
    (a report holding the Backbone object failed json.dumps in the grid's parent, losing every result)."""
    import argparse

    from .tiny import pair_rows, write_backbone

    accuracy = load("accuracy")
    folder = tmp_path / "cb"
    folder.mkdir()
    for part, seed in (("train", 1), ("dev", 2), ("test", 3)):
        write_tsv(folder / f"{part}.tsv", ["text", "text_pair", "label"], pair_rows(24, seed=seed))
    monkeypatch.setitem(accuracy.TASKS, "cb", {**accuracy.TASKS["cb"], "folder": str(folder)})
    backbone = str(write_backbone(tmp_path / "tiny-bert"))
    args = argparse.Namespace(prompt_length=4, lr=None, init_generator=None, prefix_from_layer=0, work=str(tmp_path),
                              epochs=1.0, max_train_rows=None, eval_every=None, threads=1, device="cpu",
                              backbone=backbone)  # fmt: skip
    report = accuracy.run_one("cb", "prefix", 0, args)
    assert json.loads(json.dumps(report))["backbone"] == backbone
    assert 0.0 <= report["test_accuracy"] <= 1.0
    default = accuracy.run_one("cb", "probe", 0, argparse.Namespace(**{**vars(args), "backbone": None}))
    assert "backbone" not in default  # runs on the default backbone keep the fields they always had


def test_bench_runs_each_ipt_config_between_its_peers():
    bench = load("bench")
    assert sorted(bench.RUN_ORDER) == sorted(bench.TORCH + bench.BACKBONE + bench.OPTIMUM + bench.IPT)
    for ipt, peer in bench.BACKBONE_PEER.items():
        if ipt in tuple(bench.TARGETS):  # the targets' configs: run right after their plain backbone
            assert bench.RUN_ORDER.index(ipt) == bench.RUN_ORDER.index(peer) + 1
            assert bench.RUN_ORDER.index(bench.OPTIMUM_PEER[ipt]) == bench.RUN_ORDER.index(ipt) + 1
