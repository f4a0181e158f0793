"""Rows in and out: the one way every command reads and writes CSV / TSV / JSONL / Parquet files.

`TableReader(path)` opens a file with its format's reader, `AtomicTableWriter(path, columns)` with
its format's writer: one of each per format, each in its own module (delimited.py: CSV and TSV,
jsonl.py, parquet.py), none of them branching on the format. Every command, training and the
benchmarks go through these two (plus `row_text` / `row_label` / `read_labelled` for the fields a
task needs), so a rule fixed here holds everywhere:

- errors are `TableError`s naming the file, the line and the column, never a traceback;
- CSV/TSV values are strings; a JSONL row keeps its own keys and its JSON values and types
  (7 stays 7, true stays true, null stays null), and is written back the same way;
- a duplicated CSV/TSV header name, a duplicated JSONL key, or NaN/Infinity (not JSON) is refused;
- reading decodes line by line (`LineReader`), so a non-UTF-8 byte is reported with its line
  number and memory does not grow with the file; Parquet is read by record batches;
- writing goes to a hidden temporary file beside the output (`AtomicFile`), renamed over it only
  when complete (with the mode a plain `open()` would give): an interrupted job leaves no partial
  output and the previous output untouched;
- `reader.chunks(n)` gives `Chunk`s of n rows; a Parquet chunk carries its Arrow rows as read;
- Parquet values JSON has no type for are written to CSV/TSV/JSONL as text: timestamps and dates
  in ISO 8601, decimals as their digits, binary as base64.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ipt_edge.atomic import commit, umask
from ipt_edge.tokenizer import Text, text_problem

if TYPE_CHECKING:
    from typing import TypeAlias

    import pyarrow as pa

    from ipt_edge.delimited import DelimitedReader, DelimitedWriter
    from ipt_edge.jsonl import JsonlReader, JsonlWriter
    from ipt_edge.parquet import ParquetReader, ParquetWriter

    Reader: TypeAlias = DelimitedReader | JsonlReader | ParquetReader
    Writer: TypeAlias = DelimitedWriter | JsonlWriter | ParquetWriter

FORMATS = ("csv", "tsv", "jsonl", "parquet")
T = TypeVar("T")


class TableError(ValueError):
    """Bad input data; the message names the file, the line and what was expected."""


def detect_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("tsv", "tab"):
        return "tsv"
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    if suffix in ("parquet", "pq") or Path(path).is_dir():
        return "parquet"
    raise TableError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; use .csv, .tsv, .jsonl or .parquet"
    )


def _known(path: Path, fmt: str | None) -> str:
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise TableError(f"{path}: unknown format {fmt!r}; expected one of {FORMATS}")
    return fmt


def TableReader(path: str | Path, fmt: str | None = None) -> Reader:  # a factory, named as the class it was
    """The reader of a table's format (default: from its suffix; a folder is Parquet). Iterating it
    gives `(line, row)`: CSV/TSV rows map each header name to a string, JSONL rows are the line's
    own object, Parquet rows are named 'row 7' (or 'b.parquet row 7' in a folder). `columns` is
    the header (JSONL: the first row's keys, once read); `schema` is Parquet's Arrow schema."""
    from ipt_edge.delimited import DelimitedReader
    from ipt_edge.jsonl import JsonlReader
    from ipt_edge.parquet import ParquetReader

    path = Path(path)
    fmt = _known(path, fmt)
    if fmt == "parquet":
        return ParquetReader(path)
    return JsonlReader(path) if fmt == "jsonl" else DelimitedReader(path, fmt)


def AtomicTableWriter(  # a factory, named as the class it was
    path: str | Path,
    columns: list[str],
    fmt: str | None = None,
    *,
    schema: pa.Schema | None = None,
    temp_dir: Path | None = None,
    append_to: tuple[Path, int] | None = None,
) -> Writer:
    """The writer of the output's format (default: from its suffix): `write(row)` for CSV/TSV
    (`columns`, in order) and JSONL (each row's own keys), `write_table(table)` for Parquet (Arrow
    tables of `schema`). See AtomicFile for commit(), abort(), checkpoint(), and for `temp_dir`
    and `append_to`, which resumable jobs use."""
    from ipt_edge.delimited import DelimitedWriter
    from ipt_edge.jsonl import JsonlWriter
    from ipt_edge.parquet import ParquetWriter

    path = Path(path)
    fmt = _known(path, fmt)
    if fmt == "parquet":
        if append_to is not None:
            raise ValueError("a Parquet file cannot be appended to; write parts instead")
        if schema is None:
            raise ValueError("a Parquet output needs a schema")
        return ParquetWriter(path, schema, temp_dir=temp_dir)
    if fmt == "jsonl":
        return JsonlWriter(path, temp_dir=temp_dir, append_to=append_to)
    return DelimitedWriter(path, columns, fmt, temp_dir=temp_dir, append_to=append_to)


def os_error(path: Path, error: OSError, doing: str) -> TableError:
    return TableError(f"{path}: cannot {doing} ({error.strerror or error})")


# ---- what the readers share -----------------------------------------------------------------------


class Chunk:
    """Consecutive rows of a table: `lines` (line numbers, or Parquet row names) and either `rows`
    (dicts, CSV/TSV/JSONL) or `table` (the Arrow rows as read from Parquet)."""

    def __init__(self, lines: list[Any], rows: list[dict[str, Any]] | None, table: Any = None):
        self.lines = lines
        self._rows = rows
        self.table = table

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict of Python values (for Parquet, converted on first use)."""
        if self._rows is None:
            self._rows = self.table.to_pylist()
        return self._rows

    def fields(self, columns: list[str]) -> list[dict[str, Any]]:
        """Rows holding at least `columns` (Parquet: only those, converted column by column)."""
        if self._rows is not None or self.table is None:
            return self.rows
        values = {c: self.table.column(c).to_pylist() for c in columns}
        return [{c: values[c][i] for c in columns} for i in range(len(self.lines))]


class LineReader:
    """What the CSV/TSV and JSONL readers share: the file, read line by line as UTF-8 (a bad byte is
    named by its line; a first line's BOM is dropped), progress in bytes, and chunks of rows."""

    schema: pa.Schema | None = None  # only Parquet input has an Arrow schema
    columns: list[str]

    def __init__(self, path: Path, fmt: str):
        self.path, self.format = path, fmt
        self.columns = []
        if self.path.is_dir():
            raise TableError(f"{self.path}: is a folder; expected a .csv, .tsv, .jsonl or .parquet file")
        if not self.path.is_file():
            raise TableError(f"{self.path}: no such file")
        try:
            self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as error:
            raise os_error(self.path, error, "read it") from None
        self.size = self.path.stat().st_size  # progress: bytes
        self.bytes_read = 0
        self.line_number = 0

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:  # each reader reads its own rows
        raise NotImplementedError

    def lines(self) -> Iterator[str]:
        for raw in self._file:
            self.line_number += 1
            self.bytes_read += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TableError(
                    f"{self.path}:{self.line_number}: not valid UTF-8 "
                    f"(byte 0x{raw[error.start]:02x} at column {error.start + 1})"
                ) from None
            if self.line_number == 1:
                line = line.removeprefix("\ufeff")
            yield line

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows in `Chunk`s of `size` (the last may be shorter)."""
        chunk = Chunk([], [])
        for line, row in self:
            chunk.lines.append(line)
            chunk.rows.append(row)
            if len(chunk.lines) == size:
                yield chunk
                chunk = Chunk([], [])
        if chunk.lines:
            yield chunk

    def close(self) -> None:
        self._file.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- what the writers share -----------------------------------------------------------------------


class AtomicFile:
    """What every writer shares: rows go to a hidden temporary file, which `commit()` renames over
    `path` once complete and `abort()` removes.

    For resumable jobs: `temp_dir` puts the temporary file there (default: beside `path`);
    `append_to=(temp_file, size)` reopens an earlier temporary file, cut back to `size` bytes, to
    append to it (the writer then writes no second header); `checkpoint()` makes what was written
    durable and returns the file's size, from which a later run may append."""

    def __init__(
        self,
        path: Path,
        *,
        binary: bool = False,
        temp_dir: Path | None = None,
        append_to: tuple[Path, int] | None = None,
    ):
        self.path = path
        self.rows = 0  # data rows written, for error messages
        if self.path.is_dir():
            raise TableError(f"{self.path}: is a folder; -o needs a file name")
        try:
            if append_to is not None:
                self._temp, size = append_to
                raw = open(self._temp, "r+b")  # noqa: SIM115 (closed by commit() or abort())
                raw.truncate(size)
                raw.seek(size)
                self.file: IO[Any] = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                return
            folder = temp_dir or self.path.parent
            folder.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=folder)
            self._temp = Path(temp)
            self.file = (
                os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", encoding="utf-8", newline="")
            )
        except OSError as error:
            raise os_error(self.path, error, "write it") from None

    @property
    def temp(self) -> Path:
        """The temporary file being written."""
        return self._temp

    def checkpoint(self) -> int:
        """Make every row written so far durable; the file's size."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            return os.fstat(self.file.fileno()).st_size
        except OSError as error:
            self.abort()
            raise os_error(self.path, error, "write it") from None

    def finish(self) -> None:
        """Complete and close the temporary file (durable, with a plain file's mode), not yet renamed."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self._temp, 0o666 & ~umask())  # mkstemp makes 0600; an output is a plain file
        except OSError as error:
            self.abort()
            raise os_error(self.path, error, "write it") from None

    def commit(self) -> None:
        self.finish()
        try:
            commit(self._temp, self.path)
        except OSError as error:
            self.abort()
            raise os_error(self.path, error, "write it") from None

    def release(self) -> None:
        """Close the temporary file and keep it (a resumable job continues it later)."""
        self.file.close()

    def abort(self) -> None:
        self.file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# ---- values ---------------------------------------------------------------------------------------


def json_default(value: Any) -> Any:
    """JSON for the Python values Parquet gives that JSON has no type for."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def as_text(value: Any) -> str:
    """A value as a CSV/TSV field: strings as they are, null as empty, anything else as JSON
    (timestamps and dates in ISO 8601, decimals as digits, binary as base64)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (datetime.date, datetime.time, decimal.Decimal, bytes)):
        return json_default(value)
    return json.dumps(value, ensure_ascii=False, default=json_default)


def is_utf8(text: str) -> bool:
    """Whether the text can be written as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def finite_or_none(value: float) -> float | None:
    """A probability for JSON output: NaN and infinities become null."""
    return value if math.isfinite(value) else None


# ---- the fields a task reads ----------------------------------------------------------------------


def require_columns(path: str | Path, columns: list[str], wanted: dict[str, str | None]) -> None:
    """Fail with the available columns when an asked-for column is missing.

    `wanted` maps the option name (e.g. "--text-column") to the column asked for (None: unused).
    """
    for option, column in wanted.items():
        if column is not None and column not in columns:
            raise TableError(
                f"{path}: no column {column!r} (asked for by {option}); "
                f"the file has: {', '.join(columns) or '(none)'}"
            )


def _field(path: Path, line: Any, row: dict[str, Any], column: str) -> Any:
    if column not in row:
        raise TableError(f"{path}:{line}: no column {column!r}; this row has: {', '.join(row) or '(none)'}")
    return row[column]


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=json_default)
    return text if len(text) <= 200 else text[:200] + "..."


def row_text(path: Path, line: Any, row: dict[str, Any], column: str, pair_column: str | None = None) -> Text:
    """The text (or (text, text_pair)) of a row: each column present and a string. What the
    strings hold is checked once, where they come into the runtime (tokenizer.text_problem)."""
    parts = []
    for name in (column, pair_column) if pair_column else (column,):
        value = _field(path, line, row, name)
        if not isinstance(value, str):
            raise TableError(f"{path}:{line}: column {name!r} should be a string, got {_shown(value)}")
        parts.append(value)
    return (parts[0], parts[1]) if pair_column else parts[0]


def row_label(path: Path, line: Any, row: dict[str, Any], column: str) -> str:
    """A row's gold label as text ("1" for a JSON 1), stripped; present and not blank."""
    value = _field(path, line, row, column)
    if isinstance(value, (dict, list)) or value is None:
        raise TableError(f"{path}:{line}: column {column!r} should be a label, got {_shown(value)}")
    label = as_text(value).strip()
    if not label:
        raise TableError(f"{path}:{line}: column {column!r} (the label) is empty")
    return label


def read_labelled(
    path: str | Path, text_column: str, pair_column: str | None, label_column: str
) -> Iterator[tuple[int, Text, str]]:
    """`(line, text, label)` of each row of a labelled file; the columns are checked at the first row.

    Training's texts come in here, and go to the tokenizer without Bundle.run: so they are
    checked here (text_problem), each named by its line and column."""
    path = Path(path)
    wanted = {"--text-column": text_column, "--text-pair-column": pair_column, "--label-column": label_column}
    with TableReader(path) as reader:
        for count, (line, row) in enumerate(reader):
            if count == 0:  # JSONL knows its columns only once it has read a row
                require_columns(path, reader.columns, wanted)
            text = row_text(path, line, row, text_column, pair_column)
            parts = text if isinstance(text, tuple) else (text,)
            for column, part in zip((text_column, pair_column), parts, strict=False):
                problem = text_problem(part)
                if problem is not None:
                    raise TableError(f"{path}:{line}: column {column!r} {problem}")
            yield line, text, row_label(path, line, row, label_column)
