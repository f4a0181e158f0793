"""Parquet in and out of `score`: every input column kept with its Arrow type and values, a folder
as one dataset, mixed formats, and the bad-input contract."""

from __future__ import annotations

import datetime
import decimal
import json
import sys

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from typer.testing import CliRunner  # noqa: E402

from ipt_edge.cli import app  # noqa: E402

from .tiny import sentiment_rows, write_tsv  # noqa: E402

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def many_types(n: int) -> pa.Table:
    texts = [text for text, _ in sentiment_rows(n, seed=11)]
    utc = datetime.timezone.utc
    return pa.table(
        {
            "i8": pa.array([i % 100 - 50 for i in range(n)], pa.int8()),
            "i16": pa.array([i * 300 for i in range(n)], pa.int16()),
            "i32": pa.array([None if i % 7 == 0 else i * 70_000 for i in range(n)], pa.int32()),
            "i64": pa.array([2**62 + i for i in range(n)], pa.int64()),
            "u32": pa.array([2**32 - 1 - i for i in range(n)], pa.uint32()),
            "f32": pa.array([i / 3 for i in range(n)], pa.float32()),
            "f64": pa.array([None if i == 2 else i * 1e300 for i in range(n)], pa.float64()),
            "flag": pa.array([i % 2 == 0 for i in range(n)], pa.bool_()),
            "text": pa.array(texts, pa.string()),
            "big": pa.array(["é\u202e" * i for i in range(n)], pa.large_string()),
            "when": pa.array(
                [datetime.datetime(2024, 1, 1, tzinfo=utc) + datetime.timedelta(seconds=i) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "day": pa.array(
                [datetime.date(2020, 2, 29) + datetime.timedelta(days=i) for i in range(n)], pa.date32()
            ),
            "tags": pa.array([[i, i + 1] if i % 3 else None for i in range(n)], pa.list_(pa.int64())),
            "pair": pa.array(
                [{"a": i, "b": f"x{i}"} for i in range(n)], pa.struct([("a", pa.int32()), ("b", pa.string())])
            ),
            "kind": pa.array(
                ["red", "green", "red", None] * (n // 4) + ["blue"] * (n % 4)
            ).dictionary_encode(),
            "money": pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
            "blob": pa.array([bytes([i % 256, 0]) for i in range(n)], pa.binary()),
            "nothing": pa.array([None] * n, pa.null()),
        }
    )


def test_parquet_round_trip_keeps_every_column_type_and_value(bundle, tmp_path):
    table = many_types(50)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=16)
    out = tmp_path / "out.parquet"
    result = run("score", tmp_path / "in.parquet", "-o", out, "-b", bundle, "--chunk-rows", "20")
    assert result.exit_code == 0, result.output
    scored = pq.read_table(out)
    assert scored.select(table.column_names).equals(table)
    assert scored.schema.field("prediction").type == pa.string()
    assert scored.schema.field("prob_pos").type == pa.float32()
    assert scored.schema.field("prob_neg").type == pa.float32()


def test_parquet_output_matches_the_tsv_output(bundle, tmp_path):
    rows = sentiment_rows(40, seed=12)
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], rows)
    pq.write_table(
        pa.table({"text": [t for t, _ in rows], "label": [g for _, g in rows]}), tmp_path / "in.parquet"
    )
    assert run("score", source, "-o", tmp_path / "out.tsv", "-b", bundle).exit_code == 0
    assert run("score", tmp_path / "in.parquet", "-o", tmp_path / "out.parquet", "-b", bundle).exit_code == 0
    lines = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    scored = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["prediction"] for r in scored] == [line[2] for line in lines]
    for row, line in zip(scored, lines, strict=True):
        assert abs(row["prob_neg"] - float(line[3])) <= 1e-6 and abs(row["prob_pos"] - float(line[4])) <= 1e-6


def test_a_folder_of_parquet_files_is_one_dataset_in_name_order(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [text for text, _ in sentiment_rows(30, seed=13)]
    for index, part in enumerate([rows[:7], rows[7:20], rows[20:]]):
        pq.write_table(
            pa.table({"id": list(range(len(part))), "text": part}), folder / f"part-{index}.parquet"
        )
    (folder / "_SUCCESS").write_text("")
    out = tmp_path / "out.parquet"
    result = run("score", folder, "-o", out, "-b", bundle, "--chunk-rows", "4")
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("text").to_pylist() == rows


def test_a_folder_skips_metadata_success_and_hidden_files(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    table = pa.table({"text": ["good film", "dull plot"]})
    pq.write_table(table, folder / "part-0.parquet")
    other = pa.table({"text": ["not a row"], "extra": [1]})  # a real Parquet file of another schema
    pq.write_metadata(other.schema, folder / "_metadata")
    pq.write_table(other, folder / "_common.parquet")  # "_" names are bookkeeping, as Spark writes them
    pq.write_table(other, folder / ".hidden.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00crc")
    out = tmp_path / "out.parquet"
    result = run("score", folder, "-o", out, "-b", bundle)
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("text").to_pylist() == ["good film", "dull plot"]


def test_a_folder_whose_files_differ_in_schema_is_refused(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["good"], "n": pa.array([1], pa.int32())}), folder / "a.parquet")
    pq.write_table(pa.table({"text": ["dull"], "n": pa.array([1], pa.int64())}), folder / "b.parquet")
    result = run("score", folder, "-o", tmp_path / "out.parquet", "-b", bundle)
    assert result.exit_code == 2
    assert "b.parquet: its columns differ" in result.output and "n: int64" in result.output
    assert not (tmp_path / "out.parquet").exists()


def test_csv_in_parquet_out_keeps_the_fields_as_strings(bundle, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,text\n007,"good, fine film"\n8,dull\n')
    out = tmp_path / "out.parquet"
    assert run("score", source, "-o", out, "-b", bundle).exit_code == 0
    scored = pq.read_table(out)
    assert scored.schema.field("id").type == pa.string()
    assert scored.column("id").to_pylist() == ["007", "8"]
    assert scored.column("text").to_pylist() == ["good, fine film", "dull"]


def test_jsonl_in_parquet_out_types_each_key(bundle, tmp_path):
    records = [
        {"text": "good", "n": 1, "x": 1, "ok": True, "mixed": "a", "tags": [1]},
        {"text": "dull", "n": 2, "x": 2.5, "ok": None, "mixed": 7, "late": "z"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.parquet"
    assert run("score", source, "-o", out, "-b", bundle).exit_code == 0
    scored = pq.read_table(out)
    types = {f.name: f.type for f in scored.schema}
    assert types["n"] == pa.int64() and types["x"] == pa.float64() and types["ok"] == pa.bool_()
    assert types["mixed"] == pa.string() and types["tags"] == pa.string()  # stored as JSON text
    rows = scored.to_pylist()
    assert [r["mixed"] for r in rows] == ['"a"', "7"] and rows[0]["tags"] == "[1]"
    assert [r["late"] for r in rows] == [None, "z"] and [r["ok"] for r in rows] == [True, None]


def test_parquet_in_jsonl_out_writes_json_values(bundle, tmp_path):
    pq.write_table(many_types(4), tmp_path / "in.parquet")
    out = tmp_path / "out.jsonl"
    result = run("score", tmp_path / "in.parquet", "-o", out, "-b", bundle)
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text().splitlines()[0])
    assert first["i64"] == 2**62 and first["when"] == "2024-01-01T00:00:00+00:00"
    assert first["money"] == "0.25" and first["pair"] == {"a": 0, "b": "x0"} and first["tags"] is None


def test_parquet_text_that_is_not_a_string_names_file_row_and_column(bundle, tmp_path):
    pq.write_table(pa.table({"text": ["good", None, "dull"]}), tmp_path / "in.parquet")
    result = run("score", tmp_path / "in.parquet", "-o", tmp_path / "out.parquet", "-b", bundle)
    assert result.exit_code == 2
    assert "in.parquet:row 2: column 'text' should be a string, got null" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_a_file_that_is_not_parquet_is_a_clear_error(bundle, tmp_path):
    (tmp_path / "in.parquet").write_text("text\ngood\n")
    result = run("score", tmp_path / "in.parquet", "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert "in.parquet: not a readable Parquet file" in result.output and "Traceback" not in result.output


def test_parquet_without_pyarrow_says_how_to_install_it(bundle, tmp_path, monkeypatch):
    pq.write_table(pa.table({"text": ["good"]}), tmp_path / "in.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = run("score", tmp_path / "in.parquet", "-o", tmp_path / "out.tsv", "-b", bundle)
    assert result.exit_code == 2
    assert 'pip install "ipt-edge[parquet]"' in result.output
