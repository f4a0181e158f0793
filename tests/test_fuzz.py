"""Property-based fuzzing of the readers and of `score`: every input either scores or exits 2 with
a message; never a traceback; every field that is not a prediction comes back identical.

The round-trip properties draw mostly valid examples (each row's text holds something that is
not white space, and no lone surrogate) and spoil one row's text in about one example of twenty;
a valid example must score (exit 0) and round-trip, a spoiled one must exit 2 naming the cause.
Each property counts the examples that reached its round-trip check and fails when fewer than
80% did, so that no change to the strategies or to the runtime can turn it into a check of
error messages only.

CI runs a bounded number of examples; the long profile runs by hand:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ipt_edge.cli import app
from ipt_edge.tables import TableError, TableReader

QUIET = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=25, **QUIET)
settings.register_profile("long", max_examples=2000, **QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
ROUND_TRIPPED = 0.8  # the share of a property's distinct inputs that must reach its round-trip check

runner = CliRunner()
PREDICTED = {"prediction", "prob_neg", "prob_pos"}

# Text that stresses encoders and the tokenizer: NUL and control characters, lone surrogates,
# combining marks, right-to-left and zero-width characters, quotes, separators and line breaks.
SPECIALS = ["\x00", "\u0301", "\u202e", "\u200b", "\ufeff", '"', ",", "\t", "\n", "\r"]


def texts(surrogates: bool) -> st.SearchStrategy[str]:
    return st.lists(
        st.one_of(
            st.characters(codec=None) if surrogates else st.characters(codec="utf-8"),
            st.sampled_from(SPECIALS + (["\ud800"] if surrogates else [])),
            st.sampled_from(["good", "dull", " "]),
        ),
        max_size=12,
    ).map("".join)


nasty_text = texts(surrogates=True)
# What score takes as a text: something that is not white space, and no lone surrogate.
valid_text = texts(surrogates=False).filter(str.strip)
# What it refuses (exit 2): a blank text, or one holding a lone surrogate.
spoiled_text = st.one_of(
    st.sampled_from(["", " ", "\t\n ", "\u3000"]),
    st.tuples(texts(surrogates=False), st.sampled_from(["\ud800", "\udfff"]), texts(surrogates=False)).map(
        "".join
    ),
)


def spoiled_row(example: object, rows: int) -> int | None:
    """The row (of `rows`) whose text an example spoils, in about one example of twenty; None: every
    row is valid. A checksum of all the example's values decides, so the share does not follow
    Hypothesis' choices (which favour whatever a strategy makes rare), and a replay spoils the same row."""
    digest = zlib.crc32(json.dumps(example).encode())
    return digest // 20 % rows if digest % 20 == 0 else None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | nasty_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(nasty_text, children, max_size=3),
    max_leaves=6,
)


class Tally:
    """The distinct inputs a property ran on, and those of them that reached its round-trip check.
    Distinct, because Hypothesis may run one input many times, varying only what the spoiling
    checksum does not read (the shuffle, the spoiled text): counted per run, a spoiled input counted
    again each time (once 18 runs of 59)."""

    def __init__(self) -> None:
        self.examples: set[str] = set()
        self.round_tripped: set[str] = set()

    def check(self) -> None:
        ran, reached = len(self.examples), len(self.round_tripped)
        assert reached >= ROUND_TRIPPED * ran, f"only {reached} of {ran} inputs reached the round-trip check"


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


def test_score_jsonl_keeps_every_value_and_key_order(bundle, tmp_path_factory):
    tally = Tally()

    @given(
        rows=st.lists(
            st.dictionaries(
                st.text(max_size=8).filter(lambda k: k not in PREDICTED | {"text"}), json_values, max_size=4
            ),
            min_size=1,
            max_size=5,
        ),
        texts=st.lists(valid_text, min_size=5, max_size=5),
        spoiled=spoiled_text,
        order=st.randoms(),
    )
    def check(rows, texts, spoiled, order):
        key = json.dumps([rows, texts])
        tally.examples.add(key)
        bad = spoiled_row([rows, texts], len(rows))
        if bad is not None:
            texts[bad] = spoiled
        records = []
        for row, text in zip(rows, texts, strict=False):
            items = [*row.items(), ("text", text)]
            order.shuffle(items)
            records.append(dict(items))
        lines = "".join(json.dumps(r) + "\n" for r in records).encode()
        result, out = score(bundle, tmp_path_factory.mktemp("jsonl"), "in.jsonl", lines)
        if bad is not None:
            assert result.exit_code == 2 and f"in.jsonl:{bad + 1}: column 'text'" in result.output
            assert "is empty" in result.output or "lone surrogate" in result.output, result.output
            return
        assert result.exit_code == 0, result.output
        scored = [
            json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line
        ]  # JSONL: \n only
        assert len(scored) == len(records)
        for record, row in zip(records, scored, strict=True):
            assert list(row)[: len(record)] == list(record)
            assert {k: v for k, v in row.items() if k not in PREDICTED} == record
            assert row["prediction"] in ("neg", "pos") and set(row) - set(record) == PREDICTED
        tally.round_tripped.add(key)

    check()
    tally.check()


def test_score_csv_quoting_round_trips(bundle, tmp_path_factory):
    tally = Tally()

    @given(
        texts=st.lists(valid_text, min_size=1, max_size=5),
        ids=st.lists(texts(surrogates=False), min_size=5, max_size=5),
        spoiled=spoiled_text,
    )
    def check(texts, ids, spoiled):
        key = json.dumps([ids, texts])
        tally.examples.add(key)
        bad = spoiled_row([ids, texts], len(texts))
        if bad is not None:
            texts[bad] = spoiled
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")  # quotes fields holding \r or \n
        writer.writerow(["id", "text"])
        rows = list(zip(ids, texts, strict=False))
        writer.writerows(rows)
        try:
            data = buffer.getvalue().encode("utf-8")
        except UnicodeEncodeError:
            data = buffer.getvalue().encode("utf-8", "surrogatepass")  # invalid UTF-8: must exit 2
        result, out = score(bundle, tmp_path_factory.mktemp("csv"), "in.csv", data)
        if bad is not None:
            assert result.exit_code == 2
            assert any(cause in result.output for cause in ("is empty", "not valid UTF-8")), result.output
            return
        assert result.exit_code == 0, result.output
        with open(out, encoding="utf-8", newline="") as file:
            scored = list(csv.DictReader(file))
        assert [(r["id"], r["text"]) for r in scored] == rows
        assert all(r["prediction"] in ("neg", "pos") for r in scored)
        tally.round_tripped.add(key)

    check()
    tally.check()
