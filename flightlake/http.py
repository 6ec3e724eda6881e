"""The HTTP /v1 shim: curl-friendly ingest, SQL, datasets and health over the same Lake.

    GET    /health                  {"status", "service"}: 200 when ready and the store
                                    answers, else 503 (details with a valid token)
    GET    /v1/status               /health with version, datasets, storage (needs read)
    POST   /v1/ingest?name=&mode=   multipart field ``file`` (or a raw body) -> manifest;
                                    header ``Idempotency-Key``: a retry is a replay
    POST   /v1/sql                  {"sql": "..."} -> JSON rows | Arrow IPC stream | CSV
    GET    /v1/datasets             every dataset's manifest
    GET    /v1/datasets/{name}      one manifest
    DELETE /v1/datasets/{name}      drop the dataset
    GET    /openapi.json            the OpenAPI 3 document of the above

Every error leaves through one handler as ``{"error": "...", "status": N}``. Handlers only
translate: uploads stream through ``Upload`` into ``Lake.ingest_*``, query results stream
batch by batch out of ``Lake.query``. ``HttpServer`` runs uvicorn in a thread of the process
that serves Flight, over the same Lake.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.from_thread
import pyarrow as pa
import pyarrow.parquet as pq
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flightlake import observe
from flightlake.auth import Authenticator
from flightlake.catalog import validate_name
from flightlake.config import Settings
from flightlake.encode import encode_result
from flightlake.errors import (
    Conflict,
    FlightlakeError,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from flightlake.lake import IngestResult, Lake, check_mode
from flightlake.openapi import OPENAPI

log = logging.getLogger("flightlake.http")

SQL_BODY_CAP = 1 << 20  # a /v1/sql request body larger than this is refused (413)
UPLOAD_PIECE = 1 << 20  # upload bytes handed to the ingest thread at a time
DRAIN_LIMIT = 4 << 20  # a refused upload up to this size is read to its end, not reset
DRAIN_SECONDS = 5.0  # ...if its rest arrives within this time
ARROW_STREAM = "application/vnd.apache.arrow.stream"
RESULT_TYPES = {  # Accept media type -> result format
    **dict.fromkeys(("application/json", "application/*", "*/*"), "json"),
    **dict.fromkeys((ARROW_STREAM,), "arrow"),
    **dict.fromkeys(("text/csv", "text/*"), "csv"),
}
MEDIA_TYPES = {"json": "application/json", "arrow": ARROW_STREAM, "csv": "text/csv; charset=utf-8"}
UPLOAD_FORMATS = ("csv", "parquet", "arrow")
_FORMAT_HINTS = {  # file-name suffix or content type -> upload format
    **dict.fromkeys((".csv", ".txt", "text/csv"), "csv"),
    **dict.fromkeys((".parquet", ".pq", "application/vnd.apache.parquet"), "parquet"),
    **dict.fromkeys(("application/x-parquet",), "parquet"),
    **dict.fromkeys((".arrow", ".arrows", ".ipc", ".feather", ARROW_STREAM), "arrow"),
    **dict.fromkeys(("application/vnd.apache.arrow.file",), "arrow"),
}


# -- errors ----------------------------------------------------------------------------------
_STATUS: tuple[tuple[type[FlightlakeError], int], ...] = (  # first match wins
    (NotFound, 404), (Conflict, 409), (TooLarge, 413), (InvalidInput, 400),
    (Unavailable, 503), (Unauthenticated, 401), (Forbidden, 403),
)  # fmt: skip


def status_of(exc: FlightlakeError) -> int:
    """The HTTP status of a flightlake error (500 for a class this table does not know)."""
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one error shape: ``{"error": "...", "status": N}``."""
    return JSONResponse({"error": message, "status": status}, status, headers)


async def _on_flightlake_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlightlakeError)
    status = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="flightlake"'
    upload = getattr(request.state, "upload", False)
    if upload and (isinstance(exc, TooLarge) or not await _drain(request, DRAIN_LIMIT)):
        headers["Connection"] = "close"  # the rest of a large refused upload is not read
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return error_response(status, str(exc), headers)


async def _drain(request: Request, limit: int) -> bool:
    """Read and drop the unread rest of a small refused upload, so the answer is not lost to
    a TCP reset (closing a socket with unread data resets it). False when it is too large."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > limit:
        return False
    if getattr(request, "_stream_consumed", True):
        return True
    seen = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        while seen <= limit:
            message = await request.receive()
            if message["type"] != "http.request":
                return False
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    return False


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no such endpoint: {request.url.path}",
        405: f"method {request.method} is not allowed on {request.url.path}",
    }
    return error_response(
        exc.status_code, message.get(exc.status_code, str(exc.detail)), dict(exc.headers or {})
    )


async def _on_internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")


# -- uploads ---------------------------------------------------------------------------------
class Upload:
    """The request body as a stream of the uploaded file's bytes, never held whole.

    A multipart body yields its field ``file`` (python-multipart's streaming parser, no form
    buffering); any other body is the file itself. More than ``cap`` body bytes raise
    TooLarge; a body that ends before the file part is complete raises InvalidInput; a
    client that sends nothing for ``idle_seconds`` (> 0) gets 408 and the connection closed.
    """

    def __init__(self, request: Request, cap: int, idle_seconds: float = 0.0) -> None:
        self._body = request.stream()
        self._cap = cap
        self._idle = idle_seconds
        self._received = 0
        self._ended = False
        self._pieces: list[bytes] = []  # file bytes parsed, not yet handed on
        self._size = 0
        ctype, params = parse_options_header(request.headers.get("content-type"))
        self._parser: MultipartParser | None = None
        self.filename = ""
        self.content_type = ctype.decode("latin-1").lower()
        self._stage = "file"  # multipart: before -> file -> after (the file part is done)
        if self.content_type == "multipart/form-data":
            if not params.get(b"boundary"):
                raise InvalidInput("multipart/form-data body without a boundary")
            self.content_type, self._stage = "", "before"
            self._part: dict[str, Any] = {}
            events = ("part_begin", "header_field", "header_value", "header_end",
                      "headers_finished", "part_data", "part_end")  # fmt: skip
            callbacks: Any = {f"on_{event}": getattr(self, f"_{event}") for event in events}
            self._parser = MultipartParser(params[b"boundary"], callbacks)

    # python-multipart callbacks: collect one part's headers, keep only field `file`'s data
    def _part_begin(self) -> None:
        self._part = {"headers": {}, "field": b"", "value": b"", "is_file": False}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._part["field"] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._part["value"] += data[start:end]

    def _header_end(self) -> None:
        name = self._part["field"].decode("latin-1").strip().lower()
        self._part["headers"][name] = self._part["value"]
        self._part["field"] = self._part["value"] = b""

    def _headers_finished(self) -> None:
        headers = self._part["headers"]
        _, options = parse_options_header(headers.get("content-disposition"))
        if options.get(b"name") != b"file":
            return
        if self._stage != "before":
            self._stage = "duplicate"
            return
        self._stage, self._part["is_file"] = "file", True
        self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
        self.content_type = (
            parse_options_header(headers.get("content-type"))[0].decode("latin-1").lower()
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.get("is_file"):
            self._pieces.append(data[start:end])
            self._size += end - start

    def _part_end(self) -> None:
        if self._part.get("is_file"):
            self._stage, self._part["is_file"] = "after", False

    async def _pull(self) -> None:
        """Read one body chunk and feed it on; at the end check the file arrived whole."""
        try:
            if self._idle > 0:
                with anyio.fail_after(self._idle):
                    chunk = await self._body.__anext__()
            else:
                chunk = await self._body.__anext__()
        except TimeoutError:
            raise HTTPException(
                408,
                f"upload cancelled: nothing received for {self._idle:g} s "
                "(ingest_idle_seconds); nothing committed",
                {"Connection": "close"},
            ) from None
        except StopAsyncIteration:
            self._ended = True
            if self._parser is not None and self._stage == "before":
                raise InvalidInput(
                    "multipart body has no field 'file': use -F file=@PATH"
                ) from None
            if self._parser is not None and self._stage != "after":
                raise InvalidInput("multipart body ended inside the 'file' part") from None
            return
        except ClientDisconnect:
            raise InvalidInput("upload interrupted: the client disconnected") from None
        self._received += len(chunk)
        if self._received > self._cap:
            raise TooLarge(f"upload exceeds the {self._cap}-byte cap (FLIGHTLAKE_MAX_UPLOAD_BYTES)")
        if self._parser is None:
            if chunk:
                self._pieces.append(chunk)
                self._size += len(chunk)
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidInput(f"malformed multipart body: {exc}") from exc
        if self._stage == "duplicate":
            raise InvalidInput("multipart body has more than one field 'file'")

    async def start(self) -> None:
        """Read up to the start of the file's bytes (the multipart part headers)."""
        while self._stage == "before" and not self._ended:
            await self._pull()

    async def read(self) -> bytes:
        """The next piece of the file (about UPLOAD_PIECE bytes); b"" once it is complete."""
        while not self._ended and self._size < UPLOAD_PIECE:
            await self._pull()
        piece, self._pieces, self._size = b"".join(self._pieces), [], 0
        return piece

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, for a worker thread: each piece is read on the event loop."""
        while piece := anyio.from_thread.run(self.read):
            yield piece


def upload_format(explicit: str | None, filename: str, content_type: str) -> str:
    """csv | parquet | arrow: the ``format`` parameter, else the file name, else its type."""
    if explicit:
        if explicit not in UPLOAD_FORMATS:
            raise InvalidInput(
                f"unknown format {explicit!r}: use one of {', '.join(UPLOAD_FORMATS)}"
            )
        return explicit
    suffix = PurePosixPath(filename).suffix.lower()
    return _FORMAT_HINTS.get(suffix) or _FORMAT_HINTS.get(content_type, "csv")


def ingest_upload(
    lake: Lake,
    name: str,
    mode: str,
    fmt: str,
    chunks: Iterator[bytes],
    spool_dir: str,
    idempotency_key: str | None = None,
) -> IngestResult:
    """Run in a worker thread: CSV streams into the lake's spool while its slot is held;
    Parquet and Arrow IPC need random access, so they are spooled here first."""
    if fmt == "csv":
        return lake.ingest_csv(name, chunks, mode, idempotency_key=idempotency_key)
    with tempfile.NamedTemporaryFile(prefix="flightlake-upload-", dir=spool_dir or None) as tmp:
        for chunk in chunks:
            tmp.write(chunk)
        tmp.flush()
        schema, batches = _open_arrow(Path(tmp.name), fmt)
        return lake.ingest_arrow(name, schema, batches, mode, idempotency_key=idempotency_key)


def _open_arrow(path: Path, fmt: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            return parquet.schema_arrow, _checked(parquet.iter_batches(batch_size=65_536))
        source = pa.memory_map(str(path))
        try:
            stream = pa.ipc.open_stream(source)
            return stream.schema, _checked(iter(stream))
        except pa.ArrowInvalid:
            ipc_file = pa.ipc.open_file(source)
            batches = (ipc_file.get_batch(i) for i in range(ipc_file.num_record_batches))
            return ipc_file.schema, _checked(batches)
    except pa.ArrowException as exc:
        raise InvalidInput(f"upload is not a readable {fmt} file: {exc}") from exc


def _checked(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except pa.ArrowException as exc:
        raise InvalidInput(f"upload is corrupt: {exc}") from exc


def result_format(accept: str) -> str:
    """json | arrow | csv: the first supported type the Accept header names (default json)."""
    for item in accept.split(","):
        fmt = RESULT_TYPES.get(item.split(";")[0].strip().lower())
        if fmt:
            return fmt
    return "json"


class ResultStream(StreamingResponse):
    """A query result, sent batch by batch as it is encoded in a worker thread.

    Once the status line is out, an error can only cut the response short: it is logged as
    one line and the connection is closed without the final chunk, so the client sees an
    incomplete body rather than a valid-looking truncated result.
    """

    def __init__(self, first: bytes, chunks: Generator[bytes, None, None], fmt: str) -> None:
        super().__init__(self._pieces(first, chunks), media_type=MEDIA_TYPES[fmt])

    @staticmethod
    async def _pieces(first: bytes, chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
        try:
            yield first
            while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
                yield chunk
        finally:
            chunks.close()

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except Exception as exc:
            # Returning without the final body message makes the server drop the connection.
            log.warning(
                "query failed mid-stream, response cut short: %s: %s", type(exc).__name__, exc
            )


# -- handlers --------------------------------------------------------------------------------
class Api:
    """The endpoints; each one decodes the request, calls the lake and encodes the answer."""

    def __init__(
        self, lake: Lake, settings: Settings, ready: Callable[[], bool], auth: Authenticator
    ) -> None:
        self.lake = lake
        self.settings = settings
        self.ready = ready
        self.auth = auth

    def authorize(self, request: Request, write: bool = False) -> None:
        """With tokens or users configured, require a bearer token (or basic auth)."""
        self.auth.authorize(request.headers.get("authorization", ""), write)

    async def health(self, request: Request) -> Response:
        """200 or 503 with ``{"status", "service"}``; details only for a caller whose
        Authorization header is valid (with auth configured), never for strangers."""
        return await self._health(details=self._identified(request))

    async def status(self, request: Request) -> Response:
        """/health with the details (version, datasets, storage, error), for readers."""
        self.authorize(request)
        return await self._health(details=True)

    def _identified(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not self.auth.enabled or not header:
            return False
        try:
            self.auth.from_header(header)
        except Unauthenticated:
            return False  # a wrong token gets the stranger's answer, not a 401
        return True

    async def _health(self, details: bool) -> Response:
        if self.ready():
            body = await run_in_threadpool(self.lake.health, details)
        else:
            body = {"status": "unavailable", "service": "flightlake"}
            if details:
                body["error"] = "server is not ready yet"
        if body["status"] == "ok":
            return JSONResponse(body)
        return JSONResponse(body, 503, {"Retry-After": "5"})

    async def ingest(self, request: Request) -> Response:
        request.state.upload = True
        self.authorize(request, write=True)
        params = request.query_params
        if not params.get("name"):
            raise InvalidInput("query parameter 'name' is required: /v1/ingest?name=NAME")
        name = validate_name(params["name"])
        request.state.dataset = name
        mode = check_mode(params.get("mode"))
        cap = self.settings.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise TooLarge(
                f"upload of {declared} bytes exceeds the {cap}-byte cap "
                "(FLIGHTLAKE_MAX_UPLOAD_BYTES)"
            )
        if self.lake.active_ingests >= max(1, self.settings.max_concurrent_ingests):
            raise Unavailable(
                f"all {self.settings.max_concurrent_ingests} ingest slots are busy; retry shortly"
            )
        key = request.headers.get("idempotency-key")  # the lake validates it
        upload = Upload(request, cap, self.settings.ingest_idle_seconds)
        await upload.start()
        fmt = upload_format(params.get("format"), upload.filename, upload.content_type)
        result = await run_in_threadpool(
            ingest_upload,
            self.lake,
            name,
            mode,
            fmt,
            upload.chunks(),
            self.settings.spool_dir,
            key,
        )
        request.state.rows_in = result.rows_written
        return JSONResponse({**result.manifest.to_json(), **result.to_json()})

    async def sql(self, request: Request) -> Response:
        self.authorize(request)
        sql = _sql_text(await _small_body(request, SQL_BODY_CAP))
        fmt = result_format(request.headers.get("accept", ""))
        reader = await run_in_threadpool(self.lake.query, sql)
        chunks = encode_result(reader, fmt)
        try:  # the first batch is read before the status line: early errors get their code
            first = await run_in_threadpool(next, chunks)
        except BaseException:
            chunks.close()
            raise
        return ResultStream(first, chunks, fmt)

    async def datasets(self, request: Request) -> Response:
        self.authorize(request)
        manifests = await run_in_threadpool(self.lake.datasets)
        return JSONResponse([m.to_json() for m in manifests])

    async def dataset(self, request: Request) -> Response:
        self.authorize(request)
        manifest = await run_in_threadpool(self.lake.dataset, request.path_params["name"])
        return JSONResponse(manifest.to_json())

    async def drop(self, request: Request) -> Response:
        self.authorize(request, write=True)
        dropped = await run_in_threadpool(self.lake.drop, request.path_params["name"])
        return JSONResponse({"dropped": dropped.name, "version": dropped.version})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def metrics(self, request: Request) -> Response:
        self.authorize(request)
        return Response(observe.render(), media_type=CONTENT_TYPE_LATEST)


async def _small_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"request body of {declared} bytes exceeds {cap} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise TooLarge(f"request body exceeds {cap} bytes")
    return bytes(body)


def _sql_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("sql"), str):
        raise InvalidInput('the body must be a JSON object {"sql": "SELECT ..."}')
    return str(doc["sql"])


def create_app(
    lake: Lake,
    settings: Settings,
    ready: Callable[[], bool] | None = None,
    auth: Authenticator | None = None,
) -> ASGIApp:
    """The Starlette app over ``lake``; ``ready`` says when /health may answer 200; ``auth``
    (default: one from ``settings``) may be shared with the Flight server."""
    auth = auth if auth is not None else Authenticator.from_settings(settings)
    api = Api(lake, settings, ready or (lambda: True), auth)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/status", api.status, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/ingest", api.ingest, methods=["POST"]),
        Route("/v1/sql", api.sql, methods=["POST"]),
        Route("/v1/datasets", api.datasets, methods=["GET"]),
        Route("/v1/datasets/{name}", api.dataset, methods=["GET"]),
        Route("/v1/datasets/{name}", api.drop, methods=["DELETE"]),
    ]
    handlers = {
        FlightlakeError: _on_flightlake_error,
        HTTPException: _on_http_error,
        Exception: _on_internal_error,
    }
    routes.append(Route("/metrics", api.metrics, methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers=handlers)
    observe.bind(lambda: lake.active_ingests, lambda: len(lake.catalog.list()))
    return ObservedApp(app)


class ObservedApp:
    """ASGI wrapper: a request id per request (``X-Request-Id`` in and out), one log line
    and the metrics when the response ends, bytes counted on the wire."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.routes = app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = observe.new_request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        state = scope.setdefault("state", {})
        seen = {"status": 500, "in": 0, "out": 0}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
            return message

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, tagged_send)
        finally:
            path = scope.get("path", "")
            method = f"{scope.get('method', '')} {_route_of(path)}"
            ingest = path == "/v1/ingest"
            observe.record(
                "http",
                method,
                start,
                _code_of(seen["status"]),
                rows_in=int(state.get("rows_in", 0)),
                bytes_in=seen["in"] if ingest else 0,
                bytes_out=seen["out"] if path == "/v1/sql" else 0,
                kind="ingest" if ingest else "query" if path == "/v1/sql" else "",
                status=seen["status"],
                **({"dataset": state["dataset"]} if "dataset" in state else {}),
            )


def _route_of(path: str) -> str:
    return "/v1/datasets/{name}" if path.startswith("/v1/datasets/") else path


# status -> outcome code for logs and metrics: the error table read backwards, plus 405, 408
_HTTP_CODES = {status: cls.code for cls, status in _STATUS} | {
    405: InvalidInput.code,
    408: InvalidInput.code,  # an idle upload, cancelled
}


def _code_of(status: int) -> str:
    return "ok" if status < 300 else _HTTP_CODES.get(status, "internal")


# -- the server thread -----------------------------------------------------------------------
class HttpServer:
    """uvicorn serving ``app`` from a thread of this process; ``start`` binds or raises."""

    def __init__(
        self, app: ASGIApp, host: str, port: int, tls_cert: str = "", tls_key: str = ""
    ) -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise OSError(
                exc.errno, f"HTTP cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,  # observe.record writes one line per request
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=5,
            ssl_certfile=tls_cert or None,
            ssl_keyfile=tls_key or None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="flightlake-http", daemon=True
        )
        self.scheme = "https" if tls_cert else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> HttpServer:
        self._thread.start()
        for _ in range(int(timeout / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise OSError(f"HTTP server did not start on {self.url} (see the log)")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()


def start_http(
    lake: Lake,
    settings: Settings,
    ready: Callable[[], bool] | None = None,
    port: int | None = None,
    auth: Authenticator | None = None,
) -> HttpServer:
    """Serve the /v1 shim for ``lake`` on settings.host:http_port (or ``port``)."""
    app = create_app(lake, settings, ready, auth)
    server = HttpServer(
        app,
        settings.host,
        settings.http_port if port is None else port,
        settings.tls_cert,
        settings.tls_key,
    )
    return server.start()
