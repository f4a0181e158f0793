"""Ray Data: the predictor and `score --engine ray` give the local output, row for row."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

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


def test_the_predictor_sets_onnx_runtime_threads_to_its_cpus(bundle):
    from ipt_edge.ray import IptPredictor

    predictor = IptPredictor(bundle, threads=2)
    assert predictor.classifier.encoder.get_session_options().intra_op_num_threads == 2


def test_engine_ray_writes_the_local_output(cluster, bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(300, seed=32))
    local, remote = tmp_path / "local.tsv", tmp_path / "ray.tsv"
    assert runner.invoke(app, ["score", str(source), "-o", str(local), "-b", str(bundle),
                               "--chunk-rows", "64"]).exit_code == 0  # fmt: skip
    result = runner.invoke(app, ["score", str(source), "-o", str(remote), "-b", str(bundle), "--chunk-rows",
                                 "64", "--engine", "ray", "--workers", "2", "--label-column", "label"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert remote.read_bytes() == local.read_bytes()
    assert "accuracy" in result.output


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
    assert remote.schema == local.schema and remote.num_rows == 150
    assert remote.select(["n", "text", "prediction"]).equals(local.select(["n", "text", "prediction"]))
    for column in ("prob_neg", "prob_pos"):
        assert np.abs(remote.column(column).to_numpy() - local.column(column).to_numpy()).max() <= 1e-5


def test_engine_ray_on_its_own_local_cluster_prints_no_warnings(bundle, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text"], [(t,) for t, _ in sentiment_rows(40, seed=34)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run([*CLI, "score", str(source), "-o", str(tmp_path / "out.tsv"), "-b", str(bundle),
                             "--engine", "ray", "--workers", "2", "--chunk-rows", "5"], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"scored 40 rows -> {tmp_path / 'out.tsv'}", result.stderr
    assert result.stdout.strip() == ""  # (Ray leaves one blank line on stdout)
    texts = [line.split("\t")[0] for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    assert texts == [t for t, _ in sentiment_rows(40, seed=34)]  # in input order, 8 chunks, 2 actors
