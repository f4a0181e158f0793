"""JSONL tables: one JSON object per line. A row keeps its own keys, in its order, and its JSON
values and types (7 stays 7, true stays true, null stays null); it is written back the same way.
A duplicated key, or NaN/Infinity (not JSON), is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ipt_edge.tables import AtomicFile, LineReader, TableError, is_utf8, json_default


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"key {key!r} appears twice")
        record[key] = value
    return record


class JsonlReader(LineReader):
    """`(line_number, row)` of a JSONL file (blank lines skipped); `columns` is the first row's keys,
    known once it is read."""

    def __init__(self, path: Path):
        super().__init__(path, "jsonl")

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for line in self.lines():
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
            except json.JSONDecodeError as error:
                raise TableError(f"{self.path}:{self.line_number}: invalid JSON ({error.msg})") from None
            except (ValueError, RecursionError) as error:
                raise TableError(f"{self.path}:{self.line_number}: invalid JSON ({error})") from None
            if not isinstance(record, dict):
                raise TableError(f"{self.path}:{self.line_number}: expected a JSON object per line")
            if not self.columns:
                self.columns = list(record)
            yield self.line_number, record


class JsonlWriter(AtomicFile):
    """Write each row's own keys and values as one JSON line."""

    def __init__(
        self, path: Path, *, temp_dir: Path | None = None, append_to: tuple[Path, int] | None = None
    ):
        super().__init__(path, temp_dir=temp_dir, append_to=append_to)

    def write(self, row: dict[str, Any]) -> None:
        self.rows += 1
        try:
            text = json.dumps(row, ensure_ascii=False, allow_nan=False, default=json_default)
        except ValueError:
            raise TableError(
                f"{self.path}: row {self.rows} holds NaN or Infinity, which JSON cannot"
            ) from None
        if not is_utf8(text):  # a lone surrogate read from a JSON escape: write it escaped again
            text = json.dumps(row, ensure_ascii=True, allow_nan=False, default=json_default)
        self.file.write(text + "\n")
