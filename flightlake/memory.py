"""The server process's memory: Arrow's allocator, and when freed memory goes back to the OS.

Measured on a 2M-row CSV ingest (218 MB; docs/BASELINE.md, "Ingest and memory"): Arrow's
live bytes (``pa.total_allocated_bytes()``) peaked at 70-90 MB, yet with pyarrow's default
pool (mimalloc) the server's RSS grew by about 180 MB and stayed about 100 MB higher after
the ingest: mimalloc and glibc keep freed pages for reuse. So:

- ``flightlake`` (cli.py) makes jemalloc Arrow's default pool, by setting pyarrow's
  ``ARROW_DEFAULT_MEMORY_POOL`` before pyarrow loads (a value already set is kept). It must
  be the C++ default: Flight, the CSV reader and the Parquet writer allocate from it, and
  ``pa.set_memory_pool`` only changes what Python-side calls use.
- ``configure`` sets jemalloc's decay (``memory_decay_ms``, 0: freed pages are returned at
  once) and glibc's mmap threshold to a fixed 256 KiB: glibc otherwise raises the threshold
  to the largest block freed (up to 32 MiB), so the 1 MiB upload chunks land in its heaps
  and stay there (glibc's mapped bytes peaked at 140 MB instead of 94 MB in that ingest).
- ``release`` hands the pool's unused memory back after the last running ingest.
- The decay applies while ingests run (``ingest_started`` / ``release``); between them the
  pool keeps freed pages ``QUERY_DECAY_MS``: a query result reuses the previous one's pages
  instead of faulting new ones in. Measured on the 500k-row table through ADBC (load 0.8,
  median of 21): `SELECT *` 57.6 ms with decay 0 against 49.4 ms with 1000 ms (or mimalloc);
  the group-bys were unchanged. A 2M-row CSV ingest on local disk: decay 0 peaked at
  350-380 MB and took 2.07 s; 1000 ms peaked at 442-494 MB and took 1.80 s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import pyarrow as pa

from flightlake.config import Settings

log = logging.getLogger("flightlake.memory")

MMAP_THRESHOLD = 256 << 10  # glibc: blocks this big or bigger are mmap'd, freed at once
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


QUERY_DECAY_MS = 1000  # how long freed pages are kept while no ingest runs

_ingest_decay_ms: int | None = None  # set by configure when the pool is jemalloc
_decay_ms: int | None = None  # the decay last given to jemalloc


def _set_decay(ms: int) -> None:
    global _decay_ms
    pa.jemalloc_set_decay_ms(ms)
    _decay_ms = ms


def current_decay_ms() -> int | None:
    """The decay last given to jemalloc (None: the pool is not jemalloc, or not configured)."""
    return _decay_ms


def configure(settings: Settings) -> str:
    """Remember ``settings.memory_decay_ms`` for ingests, start a jemalloc pool at
    ``QUERY_DECAY_MS``, and fix glibc's mmap threshold; return the backend of Arrow's
    default pool. Never fails the server: what this platform lacks is skipped (logged at
    debug)."""
    global _ingest_decay_ms
    backend = str(pa.default_memory_pool().backend_name)
    if backend == "jemalloc":
        _ingest_decay_ms = settings.memory_decay_ms
        _set_decay(QUERY_DECAY_MS)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError) as exc:  # not glibc
        log.debug("mallopt not available: %s", exc)
    log.info(
        "memory pool %s (decay %d ms while ingests run, %d ms between)",
        backend,
        settings.memory_decay_ms,
        QUERY_DECAY_MS,
    )
    return backend


def ingest_started() -> None:
    """The first of the running ingests started: freed pages go back after
    ``memory_decay_ms`` from now on."""
    if _ingest_decay_ms is not None:
        _set_decay(_ingest_decay_ms)


def release() -> None:
    """The last running ingest ended: give the pool's unused memory back to the OS (cheap
    when there is none) and keep freed pages ``QUERY_DECAY_MS`` again."""
    pa.default_memory_pool().release_unused()
    if _ingest_decay_ms is not None:
        _set_decay(QUERY_DECAY_MS)
