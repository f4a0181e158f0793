"""Table reading and writing: formats, errors that name the line, and all-or-nothing outputs."""

import pytest

from ipt_edge.tables import AtomicTableWriter, TableError, TableReader, read_labelled


def test_tsv_is_read_without_quote_processing(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text('text\tlabel\n"quoted" text\t1\n')
    with TableReader(path) as reader:
        assert list(reader) == [(2, {"text": '"quoted" text', "label": "1"})]


def test_wrong_field_count_names_the_line(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("text\tlabel\nfine\t1\nno label here\n")
    with (
        pytest.raises(TableError, match=r"a.tsv:3: expected 2 fields \(text, label\), found 1"),
        TableReader(path) as reader,
    ):
        list(reader)


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(TableError, match=r"a.jsonl:2: invalid JSON"), TableReader(path) as reader:
        list(reader)


def test_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "a.xlsx"
    path.write_text("x")
    with pytest.raises(TableError, match=r"cannot tell the format"):
        TableReader(path)


def test_writer_leaves_nothing_when_aborted(tmp_path):
    path = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), AtomicTableWriter(path, ["a"]) as writer:
        writer.write({"a": "1"})
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_writer_output_appears_complete(tmp_path):
    path = tmp_path / "out.csv"
    with AtomicTableWriter(path, ["a", "b"]) as writer:
        writer.write({"a": "x,y", "b": 2})
    assert path.read_text() == 'a,b\n"x,y",2\n'


def test_tsv_written_and_read_back_keeps_quotes_and_backslashes(tmp_path):
    path = tmp_path / "out.tsv"
    text = 'he said "fine" for \\$400 and\\then'
    with AtomicTableWriter(path, ["text", "label"]) as writer:
        writer.write({"text": text, "label": "1"})
    with TableReader(path) as reader:
        assert list(reader) == [(2, {"text": text, "label": "1"})]


def test_tsv_refuses_a_tab_inside_a_field_and_leaves_no_output(tmp_path):
    path = tmp_path / "out.tsv"
    with (
        pytest.raises(TableError, match=r"row 2, column 'text' holds a tab"),
        AtomicTableWriter(path, ["text"]) as writer,
    ):
        writer.write({"text": "fine"})
        writer.write({"text": "a\tb"})
    assert list(tmp_path.iterdir()) == []


def test_a_labelled_file_names_a_text_that_cannot_be_trained_on(tmp_path):
    # Training's texts go to the tokenizer without Bundle.run: read_labelled checks them itself.
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": "fine", "b": "ok", "y": 1}\n{"a": "fine", "b": "\\ud800", "y": 0}\n')
    with pytest.raises(TableError, match=r"train.jsonl:2: column 'b' is not valid UTF-8 \(it holds a lone"):
        list(read_labelled(path, "a", "b", "y"))
    path.write_text('{"a": "fine", "y": 1}\n{"a": " \\t", "y": 0}\n')
    with pytest.raises(TableError, match=r"train.jsonl:2: column 'a' is empty"):
        list(read_labelled(path, "a", None, "y"))
