"""Observability: Prometheus metrics, request ids and structured (JSON) log lines.

Front ends call ``record()`` once per request; it writes the request's log line (with its
request id) and updates the metrics, so logs and metrics never disagree. ``/metrics`` on the
HTTP port renders ``REGISTRY``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flightlake.errors import FlightlakeError

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "flightlake_requests",
    "Requests by front end, method and outcome code.",
    ["frontend", "method", "code"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "flightlake_errors",
    "Failed requests by front end and outcome code.",
    ["frontend", "code"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "flightlake_request_duration_seconds",
    "Request duration by method.",
    ["frontend", "method"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 120),
)
ROWS = Counter(
    "flightlake_rows",
    "Rows ingested (in) and returned by queries (out).",
    ["direction"],
    registry=REGISTRY,
)
BYTES = Counter(
    "flightlake_bytes",
    "Bytes received by ingest (in) and sent by queries (out).",
    ["direction"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "flightlake_ingest_duration_seconds",
    "Ingest duration.",
    registry=REGISTRY,
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)
QUERY_SECONDS = Histogram(
    "flightlake_query_duration_seconds",
    "Query duration, to the end of the result stream.",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300),
)
INGESTS_IN_FLIGHT = Gauge("flightlake_ingests_in_flight", "Ingests running now.", registry=REGISTRY)
DATASETS = Gauge("flightlake_datasets", "Datasets in the catalog.", registry=REGISTRY)
QUERIES_CANCELLED = Counter(
    "flightlake_queries_cancelled",
    "Queries interrupted by the server: reason timeout (query_timeout) or client_gone "
    "(deadline passed, cancelled or disconnected).",
    ["reason"],
    registry=REGISTRY,
)
QUERIES_REJECTED = Counter(
    "flightlake_queries_rejected",
    "Queries refused because no slot freed within query_queue_seconds.",
    registry=REGISTRY,
)
QUERIES_RUNNING = Gauge(
    "flightlake_queries_running", "Queries running or streaming now.", registry=REGISTRY
)
QUERIES_QUEUED = Gauge(
    "flightlake_queries_queued", "Queries waiting for a query slot now.", registry=REGISTRY
)
RESOURCE_REFUSALS = Counter(
    "flightlake_resource_exhausted",
    "Requests refused for memory or disk: resource memory, or the disk's role.",
    ["resource"],
    registry=REGISTRY,
)
CACHE_BYTES = Gauge(
    "flightlake_cache_bytes",
    "Bytes held by the hot-dataset cache (cache_bytes).",
    registry=REGISTRY,
)
CACHE_ROWS_QUERIES = Counter(
    "flightlake_cache_row_queries",
    "Plain SELECT ... FROM dataset [WHERE ...] queries: outcome hit (rows gathered from the "
    "cached Arrow copy) or miss (dataset not cached at that version).",
    ["outcome"],
    registry=REGISTRY,
)

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
reqlog = logging.getLogger("flightlake.request")


def error_code(exc: BaseException | None) -> str:
    """A short outcome code for metrics and logs: ok, not_found, invalid_argument, ..."""
    if exc is None:
        return "ok"
    return exc.code if isinstance(exc, FlightlakeError) else "internal"


def new_request_id(given: str | None = None) -> str:
    """Use a client-supplied id when it is short and printable, else make one; bind it."""
    rid = given if given and len(given) <= 64 and given.isprintable() else uuid.uuid4().hex[:16]
    REQUEST_ID.set(rid)
    return rid


def bind(active_ingests: Callable[[], int], datasets: Callable[[], int]) -> None:
    """Point the gauges at a lake (the last one bound wins)."""
    INGESTS_IN_FLIGHT.set_function(lambda: float(active_ingests()))
    DATASETS.set_function(lambda: float(datasets()))


def bind_queries(
    running: Callable[[], int], queued: Callable[[], int], cached: Callable[[], int]
) -> None:
    """Point the query gauges at an engine (the last one bound wins)."""
    QUERIES_RUNNING.set_function(lambda: float(running()))
    QUERIES_QUEUED.set_function(lambda: float(queued()))
    CACHE_BYTES.set_function(lambda: float(cached()))


def record(
    frontend: str,
    method: str,
    start: float,
    code: str = "ok",
    *,
    rows_in: int = 0,
    bytes_in: int = 0,
    rows_out: int = 0,
    bytes_out: int = 0,
    kind: str = "",
    **fields: Any,
) -> None:
    """Log one line for a finished request and update the metrics.

    ``kind`` is "ingest" or "query" for the duration histograms; ``start`` is a
    ``time.perf_counter()`` reading.
    """
    seconds = time.perf_counter() - start
    REQUESTS.labels(frontend, method, code).inc()
    DURATION.labels(frontend, method).observe(seconds)
    if code != "ok":
        ERRORS.labels(frontend, code).inc()
    if rows_in or bytes_in:
        ROWS.labels("in").inc(rows_in)
        BYTES.labels("in").inc(bytes_in)
    if rows_out or bytes_out:
        ROWS.labels("out").inc(rows_out)
        BYTES.labels("out").inc(bytes_out)
    if kind == "ingest" and code == "ok":
        INGEST_SECONDS.observe(seconds)
    elif kind == "query" and code == "ok":
        QUERY_SECONDS.observe(seconds)
    line = {
        "frontend": frontend,
        "method": method,
        "code": code,
        "request_id": REQUEST_ID.get(),
        **fields,
    }
    for key, value in (
        ("rows_in", rows_in),
        ("bytes_in", bytes_in),
        ("rows", rows_out),
        ("bytes", bytes_out),
    ):
        if value:
            line[key] = value
    line["ms"] = round(seconds * 1000, 1)
    reqlog.info(
        "%s %s",
        method,
        " ".join(f"{k}={_fmt(v)}" for k, v in line.items() if k != "request_id"),
        extra={"fields": line},
    )


def _fmt(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or '"' in text or not text) else text


def render() -> bytes:
    return generate_latest(REGISTRY)


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every record, and ``worker``: this process's index
    under ``serve --workers N`` (None in a single-process server or the supervisor)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.worker = self.worker
        return True


class FullTracebacks(logging.Formatter):
    """Tracebacks in full whatever ``sys.tracebacklimit`` says (the Flight server sets it to
    0 so that clients never read frames; the log keeps them)."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None  # not the (maybe shortened) text another handler cached
        return super().format(record)

    def formatException(self, ei: Any) -> str:
        return "".join(traceback.format_exception(ei[0], ei[1], ei[2], limit=1000)).rstrip("\n")


class JsonFormatter(FullTracebacks):
    """One JSON object per line: time, level, logger, request_id, message and fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        worker = getattr(record, "worker", None)
        if worker is not None:
            doc["worker"] = worker
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(
    level: str, fmt: str = "text", verbose: bool = False, worker: int | None = None
) -> None:
    """Configure the root logger: ``text`` (human) or ``json`` lines, with request ids.
    ``worker``: the index of a ``serve --workers N`` worker process, written into each of its
    lines (``worker=1`` before the request id; ``"worker": 1`` in JSON)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter(worker))
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        tag = "" if worker is None else "worker=%(worker)d "
        formatter = FullTracebacks(
            f"%(asctime)s %(levelname)s %(name)s {tag}[%(request_id)s] %(message)s"
        )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO))
