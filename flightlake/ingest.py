"""CSV and Arrow streams → Parquet objects in the store.

Everything streams: CSV bytes are spooled to a local temp file (never held in memory) and
read back block by block (flightlake.csvread: the CSV rules, type inference and widening);
Arrow batches go straight to the writer. ``ParquetSink`` groups batches into row groups of
bounded size and rolls files, so memory is bounded by a few row groups whatever the input
size. It encodes and uploads a row group on a thread of its own while the next one is
gathered (pyarrow releases the GIL in both), so the CSV parse or the Arrow receive overlaps
the Parquet encoding: at most two row groups are held.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flightlake import csvread
from flightlake.catalog import DATA_PREFIX, NewObjects
from flightlake.csvbytes import spool, spool_while
from flightlake.csvread import check_columns
from flightlake.delta import delta_schema, file_stats
from flightlake.errors import Conflict, FlightlakeError, InvalidInput, StorageError
from flightlake.fidelity import as_stored, conform
from flightlake.fidelity import normalize_schema as normalize_schema  # re-exported (was here)
from flightlake.fidelity import storage_type as storage_type  # re-exported (was here)
from flightlake.storage import Storage, new_object_id

__all__ = [
    "ParquetSink",
    "check_columns",
    "normalize_schema",
    "spool",
    "spool_while",
    "storage_type",
    "write_arrow",
    "write_csv",
]

log = logging.getLogger("flightlake.ingest")

ROW_GROUP_ROWS = 256 * 1024  # rows per Parquet row group (DuckDB scans row groups in parallel)
ROW_GROUP_BYTES = 64 << 20  # ...or this many bytes of Arrow data, whichever comes first
FILE_ROWS = 4 * 1024 * 1024  # a new Parquet object after this many rows
COMPRESSION = "zstd"


@dataclass
class _Group:
    batches: list[pa.RecordBatch]
    rows: int = 0
    nbytes: int = 0


class ParquetSink:
    """Writes record batches as zstd Parquet under ``data/<name>/<ingest id>-<n>.parquet``
    (inside the dataset's Delta table folder), noting each file's Delta stats from its footer.

    ``abort()`` deletes every object written; ``close()`` returns them as NewObjects.
    A full row group is written by the sink's writer thread while the caller gathers the
    next one; a write error is raised by the next ``write`` or by ``close``.
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
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None  # the row group being written

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
            self._hand_off()

    def _hand_off(self) -> None:
        """Wait for the previous row group to be written (raising its error), then have the
        writer thread write the gathered one."""
        self._wait()
        group, self._group = self._group, _Group([])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="parquet-write")
        context = contextvars.copy_context()  # the request's log fields, in the writer too
        self._pending = self._pool.submit(context.run, self._flush, group)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _stop_writer(self) -> None:
        """Wait for the writer thread (ignoring its error) and end it."""
        with contextlib.suppress(Exception):
            self._wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """Object-store failures while writing become StorageError (→ UNAVAILABLE / 503)."""
        try:
            yield
        except OSError as exc:
            self.storage.note_failure(exc)  # clean-up then leaves the objects to gc
            raise StorageError(f"object store error while writing Parquet: {exc}") from exc

    def _flush(self, group: _Group) -> None:
        with self._io():
            self._write_group(group)

    def _write_group(self, group: _Group) -> None:
        if not group.batches:
            return
        self.storage.check_free_space(group.nbytes)
        if self._writer is None:
            self._open()
        assert self._writer is not None
        table = pa.Table.from_batches(group.batches, self.schema)
        group.batches.clear()
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._file_rows += table.num_rows
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
        self._wait()
        self._stop_writer()
        group, self._group = self._group, _Group([])
        with self._io():
            self._write_group(group)
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
        self._stop_writer()
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


def write_arrow(
    storage: Storage,
    name: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    target: pa.Schema | None = None,
) -> NewObjects:
    """Write an Arrow stream; ``target`` is the existing dataset's schema for appends.

    Columns are stored in their one spelling (``fidelity.normalize_schema``). Raises
    InvalidInput naming the column and type when a type is not stored, or when a value
    does not fit the stored type exactly; Conflict when the columns differ from ``target``.
    """
    check_columns(schema.names)
    stored = normalize_schema(schema)
    delta_schema(stored)  # refuses, naming the column, a type a Delta table cannot hold
    if target is not None:
        target = as_stored(target)
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
            sink.write(conform(batch, sink.schema))
        return sink.close()
    except BaseException:
        sink.abort()
        raise


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type == y.type for x, y in zip(a, b, strict=True))


# -- CSV (the reading rules live in flightlake.csvread) ----------------------------------
def write_csv(
    storage: Storage,
    name: str,
    path: Path,
    size: int,
    target: pa.Schema | None = None,
) -> NewObjects:
    """Ingest the spooled CSV at ``path``; ``target`` fixes the types (append to a dataset).

    Raises InvalidInput (bad CSV, another encoding), Conflict (values or header the target
    cannot hold), StorageError."""
    return csvread.ingest_csv(
        path, size, lambda schema: ParquetSink(storage, name, schema), name, target
    )
