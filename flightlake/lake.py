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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from flightlake import __version__, memory
from flightlake import compact as compaction
from flightlake.catalog import (
    DATA_PREFIX,
    Catalog,
    Committed,
    Manifest,
    NewObjects,
    validate_idempotency_key,
    validate_name,
)
from flightlake.config import Settings
from flightlake.errors import Conflict, FlightlakeError, InvalidInput, NotFound, Unavailable
from flightlake.fidelity import as_stored
from flightlake.ingest import spool_while, write_arrow, write_csv
from flightlake.migrate import migrate_v01
from flightlake.query import QueryEngine
from flightlake.sandbox import QueryParams
from flightlake.storage import Storage
from flightlake.timetravel import TimeTravel

log = logging.getLogger("flightlake.lake")

MODES = ("append", "overwrite", "create")


@dataclass(frozen=True)
class IngestResult:
    """What one ingest committed."""

    dataset: str
    rows_written: int
    version: int
    manifest: Manifest
    replayed: bool = False

    def to_json(self) -> dict[str, object]:
        """``{"dataset", "rows_written", "version"}``, plus ``"replayed": true`` when an
        idempotency key had already committed this ingest (nothing new was committed)."""
        out: dict[str, object] = {
            "dataset": self.dataset,
            "rows_written": self.rows_written,
            "version": self.version,
        }
        if self.replayed:
            out["replayed"] = True
        return out

    @classmethod
    def of(cls, name: str, committed: Committed) -> IngestResult:
        return cls(
            name,
            committed.rows_written,
            committed.version,
            committed.manifest,
            committed.replayed,
        )


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
        self.catalog = Catalog(self.storage, settings.freshness_seconds, settings.max_list)
        self.load_warnings = migrate_v01(self.storage, self.catalog.tables)
        self.load_warnings += self.catalog.load()
        self.engine = QueryEngine(settings, self.storage)
        self._stale_views: set[str] = set()
        self._views_lock = threading.Lock()
        for manifest in self.catalog.list():
            self._set_view(manifest)
        self.catalog.listeners.append(self._on_commit)
        self.travel = TimeTravel(self.catalog)
        self.engine.on_tables = self._freshen
        self.engine.time_travel = self.travel.keys
        self.engine.stored_schema = self._stored_schema
        self._slots = threading.BoundedSemaphore(max(1, settings.max_concurrent_ingests))
        self._active_ingests: dict[str, int] = {}  # name -> writers (ingests, compactions)
        self._in_slots = 0
        self._active_lock = threading.Lock()
        self._closed = threading.Event()
        self.compactor = compaction.Compactor(self)
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

    def _freshen(self, names: set[str]) -> None:
        """Before a query: bring the datasets it names up to date (at most
        ``freshness_seconds`` old; a probe of the store only when older)."""
        for name in names:
            try:
                validate_name(name)
            except InvalidInput:
                continue
            started = time.monotonic()
            try:
                self.catalog.find(name)
            except FlightlakeError as exc:
                log.warning("could not check %s for new commits: %s", name, exc)
            self._fail_if_silent(started, f"dataset {name!r} cannot be read now")

    # -- catalog -------------------------------------------------------------------------
    def datasets(self) -> list[Manifest]:
        """The live datasets sorted by name, at most ``max_list`` of them (see datasets_page)."""
        return self.datasets_page()[0]

    def datasets_page(self) -> tuple[list[Manifest], int]:
        """(the first ``max_list`` live datasets sorted by name, how many live datasets there
        are). A listing cut at ``max_list`` is logged, so a hidden dataset is never silent."""
        self.catalog.refresh_listing()  # other servers' creates and drops (freshness)
        every = self.catalog.list()
        shown = every[: self.settings.max_list]
        if len(shown) < len(every):
            log.warning(
                "dataset listing cut at max_list=%d: %d of %d datasets shown",
                self.settings.max_list,
                len(shown),
                len(every),
            )
        return shown, len(every)

    def dataset(self, name: str) -> Manifest:
        return self.catalog.get(name)

    def _stored_schema(self, name: str) -> pa.Schema | None:
        manifest = self.catalog.find(name)
        return manifest.schema if manifest is not None else None

    def read_schema(self, manifest: Manifest) -> pa.Schema:
        """The schema a query of the whole dataset returns (what Flight advertises)."""
        return self.engine.view_schema(manifest.name) or manifest.schema

    def drop(self, name: str) -> Manifest:
        """Drop ``name``: delete its table log (it vanishes for every server at its next
        freshness check), then its live data files. Returns the last manifest."""
        old = self.catalog.drop(name)
        self._delete_quietly(old.objects)
        return old

    def versions(self, name: str, limit: int = 1000) -> list[dict[str, object]]:
        """The dataset's versions, newest first (at most ``limit``): ``version``,
        ``timestamp`` (ISO 8601 UTC), ``operation`` (WRITE, CREATE TABLE, OPTIMIZE...),
        ``rows_added`` and ``rows_total`` (None when the commit did not record them)."""
        return self.travel.versions(name, limit)

    def compact(self, name: str) -> dict[str, object]:
        """Rewrite the dataset's small files into large ones now (rows and answers
        unchanged); returns ``{"dataset", "version", "files_before", "files_after"}``."""
        return self.compactor.compact(name)

    # -- ingest --------------------------------------------------------------------------
    @contextlib.contextmanager
    def ingest_slot(self, name: str) -> Iterator[None]:
        """Hold one of the ingest slots, or raise Unavailable at once when none is free."""
        if not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"all {self.settings.max_concurrent_ingests} ingest slots are busy; retry shortly"
            )
        with self._active_lock:
            self._in_slots += 1
            if self._in_slots == 1:  # the first ingest: its decay (flightlake.memory)
                memory.ingest_started()
        try:
            with self.writing(name):
                yield
        finally:
            with self._active_lock:
                self._in_slots -= 1
                if not self._in_slots:  # the last ingest ended: its buffers go back to the OS
                    memory.release()
            self._slots.release()

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Mark files being written under ``data/NAME/`` (gc never sweeps them meanwhile)."""
        with self._active_lock:
            self._active_ingests[name] = self._active_ingests.get(name, 0) + 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active_ingests[name] -= 1
                if not self._active_ingests[name]:
                    del self._active_ingests[name]

    @property
    def active_ingests(self) -> int:
        with self._active_lock:
            return self._in_slots

    def ingest_arrow(
        self,
        name: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        mode: str | None = "append",
        idempotency_key: str | None = None,
    ) -> IngestResult:
        """Ingest an Arrow stream into dataset ``name``.

        With an ``idempotency_key`` (1-128 printable ASCII characters) already committed on
        this dataset (by any server, kept with the commit in the Delta log) nothing is
        written and the first result is answered with ``replayed=True``."""
        validate_name(name)
        mode = check_mode(mode)
        key = _check_key(idempotency_key)
        with self.ingest_slot(name):
            replayed = self._replayed(name, key)
            if replayed is not None:
                return replayed
            target = self._precheck(name, mode)
            new = write_arrow(self.storage, name, schema, batches, target=target)
            return self._commit(name, mode, new, key)

    def ingest_csv(
        self,
        name: str,
        chunks: Iterable[bytes | memoryview],
        mode: str | None = "append",
        idempotency_key: str | None = None,
    ) -> IngestResult:
        """Ingest CSV bytes (streamed in chunks) into dataset ``name`` (``idempotency_key``
        as in ``ingest_arrow``)."""
        validate_name(name)
        mode = check_mode(mode)
        key = _check_key(idempotency_key)
        with self.ingest_slot(name):
            replayed = self._replayed(name, key)
            if replayed is not None:
                return replayed
            target = self._precheck(name, mode)
            # parsed, encoded and uploaded while the bytes still arrive (spool_while)
            new = spool_while(
                chunks,
                lambda path: write_csv(self.storage, name, path, 0, target=target),
                self.settings.spool_dir,
                self.settings.min_free_spool_bytes,
            )
            return self._commit(name, mode, new, key)

    def ingest_csv_file(
        self,
        name: str,
        path: Path,
        mode: str | None = "append",
        idempotency_key: str | None = None,
    ) -> IngestResult:
        """Ingest a CSV file already on local disk (e.g. an HTTP upload's spool)."""
        validate_name(name)
        mode = check_mode(mode)
        key = _check_key(idempotency_key)
        with self.ingest_slot(name):
            replayed = self._replayed(name, key)
            if replayed is not None:
                return replayed
            target = self._precheck(name, mode)
            new = write_csv(self.storage, name, path, path.stat().st_size, target=target)
            return self._commit(name, mode, new, key)

    def _fail_if_silent(self, started: float, what: str) -> None:
        """After a table-log check that found the store silent (and served what it knew):
        fail now rather than spend another request budget on data it cannot read."""
        if self.storage.failed_since(started):
            raise Unavailable(f"{what}: the object store does not answer; retry shortly")

    def _replayed(self, name: str, key: str | None) -> IngestResult | None:
        if key is None:
            return None
        committed = self.catalog.replay(name, key)
        return None if committed is None else IngestResult.of(name, committed)

    def _precheck(self, name: str, mode: str) -> pa.Schema | None:
        """Check that an ingest into ``name`` in ``mode`` may start (Conflict for mode=create
        on a dataset that exists; Unavailable when the store is silent); return the schema an
        append must match (None: a new dataset, or mode overwrite / create)."""
        started = time.monotonic()
        head = self.catalog.find(name)
        self._fail_if_silent(started, f"cannot ingest into {name!r} now")
        if mode == "create" and head is not None:
            raise Conflict(f"dataset {name!r} already exists (mode=create)")
        return head.schema if head is not None and mode == "append" else None

    def _commit(
        self, name: str, mode: str, new: NewObjects, key: str | None = None
    ) -> IngestResult:
        new = replace(new, schema=as_stored(new.schema))
        try:
            committed = self.catalog.commit(name, mode, new, key)
        except BaseException:
            self._delete_quietly(new.keys)
            raise
        if committed.replayed:
            self._delete_quietly(new.keys)  # a retry of a committed ingest: keep the first
        else:
            self.compactor.committed(committed.manifest)
        return IngestResult.of(name, committed)

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
        self,
        sql: str,
        batch_rows: int | None = None,
        params: QueryParams | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> pa.RecordBatchReader:
        """Run client SQL; the reader streams the result. ``params`` bind its placeholders;
        ``cancelled`` says when the client is gone (the query is then interrupted)."""
        if self._stale_views:
            self._rebuild_stale_views()
        try:
            return self.engine.execute(sql, batch_rows, params, cancelled)
        except NotFound as exc:
            raise self._unavailable_if_stale(exc) from exc

    def query_schema(
        self,
        sql: str,
        params: QueryParams | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> pa.Schema:
        if self._stale_views:
            self._rebuild_stale_views()
        try:
            return self.engine.schema(sql, params, cancelled)
        except NotFound as exc:
            raise self._unavailable_if_stale(exc) from exc

    @property
    def generation(self) -> int:
        """A number that changes whenever a dataset's view changes (commit, drop, refresh):
        a result schema resolved at one generation holds while it stays the same."""
        return self.engine.generation

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
    def gc(
        self, grace_seconds: float | None = None, retention_hours: float | None = None
    ) -> list[str]:
        """Vacuum every dataset: delete files that no version younger than
        ``retention_hours`` needs, and files of failed or killed writes (in no version)
        older than ``grace_seconds``; never a file of an ingest or compaction running here.
        Returns the deleted keys."""
        grace = self.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
        hours = self.settings.retention_hours if retention_hours is None else retention_hours
        self.catalog.refresh_listing(force=True)
        with self._active_lock:
            busy = {f"{DATA_PREFIX}/{name}/" for name in self._active_ingests}
        doomed = compaction.sweep(self.catalog, self.storage, grace, hours, busy)
        if doomed:
            log.info("gc removed %d files", len(doomed))
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
        """Re-read every table from the store now (other writers' commits); views follow."""
        return self.catalog.load()

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
        self.compactor.close()
        self.engine.close()


def _check_key(key: str | None) -> str | None:
    return None if key is None else validate_idempotency_key(key)
