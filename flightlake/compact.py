"""Compaction and cleanup of the Delta tables.

Compaction rewrites a dataset's small Parquet files into large ones with the same writer as
ingest (exact Arrow types, zstd, bounded memory: one record batch at a time) and commits
"remove the small files, add the large ones" as one Delta commit that changes no data
(``dataChange=false``). It is built on the version it read; when other writers append
meanwhile the commit is retried on top of theirs (their files are untouched), and when the
small files are no longer live (an overwrite or another compaction won) nothing is committed.
delta-rs's own ``optimize.compact()`` is not used: it rewrites through the Delta schema and
refuses or changes the types Delta has no exact type for (uint32 above 2^31, ns timestamps).

``sweep`` is gc: vacuum (files no version younger than the retention needs) plus files of
failed or killed writes (in no version at all) older than the grace period.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from flightlake.catalog import Catalog, Manifest, validate_name
from flightlake.delta import DATA_PREFIX, LOG_DIR, DataFile
from flightlake.errors import FlightlakeError, InvalidInput
from flightlake.ingest import FILE_ROWS, ParquetSink
from flightlake.storage import Storage

if TYPE_CHECKING:
    from flightlake.lake import Lake

log = logging.getLogger("flightlake.compact")

SMALL_BYTES = 32 << 20  # files smaller than this are compacted together
MAX_INPUT_FILES = 1000  # files one compaction reads (a big backlog takes a few rounds)


def small_files(manifest: Manifest) -> list[DataFile]:
    files = zip(manifest.objects, manifest.object_bytes, manifest.object_rows, strict=True)
    return [DataFile(k, s, r) for k, s, r in files if s < SMALL_BYTES]


class Compactor:
    """Compacts datasets on demand and, in one background thread, after commits that leave
    ``compact_files`` or more small files."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.threshold = lake.settings.compact_files
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def committed(self, manifest: Manifest) -> None:
        """Called after each commit made here: queue a compaction when it is due."""
        if self.threshold <= 0 or len(small_files(manifest)) < self.threshold:
            return
        with self._lock:
            if manifest.name in self._pending:
                return
            self._pending.add(manifest.name)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flightlake-compact", daemon=True
                )
                self._thread.start()
        self._queue.put(manifest.name)

    def _run(self) -> None:
        while True:
            name = self._queue.get()
            if name is None:
                return
            with self._lock:
                self._pending.discard(name)
            try:
                self.compact(name)
            except Exception as exc:  # background housekeeping: log, never crash the server
                log.warning("background compaction of %s failed: %s", name, exc)

    def compact(self, name: str) -> dict[str, object]:
        """Compact ``name`` now; returns ``{"dataset", "version", "files_before",
        "files_after"}``. NotFound for an unknown dataset."""
        validate_name(name)
        manifest = self.lake.catalog.get(name)
        before = len(manifest.objects)
        small = small_files(manifest)[:MAX_INPUT_FILES]
        if len(small) < 2:
            return _report(name, manifest.version, before, before)
        catalog = self.lake.catalog
        with self.lake.writing(name):
            sink = ParquetSink(self.lake.storage, name, manifest.schema)
            try:
                for f in small:
                    for batch in _batches(self.lake.storage, f.key, manifest.schema):
                        sink.write(batch)
                new = sink.close()
            except BaseException:
                sink.abort()
                raise
            start = time.perf_counter()
            version = catalog.rewrite(name, tuple(small), new, {"flightlake.operation": "compact"})
        if version is None:
            self.lake._delete_quietly(new.keys)  # lost to an overwrite or another compaction
            current = catalog.find(name)
            count = len(current.objects) if current else 0
            return _report(name, current.version if current else manifest.version, before, count)
        log.info(
            "compacted %s: %d files -> %d at version %d (commit %.0f ms)",
            name,
            len(small),
            len(new.keys),
            version,
            (time.perf_counter() - start) * 1000,
        )
        after = catalog.find(name)
        return _report(name, version, before, len(after.objects) if after else 0)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)


def _report(name: str, version: int, before: int, after: int) -> dict[str, object]:
    return {"dataset": name, "version": version, "files_before": before, "files_after": after}


def _batches(storage: Storage, key: str, schema: pa.Schema) -> list[pa.RecordBatch]:
    with storage.open_input(key) as handle:
        reader = pq.ParquetFile(handle)
        out = []
        for batch in reader.iter_batches(batch_size=min(FILE_ROWS, 64 * 1024)):
            if [f.type for f in batch.schema] != [f.type for f in schema]:
                raise InvalidInput(f"file {key} does not have the dataset's schema")
            out.append(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
        return out


def sweep(
    catalog: Catalog, storage: Storage, grace: float, retention_hours: float, busy: set[str]
) -> list[str]:
    """gc over every table folder under ``data/``: vacuum past the retention, then delete
    files no version references that are older than ``grace`` seconds and not under a
    ``busy`` prefix. Folders whose table cannot be read are left alone."""
    doomed: list[str] = []
    cutoff = time.time() - grace
    for name in catalog.tables.names(1 << 30):
        try:
            validate_name(name)
        except InvalidInput:
            continue
        prefix = f"{DATA_PREFIX}/{name}/"
        if prefix in busy:
            continue
        try:
            keep = _referenced(catalog, name, retention_hours, doomed)
        except FlightlakeError as exc:
            log.warning("gc skips %s: %s", prefix, exc)
            continue
        if keep is None:
            continue
        stray = [
            o.key
            for o in storage.list(prefix)
            if not o.key.startswith(prefix + LOG_DIR + "/")
            and o.key not in keep
            and o.mtime <= cutoff
        ]
        if stray:
            storage.delete(stray)
            doomed.extend(stray)
    return doomed


def _referenced(
    catalog: Catalog, name: str, retention_hours: float, doomed: list[str]
) -> set[str] | None:
    """Keys some retained version of ``name`` needs (after vacuuming the others into
    ``doomed``); an empty set for a folder with no table; None when the table is unreadable."""
    tables = catalog.tables
    if not tables.exists(name):
        return set()
    table = tables.open(name)
    if table is None:
        return None
    doomed.extend(tables.vacuum(table, name, retention_hours))
    keep = {f.key for f in tables.snapshot(table, name).files}
    keep.update(tables.vacuum(table, name, 0, dry_run=True))  # removed files still retained
    return keep
