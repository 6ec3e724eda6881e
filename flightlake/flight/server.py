"""The Arrow Flight front end: decode the request, call the lake, return a stream.

Errors leave through one decorator, ``flight_errors``, which maps the flightlake hierarchy to
gRPC codes (NOT_FOUND, INVALID_ARGUMENT, UNIMPLEMENTED, UNAVAILABLE, UNAUTHENTICATED,
PERMISSION_DENIED, INTERNAL) for plain Flight and Flight SQL alike. A client reads the problem
once, with no traceback and no server path; the server's log keeps the full traceback.
With principals configured, ``flight.auth``'s middleware authenticates every call before a
handler runs; the handlers that write (do_put, the ``drop`` and ``gc`` actions) also call
``require_write`` once.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pyarrow as pa
import pyarrow.flight as flight

from flightlake import observe
from flightlake.auth import Authenticator
from flightlake.catalog import Manifest
from flightlake.errors import (
    Conflict,
    FlightlakeError,
    Forbidden,
    InvalidInput,
    NotFound,
    ResourceExhausted,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from flightlake.flight import auth as flight_auth
from flightlake.flight import tickets
from flightlake.flight.pending import PendingResults
from flightlake.flight.watchdog import CURRENT_WATCH, IdleWatch, IdleWatchdog
from flightlake.lake import Lake

log = logging.getLogger("flightlake.flight")

F = TypeVar("F", bound=Callable[..., Any])

ACTIONS = {
    "health": "{status, service} as JSON (details to an authenticated caller); UNAVAILABLE "
    "when the object store does not answer within health_probe_seconds.",
    "status": "Health with details (version, datasets, storage, error) as JSON; never fails.",
    "drop": "Drop a dataset; body: the dataset name.",
    "list": "All datasets' manifests as JSON.",
    "gc": "Vacuum: delete files no version within the retention needs, and files of failed "
    "writes older than the grace period; body: optional grace seconds.",
    "versions": "A dataset's versions (version, timestamp, operation, rows); body: the name.",
    "compact": "Rewrite a dataset's small files into large ones; body: the name.",
    "refresh": "Re-read the catalog from the object store.",
}
WRITE_ACTIONS = frozenset({"drop", "gc", "compact"})  # need the write role; the others need read


class _ToldOnce(Exception):
    """A message pyarrow's Flight server sends once, with no traceback.

    pyarrow answers a Python exception with its ``str()`` as the status message and appends
    ". Detail: Python exception: <traceback.format_exception(...)>" (DESIGN.md, "Known facts").
    ``FlightServer`` sets ``sys.tracebacklimit = 0``, which drops the frames (and their file
    paths), leaving the type line "flightlake.NotFound: <message>". The message is
    answered only to the first ``str()``, the status message pyarrow takes at once when the
    handler raises; the later formatting then shows the type alone:
    "dataset 'x' not found. Detail: Python exception: flightlake.NotFound".
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._told = False

    def __str__(self) -> str:
        if self._told:
            return ""
        self._told = True
        return str(self.args[0])


class InvalidArgument(_ToldOnce, pa.ArrowInvalid):
    """INVALID_ARGUMENT."""


class NotFoundError(_ToldOnce, pa.ArrowKeyError):
    """NOT_FOUND."""


class Unimplemented(_ToldOnce, pa.ArrowNotImplementedError):
    """UNIMPLEMENTED."""


for _cls in (InvalidArgument, NotFoundError, Unimplemented):
    _cls.__module__ = "flightlake"  # the type line clients see: no package path
NotFoundError.__qualname__ = "NotFound"


def server_places(lake: Lake) -> tuple[str, ...]:
    """Where the server keeps files (storage root, temp and spool folders): never shown."""
    root = lake.storage.root_url
    places = {root, root.removeprefix("s3://"), tempfile.gettempdir(), lake.settings.spool_dir}
    return tuple(sorted((p.rstrip("/") for p in places if len(p.strip("/")) > 1), key=len)[::-1])


def redact(text: str, places: tuple[str, ...]) -> str:
    """``text`` with every path or URL under one of ``places`` replaced by "<server path>"."""
    for place in places:
        text = re.sub(re.escape(place) + r"[^\s'\"]*", "<server path>", text)
    return text


def to_flight_error(exc: BaseException, places: tuple[str, ...] = ()) -> Exception:
    """The exception whose gRPC status matches ``exc`` (a FlightlakeError, or a pyarrow
    error raised by a handler), with ``exc``'s message once, no traceback and no server
    path (``places``, see server_places)."""
    if isinstance(exc, flight.FlightError):
        if not any(p in str(exc) for p in places):
            return exc  # pyarrow adds only "Detail: <code>" to these
        return type(exc)(redact(str(exc), places))
    msg = redact(str(exc), places)
    if isinstance(exc, NotFound | pa.ArrowKeyError):
        return NotFoundError(msg)
    if isinstance(exc, Conflict):
        text = msg if "conflict" in msg.lower() else f"conflict: {msg}"
        return InvalidArgument(text)  # message says conflict
    if isinstance(exc, ResourceExhausted):
        # pyarrow's Flight server cannot send RESOURCE_EXHAUSTED (its status mapping has no
        # such case; checked with ADBC, which prints the gRPC code): INVALID_ARGUMENT, as
        # for a too-large upload: the request as sent will not succeed.
        return InvalidArgument(f"resource exhausted: {msg}")
    if isinstance(exc, pa.ArrowNotImplementedError):
        return Unimplemented(msg)
    if isinstance(exc, TooLarge | InvalidInput | pa.ArrowException):
        return InvalidArgument(msg.split(". Detail:")[0])
    if isinstance(exc, Unavailable):
        return flight.FlightUnavailableError(msg)
    if isinstance(exc, Unauthenticated):
        return flight.FlightUnauthenticatedError(msg)
    if isinstance(exc, Forbidden):
        return flight.FlightUnauthorizedError(msg)
    return flight.FlightInternalError(msg)


@contextlib.contextmanager
def _mapped(name: str, start: float, places: tuple[str, ...]) -> Iterator[None]:
    """Errors raised inside become the Flight error clients read (see to_flight_error)."""
    try:
        yield
    except FlightlakeError as exc:
        log.debug("%s failed", name, exc_info=True)
        observe.record("flight", name, start, observe.error_code(exc), error=str(exc)[:200])
        raise to_flight_error(exc, places) from None
    except (flight.FlightError, pa.ArrowException) as exc:
        log.debug("%s failed", name, exc_info=True)
        code = "unimplemented" if isinstance(exc, pa.ArrowNotImplementedError) else None
        observe.record(
            "flight",
            name,
            start,
            code or "invalid_argument",
            error=str(exc).split(". Detail:")[0][:200],
        )
        raise to_flight_error(exc, places) from None
    except Exception as exc:
        log.exception("internal error in %s", name)
        observe.record("flight", name, start, "internal")
        raise flight.FlightInternalError(f"internal error: {type(exc).__name__}") from None


def _mapped_iter(result: Iterator[Any], name: str, start: float, places: tuple[str, ...]) -> Any:
    with _mapped(name, start, places):
        yield from result


def flight_errors(method: F) -> F:
    """Map errors raised by a handler (or by the generator it returns) to Flight errors,
    once: the right code, the message once, no traceback, no server path."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        observe.new_request_id()
        places = getattr(args[0], "places", ()) if args else ()
        with _mapped(method.__name__, start, places):
            result = method(*args, **kwargs)
        if inspect.isgenerator(result):
            return _mapped_iter(result, method.__name__, start, places)
        return result

    return cast(F, wrapper)


def _log(method: str, start: float, **fields: Any) -> None:
    """The log line and metrics of a Flight call that succeeded (see observe.record)."""
    observe.record("flight", method, start, **fields)


KEY_HEADER = "idempotency-key"
KEY_MIDDLEWARE = "idempotency"


class KeyHeader(flight.ServerMiddleware):
    """The ``idempotency-key`` header of one call."""

    def __init__(self, key: str) -> None:
        self.key = key


class KeyHeaderFactory(flight.ServerMiddlewareFactory):
    """Reads the ``idempotency-key`` call header: how Flight SQL bulk ingest carries a key
    (ADBC: statement option ``adbc.flight.sql.rpc.call_header.idempotency-key``), since
    the ADBC driver puts nothing of its own in ``CommandStatementIngest``'s options."""

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> KeyHeader | None:
        values = headers.get(KEY_HEADER)
        if not values:
            return None
        value = values[-1]  # ADBC adds a value each time the option is set: the last counts
        return KeyHeader(value.decode("latin-1") if isinstance(value, bytes) else str(value))


def header_key(context: Any) -> str | None:
    """The call's ``idempotency-key`` header, or None."""
    middleware = context.get_middleware(KEY_MIDDLEWARE) if context is not None else None
    return middleware.key if isinstance(middleware, KeyHeader) else None


class Counted:
    """Wraps a RecordBatchReader to count rows and bytes, and logs when the stream ends."""

    def __init__(
        self,
        reader: pa.RecordBatchReader,
        method: str,
        places: tuple[str, ...] = (),
        **fields: Any,
    ) -> None:
        self.reader = reader
        self.places = places  # see server_places
        self.method = method
        self.fields = fields
        self.rows = 0
        self.bytes = 0
        self.start = time.perf_counter()
        self.request_id = observe.REQUEST_ID.get()  # the stream is read on another thread

    def stream(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.reader.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        code = "ok"
        try:
            for batch in self.reader:
                self.rows += batch.num_rows
                self.bytes += batch.nbytes
                yield batch
        except GeneratorExit:
            code = "cancelled"
            raise
        except Exception as exc:  # raised mid-stream: past the handler's decorator
            code = observe.error_code(exc)
            if isinstance(exc, FlightlakeError | pa.ArrowException):
                raise to_flight_error(exc, self.places) from None
            log.exception("internal error in %s", self.method)
            raise flight.FlightInternalError(f"internal error: {type(exc).__name__}") from None
        except BaseException as exc:
            code = observe.error_code(exc)
            raise
        finally:
            self.reader.close()
            observe.REQUEST_ID.set(self.request_id)
            observe.record(
                "flight",
                self.method,
                self.start,
                code,
                rows_out=self.rows,
                bytes_out=self.bytes,
                kind="query",
                **self.fields,
            )


class FlightServer(flight.FlightServerBase):
    """Plain Flight over a Lake. Build the lake first: the base class serves at once.

    ``auth`` defaults to one built from the lake's settings; pass the HTTP server's own to
    share the session tokens the basic-auth handshake issues.
    """

    def __init__(
        self, lake: Lake, location: str, auth: Authenticator | None = None, **kwargs: Any
    ) -> None:
        self.lake = lake
        self.places = server_places(lake)  # redacted from every error message
        self.auth = auth if auth is not None else Authenticator.from_settings(lake.settings)
        kwargs = flight_auth.server_options(self.auth, kwargs)
        observe.bind(lambda: lake.active_ingests, lambda: len(lake.catalog.list()))
        # pyarrow formats a failed call's Python exception into the message clients read,
        # frames and file paths included, unless tracebacklimit is 0 (see _ToldOnce). The
        # log keeps full tracebacks: observe's formatters pass their own limit.
        sys.tracebacklimit = 0
        from flightlake.flight.flightsql import FlightSqlHandler  # imports this module

        self.pending = PendingResults()  # results started by GetFlightInfo for their DoGet
        self.sql: FlightSqlHandler | None = FlightSqlHandler(lake, self.pending)  # same port
        self.watchdog = IdleWatchdog(lake.settings.ingest_idle_seconds, lambda: self.port)
        middleware = {**(kwargs.get("middleware") or {}), KEY_MIDDLEWARE: KeyHeaderFactory()}
        kwargs = {**kwargs, "middleware": middleware}
        super().__init__(location, **kwargs)

    def require_write(self, context: Any) -> None:
        """Raise Forbidden unless the caller's role is ``write`` (no-op without principals)."""
        self.auth.require(flight_auth.principal(context), write=True)

    # -- catalog -------------------------------------------------------------------------
    def flight_info(self, manifest: Manifest) -> flight.FlightInfo:
        descriptor = flight.FlightDescriptor.for_path(manifest.name)
        endpoint = flight.FlightEndpoint(tickets.dataset_ticket(manifest.name), [])
        schema = self.lake.read_schema(manifest)  # what do_get will stream
        return flight.FlightInfo(
            schema, descriptor, [endpoint], manifest.row_count, manifest.total_bytes
        )

    @flight_errors
    def list_flights(self, context: Any, criteria: bytes) -> Iterator[flight.FlightInfo]:
        prefix = criteria.decode("utf-8", "replace") if criteria else ""
        # built here, not in a generator: an error while pyarrow iterates would escape
        # flight_errors (and reach the client with a traceback)
        infos = [self.flight_info(m) for m in self.lake.datasets() if m.name.startswith(prefix)]
        return iter(infos)

    @flight_errors
    def get_flight_info(
        self, context: Any, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        if self.sql is not None and (cmd := self.sql.command(descriptor)) is not None:
            return self.sql.get_flight_info(descriptor, cmd, context.is_cancelled)
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            path = [
                p.decode("utf-8", "replace") if isinstance(p, bytes) else p for p in descriptor.path
            ]
            if len(path) != 1:
                raise InvalidInput(f"path must have exactly one part, got {path}")
            return self.flight_info(self.lake.dataset(path[0]))
        sql = tickets.command_sql(descriptor.command)
        # started now, streamed by the DoGet of this ticket
        reader, key = self.pending.start(
            lambda check: self.lake.query(sql, cancelled=check), context.is_cancelled
        )
        endpoint = flight.FlightEndpoint(tickets.sql_ticket(sql, key), [])
        return flight.FlightInfo(reader.schema, descriptor, [endpoint], -1, -1)

    @flight_errors
    def get_schema(self, context: Any, descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        return flight.SchemaResult(self.get_flight_info(context, descriptor).schema)

    # -- data ----------------------------------------------------------------------------
    @flight_errors
    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.RecordBatchStream:
        if self.sql is not None and (cmd := self.sql.decode(ticket.ticket)) is not None:
            return self.sql.do_get(cmd, context.is_cancelled)
        sql, pending = tickets.ticket_parts(ticket.ticket)
        # the query watchdog polls context.is_cancelled: a client gone stops the query
        reader = self.pending.claim(pending, context.is_cancelled) or self.lake.query(
            sql, cancelled=context.is_cancelled
        )
        counted = Counted(reader, "do_get", self.places, sql=sql[:200])
        return flight.RecordBatchStream(counted.stream())

    @flight_errors
    def do_put(
        self,
        context: Any,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        cmd = self.sql.command(descriptor) if self.sql is not None else None
        if cmd is None or cmd.name == "CommandStatementIngest":  # not binding parameters
            self.require_write(context)
        with self.watchdog.watch(context.peer()):  # every read below counts as idle time
            if self.sql is not None and cmd is not None:
                return self.sql.do_put(cmd, reader, writer, context)
            self._put(context, descriptor, reader, writer)
        return None

    def _put(
        self,
        context: Any,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        start = time.perf_counter()
        command = tickets.parse_put(descriptor)
        counter = {"bytes": 0}
        key = command.idempotency_key
        if key is None:
            key = header_key(context)
        if command.format == "csv":
            result = self.lake.ingest_csv(
                command.dataset,
                _csv_chunks(reader, counter, context),
                command.mode,
                idempotency_key=key,
            )
        else:
            result = self.lake.ingest_arrow(
                command.dataset,
                reader.schema,
                _arrow_batches(reader, counter, context),
                command.mode,
                idempotency_key=key,
            )
        writer.write(pa.py_buffer(json.dumps(result.to_json()).encode()))
        _log(
            "do_put",
            start,
            kind="ingest",
            dataset=command.dataset,
            format=command.format,
            mode=command.mode,
            rows_in=result.rows_written,
            bytes_in=counter["bytes"],
            version=result.version,
            **({"replayed": True} if result.replayed else {}),
        )

    # -- actions -------------------------------------------------------------------------
    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return list(ACTIONS.items()) + (self.sql.actions() if self.sql is not None else [])

    @flight_errors
    def do_action(self, context: Any, action: flight.Action) -> Iterator[flight.Result]:
        if self.sql is not None and self.sql.owns_action(action.type):
            return self.sql.do_action(action, context.is_cancelled)
        start = time.perf_counter()
        body = action.body.to_pybytes() if action.body is not None else b""
        kind = action.type
        if kind in WRITE_ACTIONS:
            self.require_write(context)
        if kind == "health":
            out: Any = self.lake.health(details=flight_auth.principal(context) is not None)
            if out["status"] != "ok":
                raise Unavailable(
                    f"unavailable: {out['error']}"
                    if "error" in out
                    else "unavailable: the object store does not answer"
                )
        elif kind == "status":
            out = self.lake.health(details=True)
        elif kind == "drop":
            name = body.decode("utf-8", "replace").strip()
            out = {"dropped": self.lake.drop(name).name}
        elif kind == "list":
            shown, total = self.lake.datasets_page()
            out = [m.to_json() for m in shown]
            if body.strip():  # {"with_total": true}: say whether max_list cut the listing
                try:
                    asked = json.loads(body)
                except ValueError:
                    asked = None
                if asked != {"with_total": True}:
                    raise InvalidInput('list takes an empty body or {"with_total": true}')
                out = {
                    "datasets": out,
                    "total": total,
                    "truncated": total > len(shown),
                    "max_list": self.lake.settings.max_list,
                }
        elif kind == "gc":
            grace = float(body) if body.strip() else None
            out = {"deleted": self.lake.gc(grace)}
        elif kind == "versions":
            out = self.lake.versions(body.decode("utf-8", "replace").strip())
        elif kind == "compact":
            out = self.lake.compact(body.decode("utf-8", "replace").strip())
        elif kind == "refresh":
            out = {"warnings": self.lake.refresh()}
        else:  # UNIMPLEMENTED, as gRPC answers an unknown method
            raise pa.ArrowNotImplementedError(
                f"unknown action {kind!r}: use one of {', '.join(ACTIONS)}"
            )
        _log("do_action", start, action=kind)
        return iter([flight.Result(pa.py_buffer(json.dumps(out).encode()))])


def _arrow_batches(
    reader: flight.MetadataRecordBatchReader,
    counter: dict[str, int],
    context: Any = None,
    watch: IdleWatch | None = None,
) -> Iterator[pa.RecordBatch]:
    """The batches of a do_put stream. A stream that ends because the client went away
    (cancelled call) or because the idle watchdog cut it raises instead of ending, so a cut
    upload is never committed."""
    watch = watch or CURRENT_WATCH.get() or IdleWatch("")
    while True:
        try:
            with watch.waiting():
                chunk = reader.read_chunk()
        except StopIteration:
            _check_cut(context, watch)
            return
        except pa.ArrowInvalid as exc:
            _check_cut(context, watch)
            raise InvalidInput(f"bad Arrow stream: {exc}") from exc
        except (flight.FlightError, OSError):
            _check_cut(context, watch)
            raise
        if chunk.data is not None:
            counter["bytes"] += chunk.data.nbytes
            yield chunk.data


def _check_cut(context: Any, watch: IdleWatch) -> None:
    if watch.expired:
        raise InvalidInput(
            "upload cancelled: the client sent nothing for the ingest_idle_seconds limit; "
            "nothing committed"
        )
    if context is not None and context.is_cancelled():
        raise InvalidInput("upload cancelled by the client; nothing committed")


def _csv_chunks(
    reader: flight.MetadataRecordBatchReader,
    counter: dict[str, int],
    context: Any = None,
    watch: IdleWatch | None = None,
) -> Iterator[bytes | memoryview]:
    schema = reader.schema
    if len(schema) != 1 or not (
        pa.types.is_binary(schema[0].type) or pa.types.is_large_binary(schema[0].type)
    ):
        raise InvalidInput(
            f"CSV do_put needs one binary column 'data' holding the file's bytes, got {schema}"
        )
    for batch in _arrow_batches(reader, {"bytes": 0}, context, watch):
        for value in batch.column(0):
            if value.is_valid:
                buf = value.as_buffer()
                counter["bytes"] += buf.size
                yield memoryview(buf)  # written to the spool without a copy
