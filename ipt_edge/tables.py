"""Rows in and out: the one reader and the one writer of CSV / TSV / JSONL files.

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

Parquet is meant to come in as one more format of the same two classes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ipt_edge.atomic import umask
from ipt_edge.tokenization import Text

FORMATS = ("csv", "tsv", "jsonl")

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
    raise TableError(f"{path}: cannot tell the format from the suffix {suffix!r}; use .csv, .tsv or .jsonl")


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
        if self.path.is_dir():
            raise TableError(f"{self.path}: is a folder; expected a .csv, .tsv or .jsonl file")
        if not self.path.is_file():
            raise TableError(f"{self.path}: no such file")
        try:
            self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as error:
            raise _os_error(self.path, error, "read it") from None
        self.size = self.path.stat().st_size
        self.bytes_read = 0  # for progress bars
        self.columns: list[str] = []
        self._line_number = 0
        if self.format != "jsonl":
            self._csv = csv.reader(
                self._decoded_lines(),
                delimiter="\t" if self.format == "tsv" else ",",
                quoting=csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL,
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

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
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
        self._file.close()

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_text(value: Any) -> str:
    """A value as a CSV/TSV field: strings as they are, null as empty, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _encodable(text: str) -> bool:
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


def _field(path: Path, line: int, row: dict[str, Any], column: str) -> Any:
    if column not in row:
        raise TableError(f"{path}:{line}: no column {column!r}; this row has: {', '.join(row) or '(none)'}")
    return row[column]


def row_text(path: Path, line: int, row: dict[str, Any], column: str, pair_column: str | None = None) -> Text:
    """The text (or (text, text_pair)) of a row: present, a string, not blank."""
    parts = []
    for name in (column, pair_column) if pair_column else (column,):
        value = _field(path, line, row, name)
        if not isinstance(value, str):
            raise TableError(f"{path}:{line}: column {name!r} should be a string, got {json.dumps(value)}")
        if not value.strip():
            raise TableError(f"{path}:{line}: column {name!r} is empty")
        if not _encodable(value):
            raise TableError(
                f"{path}:{line}: column {name!r} holds a lone surrogate (\\ud800-\\udfff), not text"
            )
        parts.append(value)
    return (parts[0], parts[1]) if pair_column else parts[0]


def row_label(path: Path, line: int, row: dict[str, Any], column: str) -> str:
    """A row's gold label as text ("1" for a JSON 1), stripped; present and not blank."""
    value = _field(path, line, row, column)
    if isinstance(value, (dict, list)) or value is None:
        raise TableError(f"{path}:{line}: column {column!r} should be a label, got {json.dumps(value)}")
    label = as_text(value).strip()
    if not label:
        raise TableError(f"{path}:{line}: column {column!r} (the label) is empty")
    return label


def read_labelled(
    path: str | Path, text_column: str, pair_column: str | None, label_column: str
) -> Iterator[tuple[int, Text, str]]:
    """`(line, text, label)` of each row of a labelled file; the columns are checked at the first row."""
    path = Path(path)
    wanted = {"--text-column": text_column, "--text-pair-column": pair_column, "--label-column": label_column}
    with TableReader(path) as reader:
        for count, (line, row) in enumerate(reader):
            if count == 0:  # JSONL knows its columns only once it has read a row
                require_columns(path, reader.columns, wanted)
            yield (
                line,
                row_text(path, line, row, text_column, pair_column),
                row_label(path, line, row, label_column),
            )


class AtomicTableWriter:
    """Write rows to a temporary file; `commit()` renames it over `path`, `abort()` removes it.

    CSV/TSV write `columns` (a value that is not a string is written as JSON; a row with a key
    outside `columns` is refused, since the file could not hold it). JSONL writes each row's own
    keys and values; `columns` is then only the order of the first keys.
    """

    def __init__(self, path: str | Path, columns: list[str], fmt: str | None = None):
        self.path = Path(path)
        self.format = fmt or detect_format(self.path)
        self.columns = columns
        if self.path.is_dir():
            raise TableError(f"{self.path}: is a folder; -o needs a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp_name = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent
            )
        except OSError as error:
            raise _os_error(self.path, error, "write it") from None
        self._temp = Path(temp_name)
        self._file = os.fdopen(handle, "w", encoding="utf-8", newline="")
        self._rows = 0  # data rows written, for error messages
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
        if self.format != "jsonl":
            try:
                self._write_fields(columns, "the header")
            except BaseException:
                self.abort()
                raise

    def write(self, row: dict[str, Any]) -> None:
        self._rows += 1
        if self.format == "jsonl":
            try:
                text = json.dumps(row, ensure_ascii=False, allow_nan=False)
            except ValueError:
                raise TableError(
                    f"{self.path}: row {self._rows} holds NaN or Infinity, which JSON cannot"
                ) from None
            if not _encodable(text):  # a lone surrogate read from a JSON escape: write it escaped again
                text = json.dumps(row, ensure_ascii=True, allow_nan=False)
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
            if not _encodable(value):
                raise TableError(
                    f"{self.path}: row {self._rows}, column {column!r} holds a lone surrogate, which a "
                    f"{self.format.upper()} file cannot; write a .jsonl output instead"
                )
        self._write_fields(values, f"row {self._rows}")

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

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._temp, 0o666 & ~umask())  # mkstemp makes 0600; an output is a plain file
            os.replace(self._temp, self.path)
        except OSError as error:
            self.abort()
            raise _os_error(self.path, error, "write it") from None

    def abort(self) -> None:
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
