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


def configure(settings: Settings) -> str:
    """Apply ``settings.memory_decay_ms`` to a jemalloc pool and fix glibc's mmap
    threshold; return the backend of Arrow's default pool. Never fails the server: what
    this platform lacks is skipped (logged at debug)."""
    backend = str(pa.default_memory_pool().backend_name)
    if backend == "jemalloc":
        pa.jemalloc_set_decay_ms(settings.memory_decay_ms)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError) as exc:  # not glibc
        log.debug("mallopt not available: %s", exc)
    log.info("memory pool %s (decay %d ms)", backend, settings.memory_decay_ms)
    return backend


def release() -> None:
    """Give the pool's unused memory back to the OS (cheap when there is none)."""
    pa.default_memory_pool().release_unused()
