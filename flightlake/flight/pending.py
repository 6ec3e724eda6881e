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
from collections.abc import Callable

import pyarrow as pa

from flightlake.admission import CallCheck

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
        self._checks: dict[str, CallCheck] = {}  # the client checks of parked queries
        self._lock = threading.Lock()

    def park(self, reader: pa.RecordBatchReader, check: CallCheck | None = None) -> str:
        """Keep ``reader`` for a later :meth:`claim`; return its id (32 hex characters).
        ``check`` is the query's rebindable client check (detached while parked)."""
        key = secrets.token_hex(16)
        now = time.monotonic()
        with self._lock:
            self._parked[key] = (now, reader)
            if check is not None:
                self._checks[key] = check
            doomed = self._expired(now)
        _close(doomed)
        return key

    def start(
        self,
        run: Callable[[CallCheck], pa.RecordBatchReader],
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[pa.RecordBatchReader, str]:
        """Start a query with ``run(check)`` and park its reader; return it and its id.

        While ``run`` blocks (DuckDB works up to the first batch), ``check`` asks this call's
        ``cancelled``, so the query watchdog stops the query when this call's client goes
        away. The check is detached before returning (this call is over then) and bound to
        the claiming DoGet's by :meth:`claim`.
        """
        check = CallCheck(cancelled)
        try:
            reader = run(check)
        finally:
            check.detach()
        return reader, self.park(reader, check)

    def claim(
        self, key: str | None, cancelled: Callable[[], bool] | None = None
    ) -> pa.RecordBatchReader | None:
        """The reader parked under ``key`` (removed), or None when it is unknown or expired.
        ``cancelled`` (the claiming call's client check) is bound to the query's watch."""
        if not key:
            return None
        now = time.monotonic()
        with self._lock:
            found = self._parked.pop(key, None)
            check = self._checks.pop(key, None)
            doomed = self._expired(now)
        if check is not None and found is not None:
            check.bind(cancelled)
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
                self._checks.pop(key, None)
            if found is not None:
                _close([found[1]])

    def __len__(self) -> int:
        with self._lock:
            return len(self._parked)

    def close(self) -> None:
        with self._lock:
            doomed = [reader for _, reader in self._parked.values()]
            self._parked.clear()
            self._checks.clear()
        _close(doomed)

    def _expired(self, now: float) -> list[pa.RecordBatchReader]:
        """Pop (under the lock) what is too old or over capacity; the caller closes them."""
        doomed = []
        while self._parked:
            key, (parked_at, reader) = next(iter(self._parked.items()))
            if now - parked_at <= self.max_age and len(self._parked) <= self.capacity:
                break
            del self._parked[key]
            self._checks.pop(key, None)
            doomed.append(reader)
        return doomed


def _close(readers: list[pa.RecordBatchReader]) -> None:
    """Close readers outside the lock: closing interrupts and frees their DuckDB cursor."""
    for reader in readers:
        reader.close()
