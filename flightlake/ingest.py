"""CSV and Arrow streams → Parquet objects in the store.

Everything streams: CSV bytes are spooled to a local temp file (never held in memory) and
read back block by block with ``pyarrow.csv.open_csv``; Arrow batches go straight to the
writer. ``ParquetSink`` groups batches into row groups of bounded size and rolls files, so
memory is bounded by a few row groups whatever the input size.

CSV types are inferred from a sample (the first block) and then applied to the whole file.
When a later value contradicts a sampled type, the column is widened (int64 → double →
string, other types → string), the objects written so far are deleted and the file is read
again: the result equals what inspecting the whole file would give.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flightlake.admission import check_free_disk
from flightlake.catalog import DATA_PREFIX, NewObjects
from flightlake.delta import delta_schema, file_stats
from flightlake.errors import Conflict, FlightlakeError, InvalidInput, StorageError
from flightlake.storage import Storage, new_object_id

log = logging.getLogger("flightlake.ingest")

SAMPLE_BYTES = 1 << 20  # the first block: what types are inferred from (later values widen)
BLOCK_BYTES = 1 << 20  # CSV read block (pyarrow reads ahead a few dozen blocks)
MAX_BLOCK_BYTES = 256 << 20  # a record must fit in a block: blocks grow up to this for huge rows
SEGMENT_BYTES = 32 << 20  # one pyarrow CSV reader per segment of the file (bounds read-ahead)
ROW_GROUP_ROWS = 256 * 1024  # rows per Parquet row group (DuckDB scans row groups in parallel)
ROW_GROUP_BYTES = 64 << 20  # ...or this many bytes of Arrow data, whichever comes first
FILE_ROWS = 4 * 1024 * 1024  # a new Parquet object after this many rows
COMPRESSION = "zstd"
SPOOL_CHECK_BYTES = 8 << 20  # free disk space is checked whenever this much more is spooled
_WIDEN: dict[str, pa.DataType] = {"int64": pa.float64()}
_CONVERSION_RE = re.compile(
    r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to ([^:]+): "
    r"invalid value '(.*)'",
    re.S,
)


@dataclass
class _Group:
    batches: list[pa.RecordBatch]
    rows: int = 0
    nbytes: int = 0


class ParquetSink:
    """Writes record batches as zstd Parquet under ``data/<name>/<ingest id>-<n>.parquet``
    (inside the dataset's Delta table folder), noting each file's Delta stats from its footer.

    ``abort()`` deletes every object written; ``close()`` returns them as NewObjects.
    """

    def __init__(self, storage: Storage, name: str, schema: pa.Schema) -> None:
        self.storage = storage
        self.schema = schema
        self._prefix = f"{DATA_PREFIX}/{name}/{new_object_id()}"
        self._group = _Group([])
        self._writer: pq.ParquetWriter | None = None
        self._stream: pa.NativeFile | None = None
        self._file_rows = 0
        self._keys: list[str] = []
        self._rows: list[int] = []
        self._sizes: list[int] = []
        self._stats: list[str] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if not batch.schema.equals(self.schema):
            raise InvalidInput(
                "record batch schema changed mid-stream: expected "
                f"{self.schema.names} got {batch.schema.names}"
            )
        self._group.batches.append(batch)
        self._group.rows += batch.num_rows
        self._group.nbytes += batch.nbytes
        if self._group.rows >= ROW_GROUP_ROWS or self._group.nbytes >= ROW_GROUP_BYTES:
            self._flush()

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """Object-store failures while writing become StorageError (→ UNAVAILABLE / 503)."""
        try:
            yield
        except OSError as exc:
            self.storage.note_failure(exc)  # clean-up then leaves the objects to gc
            raise StorageError(f"object store error while writing Parquet: {exc}") from exc

    def _flush(self) -> None:
        with self._io():
            self._write_group()

    def _write_group(self) -> None:
        if not self._group.batches:
            return
        self.storage.check_free_space(self._group.nbytes)
        if self._writer is None:
            self._open()
        assert self._writer is not None
        table = pa.Table.from_batches(self._group.batches, self.schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._file_rows += table.num_rows
        self._group = _Group([])
        if self._file_rows >= FILE_ROWS:
            self._finish_file()

    def _open(self) -> None:  # called inside _io()
        key = f"{self._prefix}-{len(self._keys):05d}.parquet"
        self._keys.append(key)
        self._stream = self.storage.open_output(key)
        self._writer = pq.ParquetWriter(
            self._stream, self.schema, compression=COMPRESSION, write_statistics=True
        )
        self._file_rows = 0

    def _finish_file(self) -> None:
        assert self._writer is not None
        assert self._stream is not None
        self._writer.close()
        self.storage.close_output(self._stream, self._keys[-1])  # bounded wait
        self._stats.append(file_stats(self._writer.writer.metadata, self.schema))
        self._rows.append(self._file_rows)
        self._sizes.append(self.storage.size(self._keys[-1]))
        self._writer = None
        self._stream = None

    def close(self) -> NewObjects:
        with self._io():
            self._write_group()
            if self._writer is None and not self._keys:
                self._open()  # an empty dataset still gets one (empty) object with its schema
            if self._writer is not None:
                self._finish_file()
        return NewObjects(
            self.schema,
            tuple(self._keys),
            tuple(self._rows),
            tuple(self._sizes),
            tuple(self._stats),
        )

    def abort(self) -> None:
        """Delete everything written; safe to call more than once and after errors."""
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            if self._stream is not None:
                self.storage.close_output(self._stream, self._keys[-1])
        self._writer = None
        self._stream = None
        self._group = _Group([])
        keys, self._keys = self._keys, []
        try:
            self.storage.delete(keys)
        except FlightlakeError as exc:
            log.error("could not delete objects of a failed ingest %s: %s (gc will)", keys, exc)


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """What every stored object carries: all fields nullable, no metadata, and one spelling
    per logical type (the one DuckDB reads back), so a pandas large_string column and a
    polars string column land as the same type and append to each other."""
    return pa.schema([pa.field(f.name, storage_type(f.type), nullable=True) for f in schema])


def storage_type(kind: pa.DataType) -> pa.DataType:
    """large/view strings -> string, large/view binary -> binary, dictionaries -> their
    values, large lists -> lists (recursively); everything else unchanged."""
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_dictionary(kind):
        return storage_type(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        return pa.list_(storage_type(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, storage_type(f.type)) for f in kind])
    return kind


def check_columns(names: list[str]) -> None:
    """Reject empty and duplicate column names with a message naming them."""
    for i, name in enumerate(names, 1):
        if not name.strip():
            raise InvalidInput(f"column {i} has an empty name")
    seen: set[str] = set()
    dups = [n for n in names if n.lower() in seen or seen.add(n.lower())]  # type: ignore[func-returns-value]
    if dups:
        raise InvalidInput("duplicate column names: " + ", ".join(sorted(set(dups))))


def write_arrow(
    storage: Storage,
    name: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    target: pa.Schema | None = None,
) -> NewObjects:
    """Write an Arrow stream; ``target`` is the existing dataset's schema for appends."""
    check_columns(schema.names)
    stored = normalize_schema(schema)
    delta_schema(stored)  # refuses, naming the column, a type a Delta table cannot hold
    if target is not None and not _same_columns(target, stored):
        from flightlake.catalog import schema_difference

        raise Conflict(f"schema conflict for dataset {name!r}: {schema_difference(target, stored)}")
    sink = ParquetSink(storage, name, target if target is not None else stored)
    try:
        for batch in batches:
            if not batch.schema.equals(schema, check_metadata=False):
                raise InvalidInput(
                    f"record batch schema changed mid-stream: expected {schema} got {batch.schema}"
                )
            sink.write(_retype(batch, sink.schema))
        return sink.close()
    except BaseException:
        sink.abort()
        raise


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type == y.type for x, y in zip(a, b, strict=True))


def _retype(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    if [f.type for f in batch.schema] == [f.type for f in schema]:
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema)  # nullability only
    return batch.cast(schema)


# -- CSV ------------------------------------------------------------------------------------
@contextlib.contextmanager
def spool(
    chunks: Iterable[bytes | memoryview],
    spool_dir: str = "",
    min_free_bytes: int = 0,
    suffix: str = ".csv",
) -> Iterator[tuple[Path, int]]:
    """Write a byte stream to a local temp file; yield (path, size); delete it afterwards.

    Raises ResourceExhausted (naming the spool disk, not its path) before a write would
    leave less than ``min_free_bytes`` free on the spool's volume (0: no check); the partial
    spool file is deleted.
    """
    fd, name = tempfile.mkstemp(prefix="flightlake-", suffix=suffix, dir=spool_dir or None)
    path = Path(name)
    size = 0
    unchecked = SPOOL_CHECK_BYTES  # check before the first write, then every few MiB
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                n = len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
                unchecked += n
                if min_free_bytes and unchecked >= SPOOL_CHECK_BYTES:
                    check_free_disk(
                        str(path.parent),
                        min_free_bytes + unchecked,
                        "ingest spool disk",
                        "min_free_spool_bytes",
                        floor=min_free_bytes,
                    )
                    unchecked = 0
                fh.write(chunk)
                size += n
        yield path, size
    finally:
        path.unlink(missing_ok=True)


class _RowError:
    """Remembers the first malformed row pyarrow reports, to put its line in the message."""

    def __init__(self) -> None:
        self.message = ""
        self.segment: tuple[Path, int] | None = None  # the segment being read: file, offset

    def __call__(self, row: pacsv.InvalidRow) -> str:
        if not self.message:
            offset = _line_at(*self.segment) - 1 if self.segment and self.segment[1] else 0
            number = row.number + offset if row.number is not None else None
            where = f"line {number}" if number is not None else "a row"
            self.message = (
                f"{where} has {row.actual_columns} fields, the header has "
                f"{row.expected_columns}: {row.text[:120]!r}"
            )
        return "error"


def _parse_options(handler: _RowError) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler)


def _csv_error(exc: Exception, handler: _RowError) -> InvalidInput:
    text = str(exc)
    if handler.message:
        return InvalidInput(f"malformed CSV: {handler.message}")
    if "Empty CSV file" in text:
        return InvalidInput("CSV is empty: no header line")
    if "UTF8" in text or "utf8" in text.lower():
        return InvalidInput(f"CSV is not valid UTF-8 text: {text}")
    return InvalidInput(f"malformed CSV: {text}")


def infer_csv_schema(path: Path, size: int) -> pa.Schema:
    """Types from the header and a sample; ambiguous columns become string (logged)."""
    if size == 0:
        raise InvalidInput("CSV is empty: no header line")
    handler = _RowError()
    block = SAMPLE_BYTES
    while True:
        read = pacsv.ReadOptions(block_size=block, use_threads=False)
        try:
            with pacsv.open_csv(
                path, read_options=read, parse_options=_parse_options(handler)
            ) as r:
                inferred = r.schema
            break
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if not _too_big_for_block(exc) or block >= MAX_BLOCK_BYTES:
                raise _csv_error(exc, handler) from exc
            block *= 8
    check_columns(inferred.names)
    ints = [f.name for f in inferred if pa.types.is_integer(f.type)]
    zero_padded = _leading_zeros(path, ints, block) if ints else set()
    fields = []
    for f in inferred:
        kind = f.type
        if pa.types.is_binary(kind):
            raise InvalidInput(
                f"CSV is not valid UTF-8 text: column {f.name!r} has bytes that are not UTF-8"
            )
        if pa.types.is_null(kind):
            log.info("CSV column %r: no values in the sample; reading it as string", f.name)
            kind = pa.string()
        elif f.name in zero_padded:
            log.info("CSV column %r: integers with leading zeros; reading it as string", f.name)
            kind = pa.string()
        fields.append(pa.field(f.name, kind))
    return pa.schema(fields)


def _too_big_for_block(exc: Exception) -> bool:
    return "straddling object straddles two block boundaries" in str(exc)


def _leading_zeros(path: Path, columns: list[str], block: int) -> set[str]:
    """The integer columns whose sampled text has values like '007' (codes, not numbers)."""
    read = pacsv.ReadOptions(block_size=block, use_threads=False)
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(columns, pa.string()), include_columns=columns
    )
    with pacsv.open_csv(
        path, read_options=read, parse_options=_parse_options(_RowError()), convert_options=convert
    ) as reader:
        try:
            sample = reader.read_next_batch()
        except StopIteration:
            return set()
    padded = set()
    for name in columns:
        values = sample.column(name).to_pylist()
        if any(v and len(v) > 1 and v.lstrip("+-").startswith("0") for v in values):
            padded.add(name)
    return padded


def read_csv_batches(
    path: Path, schema: pa.Schema, block_bytes: int = 0
) -> Iterator[pa.RecordBatch]:
    """Stream the CSV at ``path`` as batches typed by ``schema``.

    The file is read in segments of about SEGMENT_BYTES, each cut at a record boundary and
    read by its own pyarrow reader: pyarrow's streaming CSV reader reads ahead without a byte
    bound when its consumer (the Parquet encoder) is slower, so one reader over a large file
    can buffer most of it. A segment bounds that read-ahead.
    """
    handler = _RowError()
    convert = pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    try:
        for index, (start, end) in enumerate(csv_segments(path)):
            handler.segment = (path, start)
            read = pacsv.ReadOptions(
                block_size=block_bytes or BLOCK_BYTES,
                use_threads=True,
                column_names=None if index == 0 else schema.names,
            )
            with pacsv.open_csv(
                _RangeFile(path, start, end),
                read_options=read,
                parse_options=_parse_options(handler),
                convert_options=convert,
            ) as reader:
                if index == 0 and reader.schema.names != schema.names:
                    from flightlake.catalog import schema_difference

                    raise Conflict(
                        "CSV header does not match the dataset: "
                        f"{schema_difference(schema, reader.schema)}"
                    )
                yield from reader
    except _Widen:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if _too_big_for_block(exc):
            raise _BiggerBlocks() from exc
        widen = _conversion_failure(exc, schema)
        if widen is not None:
            raise widen from exc
        raise _csv_error(exc, handler) from exc


def csv_segments(path: Path, target: int = 0) -> list[tuple[int, int]]:
    """Split a CSV file into (start, end) byte ranges of about ``target`` bytes, each ending
    at a record boundary: a newline outside quotes. Quotes are escaped by doubling in CSV, so
    a newline ends a record exactly when the number of quote characters before it is even."""
    target = target or SEGMENT_BYTES
    size = path.stat().st_size
    segments: list[tuple[int, int]] = []
    start, quotes = 0, 0
    with path.open("rb") as fh:
        while start < size:
            fh.seek(start)
            chunk = fh.read(target)
            end = start + len(chunk)
            quotes = chunk.count(b'"')
            # extend to the next newline that is outside quotes
            while end < size:
                more = fh.read(1 << 16)
                if not more:
                    break
                pos = -1
                for nl in _newlines(more):
                    if (quotes + more.count(b'"', 0, nl)) % 2 == 0:
                        pos = nl
                        break
                if pos >= 0:
                    quotes += more.count(b'"', 0, pos)
                    end += pos + 1
                    break
                quotes += more.count(b'"')
                end += len(more)
            segments.append((start, end))
            if end >= size and quotes % 2:
                line = _line_at(path, start)
                raise InvalidInput(
                    f"malformed CSV: a quoted field opened after line {line} is never closed"
                )
            start = end
    return segments or [(0, 0)]


def _line_at(path: Path, offset: int) -> int:
    """The line number (1-based) of the byte at ``offset``: only computed for messages."""
    lines = 1
    with path.open("rb") as fh:
        while offset > 0:
            chunk = fh.read(min(offset, 8 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            offset -= len(chunk)
    return lines


def _newlines(data: bytes) -> Iterator[int]:
    pos = data.find(b"\n")
    while pos >= 0:
        yield pos
        pos = data.find(b"\n", pos + 1)


class _RangeFile(io.RawIOBase):
    """A read-only file over bytes [start, end) of a local file."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        super().__init__()
        self._fh = path.open("rb")
        self._fh.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        n = self._fh.readinto(view)
        self._left -= n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class _BiggerBlocks(Exception):
    """A record does not fit in one read block: read again with larger blocks."""


class _Widen(Exception):
    """A value contradicts a column type: read again with ``column`` as ``new_type``."""

    def __init__(self, column: str, old_type: pa.DataType, value: str, row: str | None) -> None:
        super().__init__(column)
        self.column = column
        self.where = f" on line {row}" if row else ""
        self.old_type = old_type
        self.value = value
        self.new_type = pa.string()
        if str(old_type) in _WIDEN:
            try:
                float(value.strip("'\""))
                self.new_type = _WIDEN[str(old_type)]
            except ValueError:
                pass


def _conversion_failure(exc: Exception, schema: pa.Schema) -> _Widen | None:
    match = _CONVERSION_RE.search(str(exc))
    if not match:
        return None
    index = int(match.group(1))
    if index >= len(schema):
        return None
    f = schema.field(index)
    if pa.types.is_string(f.type):
        return None
    return _Widen(f.name, f.type, match.group(4)[:80], match.group(2))


def write_csv(
    storage: Storage,
    name: str,
    path: Path,
    size: int,
    target: pa.Schema | None = None,
) -> NewObjects:
    """Ingest the spooled CSV at ``path``; ``target`` fixes the types (append to a dataset)."""
    schema = target if target is not None else infer_csv_schema(path, size)
    block = BLOCK_BYTES
    for _attempt in range(4 * len(schema) + 8):
        sink = ParquetSink(storage, name, schema)
        try:
            for batch in read_csv_batches(path, schema, block):
                sink.write(batch)
            return sink.close()
        except _BiggerBlocks:
            sink.abort()
            if block >= MAX_BLOCK_BYTES:
                raise InvalidInput(
                    f"a CSV record is larger than {MAX_BLOCK_BYTES >> 20} MiB; split the field "
                    "or ingest it as Arrow"
                ) from None
            block *= 8
            log.info(
                "CSV has records larger than the read block; reading with %d MiB blocks",
                block >> 20,
            )
        except _Widen as widen:
            sink.abort()
            if target is not None:
                raise Conflict(
                    f"CSV column {widen.column!r}: value {widen.value!r}{widen.where} is not "
                    f"{widen.old_type} as dataset {name!r} requires"
                ) from None
            log.warning(
                "CSV column %r: value %r%s contradicts sampled type %s; reading it as %s",
                widen.column,
                widen.value,
                widen.where,
                widen.old_type,
                widen.new_type,
            )
            schema = schema.set(
                schema.get_field_index(widen.column), pa.field(widen.column, widen.new_type)
            )
        except BaseException:
            sink.abort()
            raise
    raise InvalidInput("CSV column types did not settle")  # unreachable: types only widen
