"""Ray Data: the predictor and `score --engine ray` give the local output, row for row."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from typer.testing import CliRunner  # noqa: E402

from ipt_edge.classifier import Classifier  # noqa: E402
from ipt_edge.cli import app  # noqa: E402

from .conftest import sentiment_rows, write_tsv  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own modules emit them
runner = CliRunner()
CLI = [sys.executable, "-c", "from ipt_edge.cli import main; main()"]


@pytest.fixture(scope="module")
def cluster():
    from ipt_edge.ray import import_ray

    ray = import_ray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_score_dataset_equals_local_scoring(cluster, bundle):
    from ipt_edge.ray import score_dataset

    rows = sentiment_rows(200, seed=31)
    table = pa.table({"id": list(range(200)), "text": [t for t, _ in rows]})
    blocks = [table.slice(i, 50) for i in range(0, 200, 50)]  # several blocks, so both actors work
    scored = score_dataset(cluster.data.from_arrow(blocks), bundle, workers=2, batch_rows=50)
    out = pa.concat_tables(list(scored.iter_batches(batch_format="pyarrow", batch_size=None)))
    assert out.column("id").to_pylist() == list(range(200))  # none lost, none twice, in order
    local = Classifier.load(bundle).predict_proba([t for t, _ in rows])
    assert out.column("prediction").to_pylist() == [["neg", "pos"][i] for i in local.argmax(axis=1)]
    ray_probs = np.stack([out.column("prob_neg").to_numpy(), out.column("prob_pos").to_numpy()], axis=1)
    assert np.abs(ray_probs - local).max() <= 1e-5
    assert out.schema.field("prob_pos").type == pa.float32()


def test_the_predictor_sets_onnx_runtime_threads_to_its_cpus(cluster, bundle):
    """score_dataset(threads=2) runs its predictors in actors that hold 2 of Ray's CPUs, and each
    predictor's encoder session uses 2 ONNX Runtime intra-op threads (the tiny embedding and
    generator graphs run on one, by design). A probe predictor (score_dataset's
    own class, with its own arguments, in the actor pool it asked for) reports both from inside
    its actor."""
    from ipt_edge.ray import IptPredictor, score_dataset

    class Probe(IptPredictor):
        def __call__(self, batch):
            import ray

            table = super().__call__(batch)
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
            threads = self.bundle.encoder.get_session_options().intra_op_num_threads
            table = table.append_column("actor_cpus", pa.array([cpus] * batch.num_rows, pa.float64()))
            return table.append_column("ort_threads", pa.array([threads] * batch.num_rows, pa.int64()))

    ds = cluster.data.from_arrow(pa.table({"text": [t for t, _ in sentiment_rows(20, seed=35)]}))
    asked = {}

    def map_batches(fn, **options):  # what score_dataset asks Ray for, run with the probe
        assert fn is IptPredictor
        asked.update(options)
        return type(ds).map_batches(ds, Probe, **options)

    ds.map_batches = map_batches
    out = pa.concat_tables(
        list(
            score_dataset(ds, bundle, workers=1, threads=2).iter_batches(
                batch_format="pyarrow", batch_size=None
            )
        )
    )
    assert asked["num_cpus"] == 2 and asked["fn_constructor_kwargs"]["threads"] == 2
    assert set(out.column("actor_cpus").to_pylist()) == {2.0}  # the actor holds 2 CPUs
    assert out.column("ort_threads").to_pylist() == [2] * 20  # and its encoder 2 ONNX Runtime threads


def gold_accuracy(scored: Path) -> str:
    rows = [line.split("\t") for line in scored.read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    label, prediction = header.index("label"), header.index("prediction")
    correct = sum(row[label] == row[prediction] for row in rows)
    return f"accuracy {correct / len(rows):.4f} ({correct}/{len(rows)}) against column 'label'"


def test_engine_ray_writes_the_local_output(cluster, bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(300, seed=32))
    local, remote = tmp_path / "local.tsv", tmp_path / "ray.tsv"
    assert runner.invoke(app, ["score", str(source), "-o", str(local), "-b", str(bundle),
                               "--chunk-rows", "64"]).exit_code == 0  # fmt: skip
    result = runner.invoke(app, ["score", str(source), "-o", str(remote), "-b", str(bundle), "--chunk-rows",
                                 "64", "--engine", "ray", "--workers", "2", "--label-column", "label"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert remote.read_bytes() == local.read_bytes()
    expected = gold_accuracy(local)  # counted from the local output's label and prediction columns
    assert expected in result.output.splitlines(), result.output
    assert expected != "accuracy 0.0000 (0/300) against column 'label'"


def test_engine_ray_names_a_refused_text_by_its_line_before_any_is_shipped(cluster, bundle, tmp_path):
    rows = [(t,) for t, _ in sentiment_rows(30, seed=35)]
    rows[23] = (" ",)
    source = write_tsv(tmp_path / "in.tsv", ["text"], rows)
    result = runner.invoke(app, ["score", str(source), "-o", str(tmp_path / "out.tsv"), "-b", str(bundle),
                                 "--chunk-rows", "10", "--engine", "ray", "--workers", "1"])  # fmt: skip
    assert result.exit_code == 2
    assert "in.tsv:25: column 'text' is empty" in result.output
    assert not (tmp_path / "out.tsv").exists()


def test_engine_ray_parquet_output_equals_local(cluster, bundle, tmp_path):
    rows = sentiment_rows(150, seed=33)
    pq.write_table(pa.table({"n": list(range(150)), "text": [t for t, _ in rows]}), tmp_path / "in.parquet")
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"{engine}.parquet"
        result = runner.invoke(app, ["score", str(tmp_path / "in.parquet"), "-o", str(outs[engine]), "-b",
                                     str(bundle), "--chunk-rows", "40", "--engine", engine])  # fmt: skip
        assert result.exit_code == 0, result.output
    local, remote = pq.read_table(outs["local"]), pq.read_table(outs["ray"])
    assert remote.num_rows == 150 and remote.schema.equals(local.schema, check_metadata=True)
    assert remote.equals(local)  # every value, probabilities too: exactly, not within a tolerance
    assert outs["ray"].read_bytes() == outs["local"].read_bytes()  # byte for byte, as the README says


def test_engine_ray_on_its_own_local_cluster_prints_no_warnings(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [(t,) for t, _ in sentiment_rows(40, seed=34)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["IPT_EDGE_PROGRESS_SECONDS"] = "3600"  # no progress line (one every 30 s without a terminal)
    result = subprocess.run([*CLI, "score", str(source), "-o", str(tmp_path / "out.tsv"), "-b", str(bundle),
                             "--engine", "ray", "--workers", "2", "--chunk-rows", "5"], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"scored 40 rows -> {tmp_path / 'out.tsv'}", result.stderr
    assert result.stdout.strip() == ""  # (Ray leaves one blank line on stdout)
    texts = [line.split("\t")[0] for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    assert texts == [t for t, _ in sentiment_rows(40, seed=34)]  # in input order, 8 chunks, 2 actors
