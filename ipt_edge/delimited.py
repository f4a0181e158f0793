"""CSV and TSV tables: a header row, then one row per line; every value a string.

CSV is read and written with the csv module's quoting (a field may hold the delimiter, quotes
and line breaks); TSV is plain, with no quoting and no escapes, so quotes and backslashes come
back as written and a tab or line break cannot be held (writing one is refused).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ipt_edge.tables import AtomicFile, LineReader, TableError, as_text, is_utf8

# A field may be long (a whole review, a document); memory is bounded by the token budget later,
# not here. The csv module's default 131,072-character limit only turned long texts into errors.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DelimitedReader(LineReader):
    """`(line_number, row)` of a CSV or TSV file, each row mapping the header's names to strings."""

    def __init__(self, path: Path, fmt: str):
        super().__init__(path, fmt)
        self._csv = csv.reader(
            self.lines(),
            delimiter="\t" if fmt == "tsv" else ",",
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
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
                    f"{self.path}:{self.line_number}: column {name!r} appears twice in the header; "
                    "each column needs its own name"
                )
            seen.add(name)

    def _next_fields(self) -> list[str] | None:
        try:
            return next(self._csv, None)
        except csv.Error as error:  # e.g. a NUL byte, or a quote left open at the end of the file
            raise TableError(f"{self.path}:{self.line_number}: {error}") from None

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        width = len(self.columns)
        while (fields := self._next_fields()) is not None:
            if not fields:
                continue  # blank line
            if len(fields) != width:
                raise TableError(
                    f"{self.path}:{self.line_number}: expected {width} fields "
                    f"({', '.join(self.columns)}), found {len(fields)}"
                )
            yield self.line_number, dict(zip(self.columns, fields, strict=True))


class DelimitedWriter(AtomicFile):
    """Write `columns` of each row to a CSV or TSV file (a value that is not a string as JSON). A
    row with a key outside `columns` is refused, since the file could not hold it."""

    def __init__(
        self,
        path: Path,
        columns: list[str],
        fmt: str,
        *,
        temp_dir: Path | None = None,
        append_to: tuple[Path, int] | None = None,
    ):
        super().__init__(path, temp_dir=temp_dir, append_to=append_to)
        self.columns, self.format = columns, fmt
        if fmt == "tsv":
            # Plain TSV, as DelimitedReader reads it: no quoting and no escapes (see _write_fields).
            self._csv = csv.writer(
                self.file, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n"
            )
        else:
            self._csv = csv.writer(self.file, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            # QUOTE_MINIMAL leaves a field with a carriage return unquoted when lines end in "\n",
            # and a reader then takes "x\r" at the end of a line for "x": such rows quote every field.
            self._quote_all = csv.writer(self.file, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if append_to is None:
            try:
                self._write_fields(columns, "the header")
            except BaseException:
                self.abort()
                raise

    def write(self, row: dict[str, Any]) -> None:
        self.rows += 1
        extra = [key for key in row if key not in self.columns]
        if extra:
            raise TableError(
                f"{self.path}: row {self.rows} has field(s) {extra} that the first row did not have; "
                f"a {self.format.upper()} file has one set of columns (write a .jsonl output instead)"
            )
        values = [as_text(row.get(c)) for c in self.columns]
        for column, value in zip(self.columns, values, strict=True):
            if not is_utf8(value):
                raise TableError(
                    f"{self.path}: row {self.rows}, column {column!r} holds a lone surrogate, which a "
                    f"{self.format.upper()} file cannot; write a .jsonl output instead"
                )
        self._write_fields(values, f"row {self.rows}")

    def _write_fields(self, values: list[str], where: str) -> None:
        if self.format == "tsv":
            for column, value in zip(self.columns, values, strict=True):
                if any(c in value for c in "\t\n\r"):
                    raise TableError(
                        f"{self.path}: {where}, column {column!r} holds a tab or line break, "
                        "which TSV cannot; write a .csv or .jsonl output instead"
                    )
        elif any("\r" in value for value in values):
            self._quote_all.writerow(values)
            return
        self._csv.writerow(values)
