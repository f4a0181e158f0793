"""An empty partition of a data job (a header and no rows) scores to the header alone, exit 0."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ipt_edge.cli import app

runner = CliRunner()


def score(*args):
    return runner.invoke(app, ["score", *[str(a) for a in args]])


@pytest.mark.parametrize("suffix", ["tsv", "csv"])
def test_a_header_without_rows_gives_the_header_with_the_added_columns(bundle, tmp_path, suffix):
    source = tmp_path / f"in.{suffix}"
    source.write_text("id,text,label\n".replace(",", "\t" if suffix == "tsv" else ","), encoding="utf-8")
    out = tmp_path / f"out.{suffix}"
    result = score(source, "-o", out, "-b", bundle, "--label-column", "label")
    assert result.exit_code == 0, result.output
    separator = "\t" if suffix == "tsv" else ","
    assert (
        out.read_text(encoding="utf-8")
        == separator.join(["id", "text", "label", "prediction", "prob_neg", "prob_pos"]) + "\n"
    )
    assert "scored 0 rows" in result.output
    assert "accuracy" not in result.output  # no rows, no accuracy to report


def test_a_header_without_rows_to_parquet_keeps_the_schema(bundle, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "in.tsv"
    source.write_text("id\ttext\n", encoding="utf-8")
    out = tmp_path / "out.parquet"
    assert score(source, "-o", out, "-b", bundle).exit_code == 0
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.names == ["id", "text", "prediction", "prob_neg", "prob_pos"]


def test_an_empty_parquet_file_scores_to_an_empty_output(bundle, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "n": pa.array([], pa.int32())}), source)
    out = tmp_path / "out.csv"
    result = score(source, "-o", out, "-b", bundle)
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == "text,n,prediction,prob_neg,prob_pos\n"


def test_the_header_still_needs_the_text_column(bundle, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("id\tsentence\n", encoding="utf-8")
    result = score(source, "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert "no column 'text'" in result.output
    assert not (tmp_path / "out.tsv").exists()


@pytest.mark.parametrize("suffix", ["tsv", "csv", "jsonl"])
def test_a_0_byte_file_is_still_an_error(bundle, tmp_path, suffix):
    source = tmp_path / f"in.{suffix}"
    source.write_bytes(b"")
    result = score(source, "-o", tmp_path / f"out.{suffix}", "-b", bundle)
    assert result.exit_code == 2
    message = "no rows to score" if suffix == "jsonl" else "the file is empty; expected a header row"
    assert f"{source}: {message}" in result.output
    assert not (tmp_path / f"out.{suffix}").exists()
