"""Results started before their ``DoGet``: plan and run a query once, not once per call.

A Flight SQL client (ADBC's DB-API prepares every new statement) asks for a query's schema
(``CreatePreparedStatement`` / ``GetFlightInfo``) and then fetches it (``DoGet``). Resolving the
schema means running the query in DuckDB, so the server used to run each query twice. Instead,
the call that needs the schema starts the query, answers with the reader's schema, and parks the
reader here under a random id that the ticket carries; the ``DoGet`` that presents the id
streams that very reader.

A ticket stays self-contained: it still holds the SQL, so a replica that does not hold the
parked reader (another process behind a load balancer), or a fetch after the reader expired,
simply runs the SQL again. Parked readers are bounded in number and age: an unclaimed one is
closed (its DuckDB cursor interrupted) after ``max_age`` seconds or when ``capacity`` newer ones
push it out, so a client that never fetches holds nothing for long.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

import pyarrow as pa

#: Parked readers kept at once; the oldest is closed when a new one would exceed this.
CAPACITY = 64
#: Seconds a parked reader waits for its DoGet. It must not outlive the freshness promise
#: (a query sees commits made ``freshness_seconds`` before it starts): kept at one second.
MAX_AGE = 1.0


class PendingResults:
    """Readers parked between the call that started a query and the ``DoGet`` that fetches it."""

    def __init__(self, capacity: int = CAPACITY, max_age: float = MAX_AGE) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self._parked: OrderedDict[str, tuple[float, pa.RecordBatchReader]] = OrderedDict()
        self._lock = threading.Lock()

    def park(self, reader: pa.RecordBatchReader) -> str:
        """Keep ``reader`` for a later :meth:`claim`; return its id (32 hex characters)."""
        key = secrets.token_hex(16)
        now = time.monotonic()
        with self._lock:
            self._parked[key] = (now, reader)
            doomed = self._expired(now)
        _close(doomed)
        return key

    def claim(self, key: str | None) -> pa.RecordBatchReader | None:
        """The reader parked under ``key`` (removed), or None when it is unknown or expired."""
        if not key:
            return None
        now = time.monotonic()
        with self._lock:
            found = self._parked.pop(key, None)
            doomed = self._expired(now)
        _close(doomed)
        if found is None:
            return None
        parked_at, reader = found
        if now - parked_at > self.max_age:
            _close([reader])
            return None
        return reader

    def discard(self, key: str | None) -> None:
        """Close the reader parked under ``key``, if any (its statement was closed)."""
        if key:
            with self._lock:
                found = self._parked.pop(key, None)
            if found is not None:
                _close([found[1]])

    def __len__(self) -> int:
        with self._lock:
            return len(self._parked)

    def close(self) -> None:
        with self._lock:
            doomed = [reader for _, reader in self._parked.values()]
            self._parked.clear()
        _close(doomed)

    def _expired(self, now: float) -> list[pa.RecordBatchReader]:
        """Pop (under the lock) what is too old or over capacity; the caller closes them."""
        doomed = []
        while self._parked:
            key, (parked_at, reader) = next(iter(self._parked.items()))
            if now - parked_at <= self.max_age and len(self._parked) <= self.capacity:
                break
            del self._parked[key]
            doomed.append(reader)
        return doomed


def _close(readers: list[pa.RecordBatchReader]) -> None:
    """Close readers outside the lock: closing interrupts and frees their DuckDB cursor."""
    for reader in readers:
        reader.close()
