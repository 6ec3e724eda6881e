"""The lake: storage + catalog + ingest + query behind one facade.

Front ends (Flight, Flight SQL, HTTP, CLI) call only this class and translate. Ingest slots
are shared by every front end: when all are taken a new ingest is refused at once
(``Unavailable``), never queued.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from flightlake import __version__
from flightlake.catalog import (
    DATA_PREFIX,
    Catalog,
    Manifest,
    NewObjects,
    new_manifest,
    schema_difference,
    schema_fingerprint,
    tombstone,
    validate_name,
)
from flightlake.config import Settings
from flightlake.errors import Conflict, FlightlakeError, InvalidInput, NotFound, Unavailable
from flightlake.ingest import normalize_schema, spool, write_arrow, write_csv
from flightlake.query import QueryEngine, QueryParams
from flightlake.storage import Storage

log = logging.getLogger("flightlake.lake")

MODES = ("append", "overwrite", "create")


@dataclass(frozen=True)
class IngestResult:
    """What one ingest committed."""

    dataset: str
    rows_written: int
    version: int
    manifest: Manifest

    def to_json(self) -> dict[str, object]:
        return {"dataset": self.dataset, "rows_written": self.rows_written, "version": self.version}


def check_mode(mode: str | None) -> str:
    mode = mode or "append"
    if mode not in MODES:
        raise InvalidInput(f"unknown ingest mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


class Lake:
    """One lake: build it fully before any front end starts serving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = Storage(settings)
        self.catalog = Catalog(self.storage)
        self.load_warnings = self.catalog.load()
        self.engine = QueryEngine(settings, self.storage)
        self._stale_views: set[str] = set()
        self._views_lock = threading.Lock()
        for manifest in self.catalog.list():
            self._set_view(manifest)
        self.catalog.listeners.append(self._on_commit)
        self._slots = threading.BoundedSemaphore(max(1, settings.max_concurrent_ingests))
        self._active_ingests: dict[str, int] = {}
        self._active_lock = threading.Lock()
        self._retired: dict[str, float] = {}  # key -> when an overwrite unreferenced it
        self._closed = threading.Event()
        log.info("lake ready: %s, %d datasets", self.storage.describe(), len(self.catalog.list()))

    def _on_commit(self, manifest: Manifest) -> None:
        if manifest.dropped:
            with self._views_lock:
                self._stale_views.discard(manifest.name)
            self.engine.drop_view(manifest.name)
        else:
            self._set_view(manifest)

    def _set_view(self, manifest: Manifest) -> None:
        """Point the dataset's view at its objects. DuckDB reads Parquet metadata to do that;
        when the store cannot answer, the view is marked stale and rebuilt before the next
        query instead of failing the commit (already durable) or the server start."""
        try:
            self.engine.set_view(manifest.name, manifest.objects)
        except FlightlakeError as exc:
            log.warning(
                "view of %s not updated (will retry before the next query): %s", manifest.name, exc
            )
            with self._views_lock:
                self._stale_views.add(manifest.name)
            return
        with self._views_lock:
            self._stale_views.discard(manifest.name)

    def _rebuild_stale_views(self) -> None:
        with self._views_lock:
            names = sorted(self._stale_views)
        for name in names:
            manifest = self.catalog.find(name)
            if manifest is None:
                with self._views_lock:
                    self._stale_views.discard(name)
            else:
                self._set_view(manifest)

    # -- catalog -------------------------------------------------------------------------
    def datasets(self) -> list[Manifest]:
        return self.catalog.list(limit=self.settings.max_list)

    def dataset(self, name: str) -> Manifest:
        return self.catalog.get(name)

    def read_schema(self, manifest: Manifest) -> pa.Schema:
        """The schema a query of the whole dataset returns (what Flight advertises)."""
        return self.engine.view_schema(manifest.name) or manifest.schema

    def drop(self, name: str) -> Manifest:
        """Drop ``name``: commit a tombstone, then delete its objects."""
        removed: list[Manifest] = []

        def build(head: Manifest | None) -> Manifest:
            if head is None:
                raise NotFound(f"dataset {name!r} not found")
            removed[:] = [head]
            return tombstone(head)

        self.catalog.commit(name, build)
        old = removed[0]
        self._delete_quietly(old.objects)
        return old

    # -- ingest --------------------------------------------------------------------------
    @contextlib.contextmanager
    def ingest_slot(self, name: str) -> Iterator[None]:
        """Hold one of the ingest slots, or raise Unavailable at once when none is free."""
        if not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"all {self.settings.max_concurrent_ingests} ingest slots are busy; retry shortly"
            )
        with self._active_lock:
            self._active_ingests[name] = self._active_ingests.get(name, 0) + 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active_ingests[name] -= 1
                if not self._active_ingests[name]:
                    del self._active_ingests[name]
            self._slots.release()

    @property
    def active_ingests(self) -> int:
        with self._active_lock:
            return sum(self._active_ingests.values())

    def ingest_arrow(
        self,
        name: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        mode: str | None = "append",
    ) -> IngestResult:
        """Ingest an Arrow stream into dataset ``name``."""
        validate_name(name)
        mode = check_mode(mode)
        with self.ingest_slot(name):
            head = self._precheck(name, mode)
            target = head.schema if head is not None and mode == "append" else None
            new = write_arrow(self.storage, name, schema, batches, target=target)
            return self._commit(name, mode, new)

    def ingest_csv(
        self, name: str, chunks: Iterable[bytes | memoryview], mode: str | None = "append"
    ) -> IngestResult:
        """Ingest CSV bytes (streamed in chunks) into dataset ``name``."""
        validate_name(name)
        mode = check_mode(mode)
        with self.ingest_slot(name):
            head = self._precheck(name, mode)
            with spool(chunks, self.settings.spool_dir) as (path, size):
                return self._ingest_spooled_csv(name, mode, head, path, size)

    def ingest_csv_file(self, name: str, path: Path, mode: str | None = "append") -> IngestResult:
        """Ingest a CSV file already on local disk (e.g. an HTTP upload's spool)."""
        validate_name(name)
        mode = check_mode(mode)
        with self.ingest_slot(name):
            head = self._precheck(name, mode)
            return self._ingest_spooled_csv(name, mode, head, path, path.stat().st_size)

    def _ingest_spooled_csv(
        self, name: str, mode: str, head: Manifest | None, path: Path, size: int
    ) -> IngestResult:
        target = head.schema if head is not None and mode == "append" else None
        new = write_csv(self.storage, name, path, size, target=target)
        return self._commit(name, mode, new)

    def _precheck(self, name: str, mode: str) -> Manifest | None:
        head = self.catalog.find(name)
        if mode == "create" and head is not None:
            raise Conflict(f"dataset {name!r} already exists (mode=create)")
        return head

    def _commit(self, name: str, mode: str, new: NewObjects) -> IngestResult:
        schema = normalize_schema(new.schema)
        replaced: list[Manifest] = []

        def build(head: Manifest | None) -> Manifest:
            if head is None or mode == "overwrite":
                if head is not None and mode == "create":
                    raise Conflict(f"dataset {name!r} already exists (mode=create)")
                if head is not None:
                    replaced[:] = [head]
                return new_manifest(name, head, schema, new.keys, new.rows, new.sizes)
            if mode == "create":
                raise Conflict(f"dataset {name!r} already exists (mode=create)")
            if head.schema_fingerprint != schema_fingerprint(schema):
                raise Conflict(
                    f"schema conflict for dataset {name!r}: "
                    f"{schema_difference(head.schema, schema)}"
                )
            old = zip(head.objects, head.object_rows, head.object_bytes, strict=True)
            added = zip(new.keys, new.rows, new.sizes, strict=True)
            # Empty objects only carry a schema: keep one only while the dataset is empty.
            files = [f for f in (*old, *added) if f[1] > 0] or [
                *zip(head.objects, head.object_rows, head.object_bytes, strict=True)
            ]
            return new_manifest(
                name,
                head,
                schema,
                tuple(f[0] for f in files),
                tuple(f[1] for f in files),
                tuple(f[2] for f in files),
            )

        try:
            manifest = self.catalog.commit(name, build)
        except BaseException:
            self._delete_quietly(new.keys)
            raise
        assert manifest is not None
        unused = set(new.keys) - set(manifest.objects)
        self._delete_quietly(unused)
        if replaced:
            # Old objects of an overwritten version: in-flight queries may still read them,
            # so they are left to the gc sweep, which waits a grace period counted from now.
            now = time.time()
            with self._active_lock:
                self._retired.update(dict.fromkeys(replaced[0].objects, now))
            log.info(
                "dataset %s overwritten; %d old objects await gc", name, len(replaced[0].objects)
            )
        return IngestResult(name, new.row_count, manifest.version, manifest)

    def _delete_quietly(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        try:
            self.storage.delete(keys)
        except Exception as exc:
            log.error("could not delete %d objects (gc will retry): %s", len(keys), exc)

    # -- query ---------------------------------------------------------------------------
    def query(
        self, sql: str, batch_rows: int | None = None, params: QueryParams | None = None
    ) -> pa.RecordBatchReader:
        """Run client SQL; the reader streams the result. ``params`` bind its placeholders."""
        if self._stale_views:
            self._rebuild_stale_views()
        try:
            return self.engine.execute(sql, batch_rows, params)
        except NotFound as exc:
            raise self._unavailable_if_stale(exc) from exc

    def query_schema(self, sql: str, params: QueryParams | None = None) -> pa.Schema:
        if self._stale_views:
            self._rebuild_stale_views()
        try:
            return self.engine.schema(sql, params)
        except NotFound as exc:
            raise self._unavailable_if_stale(exc) from exc

    def _unavailable_if_stale(self, exc: NotFound) -> FlightlakeError:
        """A dataset whose view could not be built is unreachable, not unknown."""
        with self._views_lock:
            stale = [n for n in self._stale_views if f"dataset {n!r} not found" in str(exc)]
        if stale:
            return Unavailable(
                f"dataset {stale[0]!r} cannot be read now: the object store "
                "did not answer; retry shortly"
            )
        return exc

    # -- housekeeping --------------------------------------------------------------------
    def gc(self, grace_seconds: float | None = None) -> list[str]:
        """Delete data objects no manifest references and older than the grace period."""
        grace = self.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
        self.refresh()
        referenced = self.catalog.referenced_keys()
        cutoff = time.time() - grace
        with self._active_lock:
            # objects of ingests running in this process are never swept, however old
            busy = tuple(f"{DATA_PREFIX}/{name}/" for name in self._active_ingests)
            retired = dict(self._retired)
        doomed = [
            o.key
            for o in self.storage.list(DATA_PREFIX)
            if o.key not in referenced
            and not o.key.startswith(busy)
            # unreferenced since an overwrite: the grace counts from then; else from writing
            and retired.get(o.key, o.mtime) <= cutoff
        ]
        self._delete_quietly(doomed)
        with self._active_lock:
            for key in doomed:
                self._retired.pop(key, None)
        if doomed:
            log.info("gc removed %d unreferenced objects", len(doomed))
        return doomed

    def start_sweeper(self, interval_seconds: float) -> threading.Thread:
        """Sweep unreferenced objects now and then every ``interval_seconds`` (0: only now).

        Runs in a daemon thread; a failed sweep (store unreachable) is logged and retried at
        the next interval.
        """

        def loop() -> None:
            while True:
                try:
                    self.gc()
                except Exception as exc:
                    log.warning("gc sweep failed (will retry): %s", exc)
                if interval_seconds <= 0 or self._closed.wait(interval_seconds):
                    return

        thread = threading.Thread(target=loop, name="flightlake-gc", daemon=True)
        thread.start()
        return thread

    def refresh(self) -> list[str]:
        """Re-read the catalog from the store (other writers' commits) and update views."""
        before = {m.name: m.version for m in self.catalog.list()}
        warnings = self.catalog.load()
        after = {m.name: m for m in self.catalog.list()}
        for name in before.keys() - after.keys():
            self.engine.drop_view(name)
        for name, manifest in after.items():
            if before.get(name) != manifest.version:
                self._set_view(manifest)
        return warnings

    def health(self, details: bool = False) -> dict[str, object]:
        """``{"status": "ok" | "unavailable", "service": "flightlake"}``: whether the object
        store answers (``Storage.probe``: never waits longer than ``health_probe_seconds``,
        an answer is reused for 2 s). Never raises.

        ``details`` (for authenticated callers only) adds ``version``, ``datasets`` (count),
        ``storage`` (root URL and endpoint) and, when unavailable, ``error``.
        """
        probe = self.storage.probe.result()
        out: dict[str, object] = {
            "status": "ok" if probe.ok else "unavailable",
            "service": "flightlake",
        }
        if details:
            out["version"] = __version__
            out["datasets"] = len(self.catalog.list())
            out["storage"] = self.storage.describe()
            if not probe.ok:
                out["error"] = probe.error
        return out

    def close(self) -> None:
        self._closed.set()
        self.engine.close()
