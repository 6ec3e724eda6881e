"""Reading older versions: ``FROM name AT (VERSION => N)`` / ``AT (TIMESTAMP => ts)`` and
the version list of a dataset.

The query engine resolves each AT clause through ``TimeTravel.keys`` to the Parquet files
live at that version (read from the Delta log, never from the client) and reads exactly
those. A version whose log or files were vacuumed is NotFound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, date, datetime
from typing import Any

from flightlake import delta
from flightlake.catalog import Catalog, ms_iso, validate_name
from flightlake.errors import InvalidInput, NotFound

CACHE_VERSIONS = 64  # (dataset, version) file lists kept in memory


class TimeTravel:
    """Resolves versions and times of the catalog's datasets to their files."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._cache: OrderedDict[tuple[str, int], tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def keys(self, name: str, unit: str, value: object) -> tuple[int, tuple[str, ...]]:
        """(version, live file keys) of dataset ``name`` at ``unit`` ("VERSION" with an
        integer, or "TIMESTAMP" with a datetime / date / ISO text). NotFound when the
        dataset, the version or its files are gone."""
        validate_name(name)
        if self.catalog.find(name) is None:
            raise NotFound(f"dataset {name!r} not found")
        tables = self.catalog.tables
        if unit == "VERSION":
            version = _version(value)
            with self._lock:
                files = self._cache.get((name, version))
            if files is None:
                files = tuple(f.key for f in tables.at_version(name, version).files)
        elif unit == "TIMESTAMP":
            snap = tables.at_timestamp(name, _when(value))
            version, files = snap.version, tuple(f.key for f in snap.files)
        else:
            raise InvalidInput(f"AT ({unit} => ...) is not supported: use VERSION or TIMESTAMP")
        if not files:
            raise NotFound(f"dataset {name!r} has no files at version {version}")
        storage = self.catalog.storage
        if not (storage.exists(files[0]) and storage.exists(files[-1])):  # gc vacuumed them
            raise NotFound(f"dataset {name!r}: version {version} is no longer available (vacuumed)")
        with self._lock:
            self._cache[(name, version)] = files
            while len(self._cache) > CACHE_VERSIONS:
                self._cache.popitem(last=False)
        return version, files

    def versions(self, name: str, limit: int = 1000) -> list[dict[str, object]]:
        """Newest first: version, timestamp (ISO), operation, rows_added, rows_total."""
        validate_name(name)
        out: list[dict[str, object]] = []
        for commit in self.catalog.history(name, limit):
            out.append(
                {
                    "version": int(commit.get("version", -1)),
                    "timestamp": ms_iso(int(commit.get("timestamp", 0))),
                    "operation": _operation(commit),
                    "rows_added": _int(commit.get(delta.ROWS_ADDED), _metric(commit)),
                    "rows_total": _int(commit.get(delta.ROWS_TOTAL)),
                }
            )
        return out


def _operation(commit: dict[str, Any]) -> str:
    if commit.get("flightlake.operation") == "compact":
        return "COMPACT"
    return str(commit.get("operation", "UNKNOWN"))


def _metric(commit: dict[str, Any]) -> int | None:
    metrics = commit.get("operationMetrics") or {}
    for key in ("numOutputRows", "num_added_rows"):
        if key in metrics:
            return _int(metrics[key])
    return None


def _int(value: object, default: int | None = None) -> int | None:
    try:
        return int(value) if value is not None else default  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default


def _version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"AT (VERSION => ...) needs an integer version, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"AT (VERSION => ...) needs an integer version, got {value!r}") from None


def _when(value: object) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):  # epoch milliseconds
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _when(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            pass
    raise InvalidInput(f"AT (TIMESTAMP => ...) needs a timestamp, got {value!r}")
