"""Rows in and out: the one reader and the one writer of CSV / TSV / JSONL / Parquet files.

Every command, training and the benchmarks read labelled and unlabelled files through
`TableReader` (plus `row_text` / `row_label` / `read_labelled` for the fields a task needs) and
write through `AtomicTableWriter`, so a rule fixed here holds everywhere:

- errors are `TableError`s naming the file, the line and the column, never a traceback;
- CSV/TSV values are strings; a JSONL row keeps its own keys and its JSON values and types
  (7 stays 7, true stays true, null stays null), and is written back the same way;
- a duplicated CSV/TSV header name, a duplicated JSONL key, or NaN/Infinity (not JSON) is refused;
- reading decodes line by line, so a non-UTF-8 byte is reported with its line number and memory
  does not grow with the file;
- writing goes to a hidden temporary file beside the output, renamed over it only when complete
  (with the mode a plain `open()` would give): an interrupted job leaves no partial output and
  the previous output untouched.

Parquet (with pyarrow, the `parquet` extra) is one more format of the same two classes:

- a `.parquet` file, or a folder of them (read in name order as one dataset; hidden files and
  `_SUCCESS`-style markers are skipped), is read by record batches, so memory is bounded by the
  chunk size; a row's Python values (`to_pylist`) go through the same `row_text` / `row_label`
  checks, and errors name the file and the row (1-based, within that file);
- `TableReader.chunks(n)` gives `Chunk`s of n rows that carry, for Parquet input, the Arrow rows
  as read, so a Parquet output keeps every input column with its Arrow type and values;
- a Parquet output from CSV/TSV input has string columns; from JSONL it has one column per key
  (first-seen order, a missing key is null) typed from a first pass over the file: all booleans
  -> bool, all integers -> int64, numbers (integers and floats) -> float64, all strings -> string;
  a key whose values mix JSON types, or hold arrays/objects, or only nulls, is stored as its
  JSON text (a string column; null stays null), so nothing is lost and no run fails on it;
- Parquet values JSON has no type for are written to CSV/TSV/JSONL as text: timestamps and dates
  in ISO 8601, decimals as their digits, binary as base64.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import decimal
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from ipt_edge.atomic import commit, umask
from ipt_edge.tokenizer import Text, text_problem

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("csv", "tsv", "jsonl", "parquet")
PARQUET_INSTALL = 'pip install "ipt-edge[parquet]"'

# A field may be long (a whole review, a document); memory is bounded by the token budget later,
# not here. The csv module's default 131,072-character limit only turned long texts into errors.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


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


def pyarrow_modules(path: str | Path) -> tuple[Any, Any]:
    """`(pyarrow, pyarrow.parquet)`, or a TableError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise TableError(f"{path}: reading or writing Parquet needs pyarrow: {PARQUET_INSTALL}") from None
    return pyarrow, pyarrow.parquet


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a dataset: the file itself, or a folder's files in name order (recursive;
    names starting with '.' or '_', such as _SUCCESS or _metadata, are skipped)."""
    if not path.is_dir():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise TableError(f"{path}: the folder holds no Parquet files")
    return files


def _os_error(path: Path, error: OSError, doing: str) -> TableError:
    return TableError(f"{path}: cannot {doing} ({error.strerror or error})")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"key {key!r} appears twice")
        record[key] = value
    return record


class TableReader:
    """Iterate `(line_number, row)` over a table.

    CSV/TSV rows map each header name to a string; JSONL rows are the line's own object (its keys,
    its JSON values). `columns` is the header, or the first JSONL row's keys.
    """

    def __init__(self, path: str | Path, fmt: str | None = None):
        self.path = Path(path)
        self.format = fmt or detect_format(self.path)
        if self.format not in FORMATS:
            raise TableError(f"{self.path}: unknown format {self.format!r}; expected one of {FORMATS}")
        self.columns: list[str] = []
        self.schema: pa.Schema | None = None  # Parquet input: the Arrow schema of every file
        if self.format == "parquet":
            self._open_parquet()
            return
        if self.path.is_dir():
            raise TableError(f"{self.path}: is a folder; expected a .csv, .tsv, .jsonl or .parquet file")
        if not self.path.is_file():
            raise TableError(f"{self.path}: no such file")
        try:
            self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as error:
            raise _os_error(self.path, error, "read it") from None
        self.size = self.path.stat().st_size  # progress: bytes (Parquet: rows)
        self.bytes_read = 0  # for progress bars (Parquet: rows read)
        self._line_number = 0
        if self.format != "jsonl":
            self._csv = csv.reader(
                self._decoded_lines(),
                delimiter="\t" if self.format == "tsv" else ",",
                quoting=csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL,
                strict=True,  # a quote left open, or text after a closing quote, is an error, not a guess
            )
            header = self._next_fields()
            if header is None:
                self.close()
                raise TableError(f"{self.path}: the file is empty; expected a header row")
            self.columns = [name.strip() for name in header]
            seen: set[str] = set()
            for name in self.columns:
                if name in seen:
                    self.close()
                    raise TableError(
                        f"{self.path}:{self._line_number}: column {name!r} appears twice in the header; "
                        "each column needs its own name"
                    )
                seen.add(name)

    def _open_parquet(self) -> None:
        _, pq = pyarrow_modules(self.path)
        if not self.path.exists():
            raise TableError(f"{self.path}: no such file or folder")
        self.files = parquet_files(self.path)
        self._parquet_files = []
        self.size = 0
        self.bytes_read = 0
        for file in self.files:
            try:
                parquet = pq.ParquetFile(file)
            except OSError as error:
                raise _os_error(file, error, "read it") from None
            except Exception as error:  # pyarrow raises ArrowInvalid on a file that is not Parquet
                raise TableError(f"{file}: not a readable Parquet file ({str(error)[:200]})") from None
            schema = parquet.schema_arrow
            if self.schema is None:
                self.schema = schema
            elif not schema.equals(self.schema, check_metadata=False):
                differ = [
                    f"{f.name}: {f.type} in {file.name}, "
                    f"{self.schema.field(f.name).type if f.name in self.schema.names else 'absent'} "
                    f"in {self.files[0].name}"
                    for f in schema
                    if f.name not in self.schema.names or self.schema.field(f.name).type != f.type
                ] or [f"columns {schema.names} vs {self.schema.names}"]
                raise TableError(
                    f"{file}: its columns differ from {self.files[0].name}'s ({'; '.join(differ)}); "
                    "the files of one dataset need one schema"
                )
            self._parquet_files.append(parquet)
            self.size += parquet.metadata.num_rows
        assert self.schema is not None
        self.columns = list(self.schema.names)
        if len(set(self.columns)) != len(self.columns):
            twice = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise TableError(
                f"{self.files[0]}: column(s) {twice} appear twice; each column needs its own name"
            )

    def _parquet_batches(self, rows: int) -> Iterator[tuple[Path, int, Any]]:
        """`(file, first row number in it (1-based), record batch)` over every file in order."""
        for file, parquet in zip(self.files, self._parquet_files, strict=True):
            first = 1
            try:
                for batch in parquet.iter_batches(batch_size=rows):
                    yield file, first, batch
                    first += batch.num_rows
                    self.bytes_read += batch.num_rows
            except OSError as error:
                raise _os_error(file, error, "read it") from None
            except Exception as error:  # ArrowInvalid and friends on a damaged file
                if isinstance(error, TableError):
                    raise
                raise TableError(
                    f"{file}: row {first} onwards: cannot read it ({str(error)[:200]})"
                ) from None

    def _where(self, file: Path, row: int) -> str:
        """How a Parquet row is named after the reader's path in a message: 'row 7' or 'b.parquet row 7'."""
        return f"row {row}" if file == self.path else f"{file.relative_to(self.path)} row {row}"

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows in `Chunk`s of `size` (the last may be shorter); Parquet chunks carry Arrow rows."""
        if self.format != "parquet":
            chunk = Chunk([], [])
            for line, row in self:
                chunk.lines.append(line)
                chunk.rows.append(row)
                if len(chunk.lines) == size:
                    yield chunk
                    chunk = Chunk([], [])
            if chunk.lines:
                yield chunk
            return
        import pyarrow as pa

        pending: list[Any] = []  # record batches not yet in a chunk
        lines: list[str] = []
        for file, first, batch in self._parquet_batches(size):
            pending.append(batch)
            lines.extend(self._where(file, first + i) for i in range(batch.num_rows))
            while len(lines) >= size:
                table = pa.Table.from_batches(pending, schema=self.schema)
                yield Chunk(lines[:size], None, table.slice(0, size))
                rest = table.slice(size)
                pending = rest.to_batches() if rest.num_rows else []
                lines = lines[size:]
        if lines:
            yield Chunk(lines, None, pa.Table.from_batches(pending, schema=self.schema))

    def _decoded_lines(self) -> Iterator[str]:
        for raw in self._file:
            self._line_number += 1
            self.bytes_read += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TableError(
                    f"{self.path}:{self._line_number}: not valid UTF-8 "
                    f"(byte 0x{raw[error.start]:02x} at column {error.start + 1})"
                ) from None
            if self._line_number == 1:
                line = line.removeprefix("\ufeff")
            yield line

    def _next_fields(self) -> list[str] | None:
        try:
            return next(self._csv, None)
        except csv.Error as error:  # e.g. a NUL byte, or a quote left open at the end of the file
            raise TableError(f"{self.path}:{self._line_number}: {error}") from None

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        """`(line, row)`; for Parquet, `line` names the row ('row 7', or 'file row 7' in a folder)."""
        if self.format == "parquet":
            for file, first, batch in self._parquet_batches(1024):
                for offset, row in enumerate(batch.to_pylist()):
                    yield self._where(file, first + offset), row
            return
        if self.format == "jsonl":
            yield from self._iter_jsonl()
            return
        width = len(self.columns)
        while (fields := self._next_fields()) is not None:
            if not fields:
                continue  # blank line
            if len(fields) != width:
                raise TableError(
                    f"{self.path}:{self._line_number}: expected {width} fields "
                    f"({', '.join(self.columns)}), found {len(fields)}"
                )
            yield self._line_number, dict(zip(self.columns, fields, strict=True))

    def _iter_jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for line in self._decoded_lines():
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
            except json.JSONDecodeError as error:
                raise TableError(f"{self.path}:{self._line_number}: invalid JSON ({error.msg})") from None
            except (ValueError, RecursionError) as error:
                raise TableError(f"{self.path}:{self._line_number}: invalid JSON ({error})") from None
            if not isinstance(record, dict):
                raise TableError(f"{self.path}:{self._line_number}: expected a JSON object per line")
            if not self.columns:
                self.columns = list(record)
            yield self._line_number, record

    def close(self) -> None:
        if self.format != "parquet":
            self._file.close()

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "json"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"  # arrays and objects


def arrow_schema_for_rows(path: Path, fmt: str, columns: list[str]) -> tuple[pa.Schema, set[str]]:
    """The Arrow schema a CSV/TSV/JSONL file's rows take in a Parquet output, and the columns
    stored as JSON text. CSV/TSV: every column a string. JSONL: a first pass over the file types
    each key (see the module's docstring); keys in first-seen order."""
    pa, _ = pyarrow_modules(path)
    if fmt != "jsonl":
        return pa.schema([(c, pa.string()) for c in columns]), set()
    kinds: dict[str, set[str]] = {}
    with TableReader(path, fmt) as reader:
        for _, row in reader:
            for key, value in row.items():
                kinds.setdefault(key, set()).add(_json_kind(value))
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    fields, as_json = [], set()
    for key, found in kinds.items():
        found = found - {"null"}
        if found == {"int", "float"}:
            found = {"float"}
        if len(found) == 1 and next(iter(found)) in types:
            fields.append((key, types[next(iter(found))]))
        else:
            fields.append((key, pa.string()))
            as_json.add(key)
    return pa.schema(fields), as_json


def rows_to_arrow(rows: list[dict[str, Any]], schema: pa.Schema, as_json: set[str]) -> pa.Table:
    """Rows (CSV/TSV/JSONL) as an Arrow table of `schema` (from `arrow_schema_for_rows`)."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if field.name in as_json:
            values = [
                None if v is None else json.dumps(v, ensure_ascii=False, allow_nan=False) for v in values
            ]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class AtomicTableWriter:
    """Write rows to a temporary file; `commit()` renames it over `path`, `abort()` removes it.

    CSV/TSV write `columns` (a value that is not a string is written as JSON; a row with a key
    outside `columns` is refused, since the file could not hold it). JSONL writes each row's own
    keys and values; `columns` is then only the order of the first keys. Parquet takes Arrow
    tables of `schema` through `write_table` (one row group each).

    For resumable jobs: `temp_dir` puts the temporary file there (default: beside `path`);
    `append_to=(temp_file, size)` reopens an earlier temporary file (CSV/TSV/JSONL), cut back to
    `size` bytes, and appends to it without a second header; `checkpoint()` makes what was
    written durable and returns the file's size, from which a later run may append.
    """

    def __init__(
        self,
        path: str | Path,
        columns: list[str],
        fmt: str | None = None,
        *,
        schema: pa.Schema | None = None,
        temp_dir: Path | None = None,
        append_to: tuple[Path, int] | None = None,
    ):
        self.path = Path(path)
        self.format = fmt or detect_format(self.path)
        self.columns = columns
        self._rows = 0  # data rows written, for error messages
        self._parquet: Any = None  # the Parquet writer, once made
        if self.path.is_dir():
            raise TableError(f"{self.path}: is a folder; -o needs a file name")
        try:
            if append_to is not None:
                if self.format == "parquet":
                    raise ValueError("a Parquet file cannot be appended to; write parts instead")
                self._temp, size = append_to
                raw = open(self._temp, "r+b")  # noqa: SIM115 (closed by commit() or abort())
                raw.truncate(size)
                raw.seek(size)
                self._file: IO[Any] = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            else:
                folder = temp_dir or self.path.parent
                folder.mkdir(parents=True, exist_ok=True)
                handle, temp_name = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".partial", dir=folder
                )
                self._temp = Path(temp_name)
                if self.format == "parquet":
                    self._file = cast(IO[Any], os.fdopen(handle, "wb"))  # for the Parquet writer only
                else:
                    self._file = os.fdopen(handle, "w", encoding="utf-8", newline="")
        except OSError as error:
            raise _os_error(self.path, error, "write it") from None
        if self.format == "parquet":
            if schema is None:
                self.abort()
                raise ValueError("a Parquet output needs a schema")
            _, pq = pyarrow_modules(self.path)
            self.schema = schema
            try:
                self._parquet = pq.ParquetWriter(self._file, schema)
            except BaseException:
                self.abort()
                raise
            return
        if self.format == "tsv":
            # Plain TSV, as TableReader reads it: no quoting and no escapes, so quotes and
            # backslashes come back as written. A tab or line break cannot be held (see write()).
            self._csv = csv.writer(
                self._file, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n"
            )
        elif self.format == "csv":
            self._csv = csv.writer(self._file, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            # QUOTE_MINIMAL leaves a field with a carriage return unquoted when lines end in "\n",
            # and a reader then takes "x\r" at the end of a line for "x": such rows quote every field.
            self._quote_all = csv.writer(self._file, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if self.format != "jsonl" and append_to is None:
            try:
                self._write_fields(columns, "the header")
            except BaseException:
                self.abort()
                raise

    @property
    def temp(self) -> Path:
        """The temporary file being written."""
        return self._temp

    def write(self, row: dict[str, Any]) -> None:
        self._rows += 1
        if self.format == "parquet":
            raise ValueError("a Parquet output takes Arrow tables: use write_table")
        if self.format == "jsonl":
            try:
                text = json.dumps(row, ensure_ascii=False, allow_nan=False, default=json_default)
            except ValueError:
                raise TableError(
                    f"{self.path}: row {self._rows} holds NaN or Infinity, which JSON cannot"
                ) from None
            if not is_utf8(text):  # a lone surrogate read from a JSON escape: write it escaped again
                text = json.dumps(row, ensure_ascii=True, allow_nan=False, default=json_default)
            self._file.write(text + "\n")
            return
        extra = [key for key in row if key not in self.columns]
        if extra:
            raise TableError(
                f"{self.path}: row {self._rows} has field(s) {extra} that the first row did not have; "
                f"a {self.format.upper()} file has one set of columns (write a .jsonl output instead)"
            )
        values = [as_text(row.get(c)) for c in self.columns]
        for column, value in zip(self.columns, values, strict=True):
            if not is_utf8(value):
                raise TableError(
                    f"{self.path}: row {self._rows}, column {column!r} holds a lone surrogate, which a "
                    f"{self.format.upper()} file cannot; write a .jsonl output instead"
                )
        self._write_fields(values, f"row {self._rows}")

    def write_table(self, table: pa.Table) -> None:
        """Parquet: append `table` (the writer's schema; metadata may differ) as one row group."""
        if not table.schema.equals(self.schema, check_metadata=False):
            raise ValueError(f"table schema {table.schema} is not the output's {self.schema}")
        self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows += table.num_rows

    def _write_fields(self, values: list[str], where: str) -> None:
        if self.format == "tsv":
            for column, value in zip(self.columns, values, strict=True):
                if any(c in value for c in "\t\n\r"):
                    raise TableError(
                        f"{self.path}: {where}, column {column!r} holds a tab or line break, "
                        "which TSV cannot; write a .csv or .jsonl output instead"
                    )
        elif self.format == "csv" and any("\r" in value for value in values):
            self._quote_all.writerow(values)
            return
        self._csv.writerow(values)

    def checkpoint(self) -> int:
        """Make every row written so far durable; the file's size (CSV/TSV/JSONL)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            return os.fstat(self._file.fileno()).st_size
        except OSError as error:
            self.abort()
            raise _os_error(self.path, error, "write it") from None

    def finish(self) -> None:
        """Complete and close the temporary file (durable, with a plain file's mode), not yet renamed."""
        try:
            if self.format == "parquet":
                self._parquet.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._temp, 0o666 & ~umask())  # mkstemp makes 0600; an output is a plain file
        except OSError as error:
            self.abort()
            raise _os_error(self.path, error, "write it") from None

    def commit(self) -> None:
        self.finish()
        try:
            commit(self._temp, self.path)
        except OSError as error:
            self.abort()
            raise _os_error(self.path, error, "write it") from None

    def release(self) -> None:
        """Close the temporary file and keep it (a resumable job continues it later)."""
        self._file.close()

    def abort(self) -> None:
        if self._parquet is not None:
            with contextlib.suppress(Exception):  # already closed, or failed half-way: the file goes
                self._parquet.close()
        self._file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def finite_or_none(value: float) -> float | None:
    """A probability for JSON output: NaN and infinities become null."""
    return value if math.isfinite(value) else None
