"""benchmarks/accuracy.py's grid resumes: a job already in the results is not run again, and a
failed run (an error row) is not a finished one."""

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
