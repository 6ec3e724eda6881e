"""One exception hierarchy for flightlake.

    FlightlakeError
    ├── InvalidInput        bad names, malformed commands, unparseable CSV, bad SQL
    │   └── QueryError      SQL that DuckDB rejects or that the sandbox refuses
    │       └── QueryCancelled  interrupted: past query_timeout, or its client went away
    ├── NotFound            unknown dataset
    ├── Conflict            schema conflict, dataset exists in mode=create, lost commit race
    ├── TooLarge            an upload past the configured cap
    ├── ResourceExhausted   a query past its memory budget, or a disk below its free-space floor
    ├── Unavailable         overload (no ingest slot) or the object store is unreachable
    │   └── StorageError    the object store failed
    ├── Unauthenticated     missing or wrong credentials
    └── Forbidden           credentials lack the role for the call

Front ends map these classes to their own codes, once each (Flight, HTTP, CLI). Each class
carries ``code``, the short outcome name that logs and metrics use for it.
"""

from __future__ import annotations


class FlightlakeError(Exception):
    """Base class of every error flightlake raises on purpose."""

    code = "internal"


class InvalidInput(FlightlakeError):
    """The request or its data is malformed."""

    code = "invalid_argument"


class QueryError(InvalidInput):
    """The SQL failed to parse, bind or run, or was refused by the sandbox."""


class QueryCancelled(QueryError):
    """The query was interrupted (query_timeout, or its client went away): not the SQL's
    fault, and never worth running again."""


class NotFound(FlightlakeError):
    """The named dataset does not exist."""

    code = "not_found"


class Conflict(FlightlakeError):
    """The request conflicts with the catalog (schema, existence, concurrent commit)."""

    code = "conflict"


class TooLarge(FlightlakeError):
    """The upload exceeds the configured size cap."""

    code = "too_large"


class ResourceExhausted(FlightlakeError):
    """The request needs more memory or disk than the server's limits allow."""

    code = "resource_exhausted"


class Unavailable(FlightlakeError):
    """The server cannot take the request now; retrying later may succeed."""

    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(Unavailable):
    """The object store failed or could not be reached."""


class Unauthenticated(FlightlakeError):
    """No credentials, or credentials that match no token or user."""

    code = "unauthenticated"


class Forbidden(FlightlakeError):
    """Valid credentials whose role does not allow the call."""

    code = "forbidden"
