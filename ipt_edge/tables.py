"""Streaming CSV / TSV / JSONL rows in and out, with errors that name the file and line.

Reading decodes line by line, so a non-UTF-8 byte is reported with its line number, and memory
does not grow with the file. Writing goes to a hidden temporary file beside the output and is
renamed over it only when complete: an interrupted job never leaves a partial output behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FORMATS = ("csv", "tsv", "jsonl")


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


class TableReader:
    """Iterate `(line_number, row)` over a table; `row` maps column name to string."""

    def __init__(self, path: str | Path, fmt: str | None = None):
        self.path = Path(path)
        self.format = fmt or detect_format(self.path)
        if self.format not in FORMATS:
            raise TableError(f"{self.path}: unknown format {self.format!r}; expected one of {FORMATS}")
        if not self.path.is_file():
            raise TableError(f"{self.path}: no such file")
        self.size = self.path.stat().st_size
        self.bytes_read = 0  # for progress bars
        self.columns: list[str] = []
        self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        self._line_number = 0
        if self.format != "jsonl":
            self._csv = csv.reader(
                self._decoded_lines(),
                delimiter="\t" if self.format == "tsv" else ",",
                quoting=csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL,
            )
            header = next(self._csv, None)
            if header is None:
                raise TableError(f"{self.path}: the file is empty; expected a header row")
            self.columns = [name.strip() for name in header]

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

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        if self.format == "jsonl":
            yield from self._iter_jsonl()
            return
        width = len(self.columns)
        for fields in self._csv:
            if not fields:
                continue  # blank line
            if len(fields) != width:
                raise TableError(
                    f"{self.path}:{self._line_number}: expected {width} fields "
                    f"({', '.join(self.columns)}), found {len(fields)}"
                )
            yield self._line_number, dict(zip(self.columns, fields, strict=True))

    def _iter_jsonl(self) -> Iterator[tuple[int, dict[str, str]]]:
        for line in self._decoded_lines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TableError(f"{self.path}:{self._line_number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise TableError(f"{self.path}:{self._line_number}: expected a JSON object per line")
            if not self.columns:
                self.columns = list(record)
            row = {key: _as_text(value) for key, value in record.items()}
            yield self._line_number, row

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


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


class AtomicTableWriter:
    """Write rows to a temporary file; `commit()` renames it over `path`, `abort()` removes it."""

    def __init__(self, path: str | Path, columns: list[str], fmt: str | None = None):
        self.path = Path(path)
        self.format = fmt or detect_format(self.path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent
        )
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
        if self.format != "jsonl":
            self._write_fields(columns, "the header")

    def write(self, row: dict[str, Any]) -> None:
        self._rows += 1
        if self.format == "jsonl":
            self._file.write(json.dumps({c: row[c] for c in self.columns}, ensure_ascii=False) + "\n")
        else:
            self._write_fields([row[c] for c in self.columns], f"row {self._rows}")

    def _write_fields(self, values: list[Any], where: str) -> None:
        if self.format == "tsv":
            for column, value in zip(self.columns, values, strict=True):
                if isinstance(value, str) and any(c in value for c in "\t\n\r"):
                    raise TableError(
                        f"{self.path}: {where}, column {column!r} holds a tab or line break, "
                        "which TSV cannot; write a .csv or .jsonl output instead"
                    )
        self._csv.writerow(values)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self.path)

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
