"""Running checked SQL: an admission slot, a thread of its own, the watchdog, the stream.

query.QueryEngine decides what runs (the sandbox, the cache, the labels); this module runs
it. No duckdb import: a cursor is anything with ``execute(sql, params)``,
``to_arrow_reader(rows)`` and ``close()``, made by the engine's ``open_cursor``, and a
failure becomes a flightlake error through the engine's ``translate``.

The life of one query (flightlake.admission has the parts):

1. take one of ``max_concurrent_queries`` slots, waiting up to ``query_queue_seconds``;
2. open a cursor, and watch it: the watchdog interrupts it once its client is gone or
   ``query_timeout`` has passed, and lowers its thread's priority once it turns out heavy;
3. on a kept thread (``QueryThreads``), execute and hand the schema, each batch, then the
   end (or an error) to the reader through a ``Handoff``;
4. the caller gets a RecordBatchReader at once, with the schema; however its iteration ends,
   even unread, the query ends and frees its slot.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from flightlake import observe
from flightlake.admission import (
    Handoff,
    QuerySlots,
    QueryThreads,
    Watch,
    Watchdog,
    memory_ceiling,
)
from flightlake.config import Settings
from flightlake.errors import ResourceExhausted
from flightlake.fidelity import relabel
from flightlake.sandbox import QueryParams

#: ``translate(error, reason)``: a cursor's failure as the error a client reads; ``reason``
#: is why the watchdog interrupted the query, if it did
Translate = Callable[[BaseException, str], Exception]


class Execution:
    """Admission, threads and the watchdog of one engine's queries."""

    def __init__(self, settings: Settings, translate: Translate) -> None:
        self.settings = settings
        self.translate = translate
        cores = os.cpu_count() or 1
        self.slots = QuerySlots(
            settings.max_concurrent_queries or 2 * cores, settings.query_queue_seconds
        )
        self.watchdog = Watchdog(
            memory_ceiling=memory_ceiling(
                settings.max_server_memory_bytes, settings.query_memory_limit
            )
        )
        self._threads = QueryThreads(keep=self.slots.limit)
        self._open_lock = threading.Lock()
        self._open = 0

    @property
    def active(self) -> int:
        """Result streams still open (running, streaming or parked)."""
        with self._open_lock:
            return self._open

    def run(
        self,
        open_cursor: Callable[[], Any],
        interrupt: Callable[[Any], None],
        sql: str,
        params: QueryParams | None,
        batch_rows: int,
        cancelled: Callable[[], bool] | None,
        label: Callable[[pa.Schema], pa.Schema | None],
    ) -> pa.RecordBatchReader:
        """Run ``sql`` with ``params`` on a cursor from ``open_cursor`` and return a reader
        of its result in batches of ``batch_rows``, relabelled to ``label(schema)`` when
        that is not None (flightlake.fidelity).

        Raises Unavailable when no slot frees up in ``query_queue_seconds``, and what
        ``translate`` makes of a failure before the first batch; later failures, and a
        batch over ``max_result_batch_bytes`` (ResourceExhausted), raise from the reader.
        """
        self.slots.acquire(cancelled)
        try:
            cursor = open_cursor()
        except BaseException:
            self.slots.release()
            raise
        watch = self.watchdog.watch(
            functools.partial(interrupt, cursor), cancelled, self.settings.query_timeout
        )
        handoff = Handoff()
        try:
            self._threads.submit(
                functools.partial(self._produce, cursor, watch, handoff, sql, params, batch_rows)
            )
        except BaseException:
            self.watchdog.unwatch(watch)
            cursor.close()
            self.slots.release()
            raise
        kind, value = handoff.get()  # the schema, once DuckDB has the first chunk; or an error
        if kind == "error":
            self.watchdog.release(watch, abandoned=False)
            raise self.translate(value, watch.reason) from value
        with self._open_lock:
            self._open += 1
        labelled = label(value)
        batches = self._guarded(handoff, watch, labelled)
        next(batches)  # started: dropping it unread now runs its finally (ends the query)
        return pa.RecordBatchReader.from_batches(labelled or value, batches)

    def _produce(
        self,
        cursor: Any,
        watch: Watch,
        handoff: Handoff,
        sql: str,
        params: QueryParams | None,
        batch_rows: int,
    ) -> bool:
        """The query's DuckDB work, on a thread of its own: the watchdog lowers the priority
        of this thread once the query turns out heavy, so small queries stay fast beside it.
        Hands the schema, then each batch, then ``end`` (or an ``error``) to the reader.
        Returns whether its thread must retire (its priority was lowered)."""
        watch.thread_id = threading.get_native_id()
        outcome: tuple[str, Any] | None = None
        try:
            cursor.execute(sql, params)
            reader = cursor.to_arrow_reader(batch_rows)
            if not handoff.put("schema", reader.schema):
                return watch.niced
            while outcome is None:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    outcome = ("end", None)
                    break
                if not handoff.put("batch", batch):
                    return watch.niced
        except BaseException as exc:
            outcome = ("error", exc)
        finally:
            # over before the reader hears so: its slot is free once the stream has ended
            self.watchdog.unwatch(watch)
            cursor.close()
            self.slots.release()
        if outcome is not None:
            handoff.put(*outcome)
        return watch.niced

    def _guarded(
        self, handoff: Handoff, watch: Watch, labelled: pa.Schema | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The result batches, after one ``None`` that ``run`` consumes, relabelled to
        ``labelled`` when given (see flightlake.fidelity). However the iteration ends, even
        unread, the query ends: its thread stops and frees the slot."""
        done = False
        try:
            yield None
            while True:
                kind, value = handoff.get()
                if kind == "end":
                    done = True
                    return
                if kind == "error":
                    done = True
                    # DuckDB errors raised after the first chunk surface through Arrow's C
                    # stream as plain OSError; they are still query errors.
                    raise self.translate(value, watch.reason) from value
                self.check_batch(value)
                yield value if labelled is None else relabel(value, labelled)
        finally:
            handoff.stop()
            # closed early: nobody reads the rest, stop the query
            self.watchdog.release(watch, abandoned=not done)
            with self._open_lock:
                self._open -= 1

    def check_batch(self, batch: pa.RecordBatch) -> None:
        """Raise ResourceExhausted for a result batch over ``max_result_batch_bytes``."""
        cap = self.settings.max_result_batch_bytes
        if cap > 0 and batch.nbytes > cap:
            observe.RESOURCE_REFUSALS.labels("memory").inc()
            raise ResourceExhausted(
                f"query result too large for memory: one result batch holds "
                f"{batch.nbytes / (1 << 20):,.0f} MiB, more than "
                f"max_result_batch_bytes ({cap / (1 << 20):,.0f} MiB); select fewer "
                "or smaller values"
            )

    def close(self) -> None:
        self.watchdog.close()
