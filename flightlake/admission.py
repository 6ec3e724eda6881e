"""What the box can serve: query admission, the query watchdog and the disk guard.

Nothing here knows DuckDB; ``query.py`` hands in plain callables.

- ``QuerySlots``: at most ``max_concurrent_queries`` queries run at once. A query beyond
  that waits for a slot up to ``query_queue_seconds`` (giving up early when its client goes
  away), then fails ``Unavailable`` naming the limit (Flight UNAVAILABLE, HTTP 503 with
  ``Retry-After``).
- ``Watchdog``: one daemon thread that looks at every running query every
  ``POLL_SECONDS``. A query whose client has gone (deadline passed, cancelled, disconnected:
  the front end's ``cancelled()`` says so) or whose ``query_timeout`` has passed is
  interrupted, again at every poll until it ends: DuckDB forgets an interrupt that lands
  before its query has started. A handler thread blocked inside DuckDB cannot notice its
  client leaving itself, so this thread does it, before or after the first batch alike.
  Each interruption is counted once in ``flightlake_queries_cancelled_total{reason}``.
- ``check_free_disk``: refuses to let an ingest fill a volume below a floor of free bytes,
  with a message that names the disk's role, never its path (clients never see server paths).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flightlake import observe
from flightlake.errors import ResourceExhausted, Unavailable

log = logging.getLogger("flightlake.admission")

#: Seconds between two looks of the watchdog (and between two checks of a queued query).
POLL_SECONDS = 0.1

#: Growth of resident memory during a query above which it is blamed for passing the ceiling.
MEMORY_MARGIN = 64 << 20

#: Seconds after which a running query counts as heavy and its thread gets nice HEAVY_NICE.
HEAVY_SECONDS = 0.25
HEAVY_NICE = 10

#: Why a query was interrupted: the ``reason`` label of the cancellation counter.
TIMEOUT = "timeout"
CLIENT_GONE = "client_gone"
MEMORY = "memory"


class QuerySlots:
    """A counting gate with a bounded wait: ``acquire`` a slot per query, ``release`` it
    when the query's stream ends."""

    def __init__(self, limit: int, queue_seconds: float) -> None:
        self.limit = max(1, limit)
        self.queue_seconds = max(0.0, queue_seconds)
        self._free = threading.Semaphore(self.limit)
        self._lock = threading.Lock()
        self._waiting = 0

    def acquire(self, cancelled: Callable[[], bool] | None = None) -> None:
        """Take a slot, waiting up to ``queue_seconds``.

        Raises ``Unavailable`` (naming ``max_concurrent_queries``) when none frees in time,
        and ``Cancelled`` when ``cancelled()`` turns true while waiting.
        """
        if self._free.acquire(blocking=False):
            return
        deadline = time.monotonic() + self.queue_seconds
        with self._lock:
            self._waiting += 1
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    observe.QUERIES_REJECTED.inc()
                    raise Unavailable(
                        f"server busy: all {self.limit} query slots "
                        f"(max_concurrent_queries) stayed taken for "
                        f"{self.queue_seconds:g} s (query_queue_seconds); retry shortly",
                        retry_after=max(1, round(self.queue_seconds / 2)),
                    )
                if self._free.acquire(timeout=min(POLL_SECONDS, left)):
                    return
                if cancelled is not None and cancelled():
                    observe.QUERIES_CANCELLED.labels(CLIENT_GONE).inc()
                    raise Cancelled("query cancelled while queued: the client went away")
        finally:
            with self._lock:
                self._waiting -= 1

    def release(self) -> None:
        self._free.release()

    @property
    def waiting(self) -> int:
        """Queries waiting for a slot now."""
        with self._lock:
            return self._waiting


class Cancelled(Unavailable):
    """The client went away before its query got a slot (nobody reads this error)."""


class Handoff:
    """Hands items from the thread running a query to the thread reading its result. The
    producer runs at most one record batch ahead: a ``batch`` waits while the reader has not
    taken the previous one; the small items (``schema``, ``end``, ``error``) never wait, so a
    one-batch result is handed over whole without a second thread switch, and its query's
    slot and cursor are free before the reader asks for the rows. ``stop`` ends the exchange
    from either side: a producer's ``put`` then answers False."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._batches = 0  # batches handed over and not yet taken
        self._ready = threading.Condition(threading.Lock())
        self._stopped = False

    def put(self, kind: str, value: Any = None) -> bool:
        """Hand over ``(kind, value)``; False (dropped) once stopped."""
        with self._ready:
            if kind == "batch":
                while self._batches and not self._stopped:
                    self._ready.wait()
                self._batches += 1
            if self._stopped:
                return False
            self._items.append((kind, value))
            self._ready.notify_all()
            return True

    def get(self) -> tuple[str, Any]:
        """The next ``(kind, value)``, waiting for it."""
        with self._ready:
            while not self._items:
                self._ready.wait()
            kind, value = self._items.popleft()
            if kind == "batch":
                self._batches -= 1
                self._ready.notify_all()
            return kind, value

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify_all()


class QueryThreads:
    """Threads that run queries' DuckDB work, kept for the next query when done: a thread
    new to DuckDB pays about 0.3 ms of set-up per query (measured on SELECT 1). A task
    returns True to retire its thread instead (its priority was lowered: an unprivileged
    process cannot raise it back). At most ``keep`` idle threads are kept."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: list[queue.SimpleQueue[Callable[[], bool]]] = []
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], bool]) -> None:
        """Run ``task`` on an idle thread, or on a new one."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._serve, args=(inbox,), name="flightlake-query", daemon=True
            )
            inbox.put(task)
            thread.start()
        else:
            inbox.put(task)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], bool]]) -> None:
        while True:
            task = inbox.get()
            try:
                retire = task()
            except Exception:  # a task reports its own errors; keep the thread sane
                log.exception("query thread task failed")
                retire = True
            if retire:
                return
            with self._lock:
                if len(self._idle) >= self.keep:
                    return
                self._idle.append(inbox)


class CallCheck:
    """A rebindable "is the client gone?" for a query that outlives the call that started
    it (Flight's GetFlightInfo starts a query whose DoGet streams it). ``bind`` the current
    call's check, ``detach`` it before that call ends: a call context must not be asked
    once its call is over. Detached, the check answers False."""

    def __init__(self, check: Callable[[], bool] | None = None) -> None:
        self._check = check
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:  # bind/detach wait for a check in progress
            return bool(self._check()) if self._check is not None else False

    def bind(self, check: Callable[[], bool] | None) -> None:
        with self._lock:
            self._check = check

    def detach(self) -> None:
        self.bind(None)


@dataclass(eq=False)
class Watch:
    """One running query as the watchdog sees it."""

    interrupt: Callable[[], None]
    cancelled: Callable[[], bool] | None
    deadline: float  # time.monotonic() after which the query is interrupted
    reason: str = ""  # set once the watchdog interrupts it
    started: float = field(default_factory=time.monotonic)
    rss_at_start: int = 0  # the process's resident bytes when the query started
    thread_id: int = 0  # the native id of the thread running the query's DuckDB work
    niced: bool = False  # its priority was lowered (it ran past HEAVY_SECONDS)


class Watchdog:
    """Interrupts running queries whose client is gone or whose time is up (see module).

    With ``memory_ceiling`` (bytes, 0: none), it also interrupts the running queries while
    the process's resident memory is above it: DuckDB's own memory limit does not cover
    every allocation (result values, strings, lists), and the server must outlive the query.
    Only queries during which memory grew by more than ``MEMORY_MARGIN`` are interrupted:
    allocators keep freed pages for a while, and a query that starts while resident memory
    is still high from an earlier one is not to blame for it.
    """

    def __init__(self, poll_seconds: float = POLL_SECONDS, memory_ceiling: int = 0) -> None:
        self.poll_seconds = poll_seconds
        self.memory_ceiling = memory_ceiling if resident_bytes() else 0
        self.last_rss = 0
        self._lock = threading.Lock()
        self._watches: set[Watch] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flightlake-watchdog", daemon=True)
        self._thread.start()

    def watch(
        self,
        interrupt: Callable[[], None],
        cancelled: Callable[[], bool] | None,
        timeout: float,
    ) -> Watch:
        """Start watching a query; pass the result to ``unwatch`` when it ends."""
        entry = Watch(interrupt, cancelled, time.monotonic() + timeout)
        if self.memory_ceiling:
            entry.rss_at_start = resident_bytes()
        with self._lock:
            self._watches.add(entry)
        return entry

    def release(self, entry: Watch, abandoned: bool) -> None:
        """The call that reads the query is over: never call its ``cancelled`` again (its
        call context may be gone) although the query's thread may still be finishing.
        ``abandoned`` (the stream was closed early or dropped unread): treat its client as
        gone from now on, interrupting it at every look until it is unwatched."""
        with self._lock:
            if entry in self._watches:
                entry.cancelled = _gone if abandoned else None
        if abandoned:
            entry.interrupt()

    def unwatch(self, entry: Watch) -> None:
        """Stop watching. After this returns the watchdog never calls ``entry``'s callables
        again (the front end's call context may be gone once the call has ended)."""
        with self._lock:
            self._watches.discard(entry)

    @property
    def active(self) -> int:
        """Queries being watched now (running, or streaming their result)."""
        with self._lock:
            return len(self._watches)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _lower_priority(self, entry: Watch, now: float) -> None:
        """A query running past HEAVY_SECONDS gets a lower CPU priority (nice HEAVY_NICE) for
        the thread running it, so small queries stay fast beside it. That thread is the
        query's own and ends with it, so nothing needs restoring (an unprivileged process
        could not raise it back). Linux only; elsewhere a no-op."""
        if entry.niced or not entry.thread_id or now - entry.started < HEAVY_SECONDS:
            return
        entry.niced = True
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, entry.thread_id, HEAVY_NICE)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.sweep()
            except Exception:  # never let one bad callable stop the watchdog
                log.exception("query watchdog sweep failed")

    def sweep(self) -> None:
        """Look at every query once (the thread calls this every ``poll_seconds``)."""
        now = time.monotonic()
        rss = resident_bytes() if self.memory_ceiling else 0
        self.last_rss = rss
        over = bool(self.memory_ceiling) and rss > self.memory_ceiling
        with self._lock:  # held while calling cancelled(): unwatch waits for it
            for entry in list(self._watches):
                reason = entry.reason
                if not reason:
                    if over and rss > entry.rss_at_start + MEMORY_MARGIN:
                        reason = MEMORY
                    elif now >= entry.deadline:
                        reason = TIMEOUT
                    elif entry.cancelled is not None and entry.cancelled():
                        reason = CLIENT_GONE
                    if not reason:
                        self._lower_priority(entry, now)
                        continue
                    entry.reason = reason
                    observe.QUERIES_CANCELLED.labels(reason).inc()
                    log.info(
                        "interrupting a query after %.1f s: %s",
                        now - entry.started,
                        _WHY[reason],
                    )
                entry.interrupt()


def _gone() -> bool:
    return True


_WHY = {
    TIMEOUT: "query_timeout passed",
    CLIENT_GONE: "its client went away",
    MEMORY: "server memory above max_server_memory_bytes",
}


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """A DuckDB-style size ("2GB", "400MB", "1.5GiB", "1000000") in bytes; 0 if unreadable."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        return 0
    try:
        return int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    except ValueError:
        return 0


def memory_ceiling(explicit: int, query_memory_limit: str) -> int:
    """``max_server_memory_bytes``, or (when 0) ``query_memory_limit`` plus 1 GiB for
    everything else the server holds (Arrow batches in flight, ingests, the interpreter)."""
    if explicit > 0:
        return explicit
    limit = parse_bytes(query_memory_limit)
    return limit + (1 << 30) if limit else 0


def resident_bytes() -> int:
    """This process's resident memory in bytes (Linux ``/proc/self/statm``); 0 elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def check_free_disk(
    folder: str, need_free_bytes: int, disk: str, setting: str, floor: int | None = None
) -> None:
    """Raise ResourceExhausted when ``folder``'s volume has less than ``need_free_bytes``
    free (the floor ``floor`` plus what is about to be written). ``disk`` names the
    volume's role in the message ("ingest spool disk"), ``setting`` the setting that sets
    the floor; the path itself is never shown. ``need_free_bytes`` <= 0 skips the check."""
    if need_free_bytes <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will fail and say why
    if free < need_free_bytes:
        observe.RESOURCE_REFUSALS.labels(disk).inc()
        keep = need_free_bytes if floor is None else floor
        raise ResourceExhausted(
            f"not enough free space on the {disk}: {_mib(free)} free, and ingests keep at "
            f"least {_mib(keep)} free ({setting}); nothing was committed"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"
