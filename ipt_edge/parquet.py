"""Parquet tables (with pyarrow, the `parquet` extra): a `.parquet` file, or a folder of them.

- A folder is read in name order as one dataset (hidden files and `_SUCCESS`-style markers are
  skipped; every file needs the same schema), by record batches, so memory is bounded by the
  chunk size. A row's Python values (`to_pylist`) go through the same row_text / row_label checks,
  and messages name the file and the row (1-based, within that file).
- `ParquetReader.chunks(n)` carries the Arrow rows as read, so a Parquet output keeps every input
  column with its Arrow type and values.
- A Parquet output from CSV/TSV input has string columns; from JSONL it has one column per key
  (first-seen order, a missing key is null) typed from a first pass over the file: all booleans
  -> bool, all integers -> int64, numbers (integers and floats) -> float64, all strings -> string;
  a key whose values mix JSON types, or hold arrays/objects, or only nulls, is stored as its JSON
  text (a string column; null stays null), so nothing is lost and no run fails on it
  (arrow_schema_for_rows, rows_to_arrow).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipt_edge.tables import AtomicFile, Chunk, TableError, TableReader, os_error

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET_INSTALL = 'pip install "ipt-edge[parquet]"'


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


class ParquetReader:
    """`(row name, row)` of a Parquet file or folder ('row 7', or 'b.parquet row 7' in a folder);
    `columns` and `schema` are every file's; progress (`size`, `bytes_read`) counts rows."""

    format = "parquet"
    columns: list[str]

    def __init__(self, path: Path):
        self.path = path
        _, pq = pyarrow_modules(self.path)
        if not self.path.exists():
            raise TableError(f"{self.path}: no such file or folder")
        self.files = parquet_files(self.path)
        self._parquet_files = []
        self.schema: pa.Schema | None = None
        self.size = self.bytes_read = 0
        for file in self.files:
            try:
                parquet = pq.ParquetFile(file)
            except OSError as error:
                raise os_error(file, error, "read it") from None
            except Exception as error:  # pyarrow raises ArrowInvalid on a file that is not Parquet
                raise TableError(f"{file}: not a readable Parquet file ({str(error)[:200]})") from None
            self._check_schema(file, parquet.schema_arrow)
            self._parquet_files.append(parquet)
            self.size += parquet.metadata.num_rows
        assert self.schema is not None
        self.columns = list(self.schema.names)
        if len(set(self.columns)) != len(self.columns):
            twice = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise TableError(
                f"{self.files[0]}: column(s) {twice} appear twice; each column needs its own name"
            )

    def _check_schema(self, file: Path, schema: pa.Schema) -> None:
        """The first file's schema is the dataset's; every other file must have it."""
        if self.schema is None:
            self.schema = schema
            return
        if schema.equals(self.schema, check_metadata=False):
            return
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

    def _batches(self, rows: int) -> Iterator[tuple[Path, int, Any]]:
        """`(file, first row number in it (1-based), record batch)` over every file in order."""
        for file, parquet in zip(self.files, self._parquet_files, strict=True):
            first = 1
            try:
                for batch in parquet.iter_batches(batch_size=rows):
                    yield file, first, batch
                    first += batch.num_rows
                    self.bytes_read += batch.num_rows
            except OSError as error:
                raise os_error(file, error, "read it") from None
            except Exception as error:  # ArrowInvalid and friends on a damaged file
                if isinstance(error, TableError):
                    raise
                raise TableError(
                    f"{file}: row {first} onwards: cannot read it ({str(error)[:200]})"
                ) from None

    def _where(self, file: Path, row: int) -> str:
        """How a row is named after the reader's path in a message: 'row 7' or 'b.parquet row 7'."""
        return f"row {row}" if file == self.path else f"{file.relative_to(self.path)} row {row}"

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        for file, first, batch in self._batches(1024):
            for offset, row in enumerate(batch.to_pylist()):
                yield self._where(file, first + offset), row

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows in `Chunk`s of `size` (the last may be shorter), carrying their Arrow rows."""
        import pyarrow as pa

        pending: list[Any] = []  # record batches not yet in a chunk
        lines: list[str] = []
        for file, first, batch in self._batches(size):
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

    def close(self) -> None:
        pass

    def __enter__(self) -> ParquetReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ParquetWriter(AtomicFile):
    """Write Arrow tables of `schema` to a Parquet file, each as one row group (`write_table`)."""

    def __init__(self, path: Path, schema: pa.Schema, *, temp_dir: Path | None = None):
        _, pq = pyarrow_modules(path)
        self._parquet: Any = None
        super().__init__(path, binary=True, temp_dir=temp_dir)
        self.schema = schema
        try:
            self._parquet = pq.ParquetWriter(self.file, schema)
        except BaseException:
            self.abort()
            raise

    def write_table(self, table: pa.Table) -> None:
        """Append `table` (the writer's schema; metadata may differ) as one row group."""
        if not table.schema.equals(self.schema, check_metadata=False):
            raise ValueError(f"table schema {table.schema} is not the output's {self.schema}")
        self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def finish(self) -> None:
        try:
            self._parquet.close()  # the footer, before the file is made durable and closed
        except OSError as error:
            self.abort()
            raise os_error(self.path, error, "write it") from None
        super().finish()

    def abort(self) -> None:
        if self._parquet is not None:
            with contextlib.suppress(Exception):  # already closed, or failed half-way: the file goes
                self._parquet.close()
        super().abort()


# ---- rows (CSV/TSV/JSONL) as Arrow tables, for a Parquet output ----------------------------------


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
