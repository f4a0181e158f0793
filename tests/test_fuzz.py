"""Property-based fuzzing of the readers and of `score`: every input either scores or exits 2 with
a message; never a traceback; every field that is not a prediction comes back identical.

CI runs a bounded number of examples; the long profile runs by hand:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import csv
import io
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ipt_edge.cli import app
from ipt_edge.tables import TableError, TableReader

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

runner = CliRunner()
PREDICTED = {"prediction", "prob_neg", "prob_pos"}

# Text that stresses encoders and the tokenizer: NUL and control characters, lone surrogates,
# combining marks, right-to-left and zero-width characters, quotes, separators and line breaks.
nasty_text = st.lists(
    st.one_of(
        st.characters(codec=None),
        st.sampled_from(
            ["\x00", "\ud800", "\u0301", "\u202e", "\u200b", "\ufeff", '"', ",", "\t", "\n", "\r"]
        ),
        st.sampled_from(["good", "dull", " "]),
    ),
    max_size=12,
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | nasty_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(nasty_text, children, max_size=3),
    max_leaves=6,
)


def score(bundle, tmp_path, name: str, data: bytes, out_name: str | None = None):
    source = tmp_path / name
    source.write_bytes(data)
    out = tmp_path / (out_name or f"out-{name}")
    out.unlink(missing_ok=True)
    result = runner.invoke(app, ["score", str(source), "-o", str(out), "-b", str(bundle)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert result.output.strip().startswith("error:") and not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []
    return result, out


@given(data=st.binary(max_size=300), fmt=st.sampled_from(["csv", "tsv", "jsonl"]))
def test_reader_on_random_bytes_reads_or_raises_a_table_error(tmp_path_factory, data, fmt):
    path = tmp_path_factory.mktemp("bytes") / f"in.{fmt}"
    path.write_bytes(data)
    try:
        with TableReader(path) as reader:
            for line, row in reader:
                assert line >= 1 and isinstance(row, dict)
    except TableError as error:
        assert str(error).startswith(str(path))


@given(data=st.binary(max_size=200), fmt=st.sampled_from(["csv", "tsv", "jsonl"]))
def test_score_on_random_bytes_scores_or_exits_2(bundle, tmp_path, data, fmt):
    score(bundle, tmp_path, f"in.{fmt}", b"text\n" + data if fmt != "jsonl" else data)


@given(
    rows=st.lists(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in PREDICTED | {"text"}), json_values, max_size=4
        ),
        min_size=1,
        max_size=5,
    ),
    texts=st.lists(nasty_text, min_size=5, max_size=5),
    order=st.randoms(),
)
def test_score_jsonl_keeps_every_value_and_key_order(bundle, tmp_path, rows, texts, order):
    records = []
    for row, text in zip(rows, texts, strict=False):
        items = [*row.items(), ("text", text)]
        order.shuffle(items)
        records.append(dict(items))
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    result, out = score(bundle, tmp_path, "in.jsonl", lines)
    if result.exit_code == 0:
        scored = [
            json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line
        ]  # JSONL: \n only
        assert len(scored) == len(records)
        for record, row in zip(records, scored, strict=True):
            assert list(row)[: len(record)] == list(record)
            assert {k: v for k, v in row.items() if k not in PREDICTED} == record


@given(
    texts=st.lists(nasty_text, min_size=1, max_size=5),
    ids=st.lists(nasty_text, min_size=5, max_size=5),
)
def test_score_csv_quoting_round_trips(bundle, tmp_path, texts, ids):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # quotes fields holding \r or \n
    writer.writerow(["id", "text"])
    rows = list(zip(ids, texts, strict=False))
    writer.writerows(rows)
    try:
        data = buffer.getvalue().encode("utf-8")
    except UnicodeEncodeError:
        data = buffer.getvalue().encode("utf-8", "surrogatepass")  # invalid UTF-8: must exit 2
    result, out = score(bundle, tmp_path, "in.csv", data)
    if result.exit_code == 0:
        with open(out, encoding="utf-8", newline="") as file:
            scored = list(csv.DictReader(file))
        assert [(r["id"], r["text"]) for r in scored] == rows
