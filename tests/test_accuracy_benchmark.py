"""benchmarks/accuracy.py's grid resumes: a job already in the results is not run again, and a
failed run (an error row) is not a finished one. The learning curves' table puts the whole
training split ("all") after every subset size."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_accuracy():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_grid_run_again_skips_finished_jobs_and_retries_failed_ones(tmp_path):
    accuracy = load_accuracy()
    results = tmp_path / "results.jsonl"
    finished = {"task": "sst2", "method": "prefix", "seed": 0, "lr": 0.05, "epochs": 1.0}
    failed = {"task": "sst2", "method": "prefix", "seed": 1, "error": "RuntimeError: out of memory"}
    results.write_text(json.dumps(finished) + "\n" + json.dumps(failed) + "\n")
    jobs = [{"task": "sst2", "method": "prefix", "seed": seed} for seed in range(3)]
    assert [job["seed"] for job in accuracy.unfinished(jobs, results)] == [1, 2]
    assert accuracy.unfinished(jobs, tmp_path / "none.jsonl") == jobs  # nothing run yet
    other_budget = [{"task": "sst2", "method": "prefix", "seed": 0, "epochs": 3.0}]
    assert accuracy.unfinished(other_budget, results) == other_budget  # another budget is another job


def test_the_curves_table_lists_the_whole_training_split_after_the_subset_sizes(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import learning_curves

    runs = [
        {"task": "cb", "backbone": "b", "method": "default", "per_class": None, "test_accuracy": 0.6},
        {"task": "cb", "backbone": "b", "method": "default", "per_class": None, "test_accuracy": 0.7},
        {"task": "cb", "backbone": "b", "method": "default", "per_class": 64, "test_accuracy": 0.5},
        {"task": "cb", "backbone": "b", "method": "default", "per_class": 8, "test_accuracy": 0.4},
    ]
    results = tmp_path / "curves.jsonl"
    results.write_text("".join(json.dumps(run) + "\n" for run in runs))
    rows = learning_curves.table(results).splitlines()[2:]
    assert [row.split(" | ")[2] for row in rows] == ["8", "64", "all"]
    assert rows[-1].endswith("| 2 | 65.0 (60.0–70.0) |")


def test_a_subset_takes_every_row_of_a_label_that_has_fewer_than_asked(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import few_rows

    rows = [f"common {i}\tcommon" for i in range(10)] + ["rare 0\trare", "rare 1\trare"]
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    monkeypatch.setitem(few_rows.TASKS, "tiny", {"folder": str(tmp_path), "text_column": "text"})
    drawn = few_rows.subset("tiny", 4, 0, tmp_path / "subset.tsv").read_text().splitlines()[1:]
    labels = [line.split("\t")[1] for line in drawn]
    assert sorted(labels) == ["common"] * 4 + ["rare"] * 2  # the rare label's 2 rows, not an error
    assert (
        few_rows.subset("tiny", 4, 0, tmp_path / "again.tsv").read_text()
        == "text\tlabel\n" + "\n".join(drawn) + "\n"
    )
