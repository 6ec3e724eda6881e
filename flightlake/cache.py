"""The in-memory cache of hot datasets, under a memory budget (``cache_bytes``).

A dataset queried ``HOT_AFTER`` times at one version is loaded, by one background thread,
into memory as an Arrow table: DuckDB's own Arrow export of the dataset's view, so its types
are exactly what a query returns. Statements of the plain ``SELECT columns FROM dataset
WHERE ...`` shape (flightlake.sandbox.RowPlan) then run in DuckDB for the positions of their
rows only (each Parquet row's ``file_index`` and ``file_row_number``, over the same files in
the same order), and the rows are gathered from the Arrow table: a zero-copy slice for a run
of rows, Arrow's ``take`` otherwise. What DuckDB no longer does for them is convert every
selected value from its vectors to Arrow, which was most of the time of a wide result
(measured in docs/BASELINE.md). ROAPI keeps its tables in memory as Arrow the same way; this
keeps only what is queried. Every other statement reads Parquet as before: measured here,
DuckDB's aggregates over a DuckDB copy of the table were no faster than over Parquet, whose
reader filters dictionary pages before it decodes the other columns.

Freshness: an entry belongs to one version of a dataset (its Parquet object keys). When a
commit moves the dataset (query.QueryEngine.set_view) the entry is dropped at once, so no
query ever reads a stale copy; the new version is loaded once it is queried twice in turn. Entries
are evicted least recently used first when the budget would be exceeded; one larger than the
whole budget is never kept. An entry in use by a running query (pinned) is freed when the
last such query ends.

No duckdb import: the engine hands in ``load`` and ``unload``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from flightlake import observe
from flightlake.admission import memory_ceiling
from flightlake.config import Settings

log = logging.getLogger("flightlake.cache")

HOT_AFTER = 2  # queries of one version of a dataset before it is loaded


@dataclass
class Entry:
    """One cached version of a dataset: its rows as ``arrow``; ``starts[i]`` is the
    position in ``arrow`` of the first row of the version's i-th Parquet file; ``view`` is
    the engine's position view over those files (sandbox.POSITION_COLUMNS)."""

    dataset: str
    keys: tuple[str, ...]
    view: str
    arrow: pa.Table
    starts: pa.Array
    nbytes: int
    pins: int = 0
    evicted: bool = False


@dataclass
class _Heat:
    keys: tuple[str, ...]
    queries: int = 0
    refused: bool = False  # too large for the budget at this version


def cache_budget(settings: Settings) -> int:
    """Bytes the cache may hold: ``cache_bytes``, and at most a quarter of the server's
    memory ceiling (admission.memory_ceiling: ``max_server_memory_bytes``, by default
    ``query_memory_limit`` + 1 GiB), which the cache's memory counts against."""
    if settings.cache_bytes <= 0:
        return 0
    ceiling = memory_ceiling(settings.max_server_memory_bytes, settings.query_memory_limit)
    return min(settings.cache_bytes, ceiling // 4) if ceiling else settings.cache_bytes


def gather(
    entry: Entry, arrow: pa.Table, files: pa.Array, rows: pa.Array
) -> Iterator[pa.RecordBatch]:
    """The rows of ``arrow`` (``entry.arrow`` or a selection of its columns) at the
    Parquet positions ``files`` (file index) and ``rows`` (row number in the file), in that
    order, as record batches: a zero-copy slice when they are one ascending run
    (``SELECT *`` with no or a wide filter), else Arrow's ``take``."""
    count = len(rows)
    if count == 0:
        return
    positions = pc.add(pc.take(entry.starts, files), rows)
    first = positions[0].as_py()
    if positions[count - 1].as_py() - first == count - 1 and (
        count == 1 or pc.min_max(pc.pairwise_diff(positions)[1:]).as_py() == {"min": 1, "max": 1}
    ):
        part = arrow.slice(first, count)
    else:
        part = arrow.take(positions)
    yield from part.to_batches()


#: ``load(dataset, keys, budget)`` -> the loaded entry; None when the dataset would need
#: more than ``budget`` bytes; or why it cannot be cached at all (nothing is kept then)
Loader = Callable[[str, tuple[str, ...], int], Entry | str | None]


@dataclass
class DatasetCache:
    """Hot datasets in memory; thread-safe. ``budget`` is in bytes (0 turns it off)."""

    budget: int
    load: Loader
    unload: Callable[[Entry], None]
    #: called with an entry once it is loaded and current (the engine points the view at it)
    on_loaded: Callable[[Entry], None] = lambda entry: None
    _entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)  # LRU order
    _heat: dict[str, _Heat] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _queue: queue.SimpleQueue[tuple[str, tuple[str, ...]] | None] = field(
        default_factory=queue.SimpleQueue
    )
    _thread: threading.Thread | None = None
    _closed: bool = False
    hits: int = 0
    misses: int = 0

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def datasets(self) -> dict[str, int]:
        """Dataset name -> bytes held, for the entries now cached."""
        with self._lock:
            return {name: e.nbytes for name, e in self._entries.items()}

    def used(self) -> int:
        """Bytes held by the entries now."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def noted(self, dataset: str, keys: tuple[str, ...]) -> None:
        """A query reads ``dataset`` at ``keys``: count it, and queue the load when the
        dataset turns hot."""
        if not self.enabled:
            return
        with self._lock:
            entry = self._entries.get(dataset)
            if entry is not None and entry.keys == keys:
                self._entries.move_to_end(dataset)
                return
            heat = self._heat.get(dataset)
            if heat is None or heat.keys != keys:
                heat = self._heat[dataset] = _Heat(keys)
            heat.queries += 1
            if heat.queries != HOT_AFTER or heat.refused or self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flightlake-cache", daemon=True
                )
                self._thread.start()
        self._queue.put((dataset, keys))

    def moved(self, dataset: str, keys: tuple[str, ...] | None) -> None:
        """``dataset`` is now at ``keys`` (None: dropped). Its entry goes at once. The new
        version is loaded once it has been queried ``HOT_AFTER`` times in its turn: a
        dataset appended to many times a second is never copied again and again for
        versions nobody reads twice (a 60 s soak of back-to-back appends and group-bys on S3
        measured read p50 78 ms with reload-on-commit)."""
        free: list[Entry] = []
        with self._lock:
            entry = self._entries.get(dataset)
            if entry is not None and entry.keys != keys:
                del self._entries[dataset]
                free += self._evict(entry)
            self._heat.pop(dataset, None)
        for gone in free:
            self.unload(gone)

    def pin(self, dataset: str, keys: tuple[str, ...]) -> Entry | None:
        """The entry of ``dataset`` at exactly ``keys``, held until ``unpin``; else None."""
        with self._lock:
            entry = self._entries.get(dataset)
            if entry is None or entry.keys != keys:
                self.misses += 1
                observe.CACHE_ROWS_QUERIES.labels("miss").inc()
                return None
            entry.pins += 1
            self.hits += 1
            observe.CACHE_ROWS_QUERIES.labels("hit").inc()
            self._entries.move_to_end(dataset)
            return entry

    def unpin(self, entry: Entry) -> None:
        with self._lock:
            entry.pins -= 1
            free = entry.evicted and entry.pins == 0
        if free:
            self.unload(entry)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        for entry in entries:
            with self._lock:
                entry.evicted = True
                free = entry.pins == 0
            if free:
                self.unload(entry)

    # -- the loader thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            dataset, keys = job
            with self._lock:
                heat = self._heat.get(dataset)
                current = heat is not None and heat.keys == keys and not self._closed
                loaded = dataset in self._entries and self._entries[dataset].keys == keys
            if not current or loaded:
                continue
            started = time.monotonic()
            try:
                entry = self.load(dataset, keys, self.budget)
            except Exception as exc:  # the store failed, or no slot: try again when hot again
                log.warning("cache: loading %s failed: %s", dataset, exc)
                with self._lock:
                    if heat is not None:
                        heat.queries = 0
                continue
            if entry is None or isinstance(entry, str):  # not at this version: say so once
                with self._lock:
                    if heat is not None:
                        heat.refused = True
                if entry is None:
                    log.info("cache: %s is larger than cache_bytes; not cached", dataset)
                else:
                    log.info("cache: %s is not cached: %s", dataset, entry)
                continue
            self._admit(entry, time.monotonic() - started)

    def _admit(self, entry: Entry, seconds: float) -> None:
        free: list[Entry] = []
        with self._lock:
            heat = self._heat.get(entry.dataset)
            if self._closed or heat is None or heat.keys != entry.keys:
                free.append(entry)  # moved while loading
                kept = False
            else:
                old = self._entries.pop(entry.dataset, None)
                if old is not None:
                    free += self._evict(old)
                self._entries[entry.dataset] = entry
                while sum(e.nbytes for e in self._entries.values()) > self.budget:
                    _, victim = self._entries.popitem(last=False)
                    free += self._evict(victim)
                kept = entry.dataset in self._entries
                if not kept:
                    heat.refused = True
        for gone in free:
            self.unload(gone)
        if kept:
            self.on_loaded(entry)
            log.info(
                "cache: %s loaded (%d rows, %.0f MiB) in %.2f s",
                entry.dataset,
                entry.arrow.num_rows,
                entry.nbytes / (1 << 20),
                seconds,
            )

    @staticmethod
    def _evict(entry: Entry) -> list[Entry]:
        """Mark ``entry`` gone (lock held): the entries to unload now, once the lock is
        released ([] while a query holds it: ``unpin`` frees it)."""
        entry.evicted = True
        return [entry] if entry.pins == 0 else []
