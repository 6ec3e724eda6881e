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

Module layout: the upload streaming and its admission rules live in ``http_upload`` (shared
with the web console), the uvicorn thread in ``http_server``; ``HttpServer``, ``Upload``,
``upload_format``, ``ingest_upload`` and ``UPLOAD_FORMATS`` stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
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
    ResourceExhausted,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from flightlake.http_server import HttpServer
from flightlake.http_upload import (
    ARROW_STREAM,
    UPLOAD_FORMATS,
    Upload,
    admit_upload,
    ingest_upload,
    upload_format,
)
from flightlake.lake import Lake, check_mode
from flightlake.openapi import OPENAPI

log = logging.getLogger("flightlake.http")

SQL_BODY_CAP = 1 << 20  # a /v1/sql request body larger than this is refused (413)
DRAIN_LIMIT = 1 << 20  # a refused upload's rest up to this size is read before the answer
DRAIN_SECONDS = 30.0  # the rest of a refused upload is read and dropped at most this long
DRAIN_IDLE_SECONDS = 5.0  # ...and no longer once this long passes without a byte of it
RESULT_TYPES = {  # Accept media type -> result format
    **dict.fromkeys(("application/json", "application/*", "*/*"), "json"),
    **dict.fromkeys((ARROW_STREAM,), "arrow"),
    **dict.fromkeys(("text/csv", "text/*"), "csv"),
}
MEDIA_TYPES = {
    "json": "application/json",
    "arrow": ARROW_STREAM,
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",  # console downloads only (not negotiated)
}


# -- errors ----------------------------------------------------------------------------------
_STATUS: tuple[tuple[type[FlightlakeError], int], ...] = (  # first match wins
    (NotFound, 404), (Conflict, 409), (TooLarge, 413), (InvalidInput, 400),
    (Unavailable, 503), (Unauthenticated, 401), (Forbidden, 403), (ResourceExhausted, 507),
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
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s -> %d: %s", request.method, request.url.path, status, exc)
    headers = await error_headers(request, exc)
    return lingering(request, error_response(status, str(exc), headers))


async def error_headers(request: Request, exc: FlightlakeError) -> dict[str, str]:
    """The headers an error answer carries: Retry-After (Unavailable), WWW-Authenticate
    (Unauthenticated), and ``Connection: close`` for a refused upload (``request.state.upload``
    set) that is too large (413); ``lingering`` closes any other whose body stays unread. The
    unread rest of a small body (a declared Content-Length up to DRAIN_LIMIT) is read and
    dropped here, before the answer, so that its connection can serve the next request.
    Shared with the console."""
    headers: dict[str, str] = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="flightlake"'
    await _drain_small(request)
    if getattr(request.state, "upload", False) and isinstance(exc, TooLarge):
        headers["Connection"] = "close"  # the connection is not reused after a refusal
    return headers


def _unread_upload(request: Request) -> bool:
    """Whether ``request`` is an upload whose body has not been read to its end."""
    upload = getattr(request.state, "upload", False)
    consumed = getattr(request, "_stream_consumed", True)
    return bool(upload) and not consumed and not getattr(request.state, "body_drained", False)


def _waits_to_send(request: Request) -> bool:
    """A client that sent ``Expect: 100-continue`` (RFC 9110, 10.1.1) and was never asked
    for its body (reading would ask for it; curl does this above 1 MiB)."""
    asked = getattr(request.state, "body_requested", False)
    return not asked and "100-continue" in request.headers.get("expect", "").lower()


async def _drain_small(request: Request) -> None:
    declared = request.headers.get("content-length", "")
    if not _unread_upload(request) or _waits_to_send(request):
        return
    if declared.isdigit() and int(declared) <= DRAIN_LIMIT and await _drain(request.receive):
        request.state.body_drained = True


def lingering(request: Request, response: Response) -> Response:
    """``response`` for a request whose upload body may be unread: sent at once, then the
    rest of the body is read and dropped (``_drain``) before the connection closes (the
    answer says ``Connection: close``).

    Closing a socket with unread data resets the connection, and a client that writes its
    whole body before reading (Python's urllib, a browser's form) then reports the reset,
    not the answer; nginx's "lingering close" exists for the same reason. Answering first
    means a client that reads while it sends (curl, browsers) has the answer at once. Not
    drained: a body already read, and the body of a client that waits on ``Expect:
    100-continue`` (RFC 9110, 10.1.1) and was never asked for it (reading would ask; curl
    does this above 1 MiB)."""
    if not _unread_upload(request):
        return response
    response.headers["Connection"] = "close"
    if _waits_to_send(request):
        return response
    return _Lingering(response)


class _Lingering(Response):
    """An answer sent whole before the request's unread body is drained (see ``lingering``):
    the body goes out as a first part, the end of the message only after the drain."""

    def __init__(self, answer: Response) -> None:
        self.status_code = answer.status_code
        self.body = answer.body
        self.raw_headers = answer.raw_headers
        self.background = answer.background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        await _drain(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:
            await self.background()


async def _drain(receive: Receive) -> bool:
    """Read and drop request body messages until the body ends (True), the client goes, or
    DRAIN_SECONDS pass, or DRAIN_IDLE_SECONDS pass without a message (False)."""
    with anyio.move_on_after(DRAIN_SECONDS):
        while True:
            with anyio.move_on_after(DRAIN_IDLE_SECONDS) as idle:
                message = await receive()
            if idle.cancelled_caught or message["type"] != "http.request":
                return False
            if not message.get("more_body", False):
                return True
    return False


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no such endpoint: {request.url.path}",
        405: f"method {request.method} is not allowed on {request.url.path}",
    }
    text = message.get(exc.status_code, str(exc.detail))
    return lingering(request, error_response(exc.status_code, text, dict(exc.headers or {})))


async def _on_internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return lingering(request, error_response(500, f"internal error: {type(exc).__name__}"))


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

    def __init__(
        self,
        first: bytes,
        chunks: Generator[bytes, None, None],
        fmt: str,
        gone: threading.Event | None = None,
    ) -> None:
        gone = gone if gone is not None else threading.Event()
        super().__init__(self._pieces(first, chunks, gone), media_type=MEDIA_TYPES[fmt])

    @staticmethod
    async def _pieces(
        first: bytes, chunks: Generator[bytes, None, None], gone: threading.Event
    ) -> AsyncIterator[bytes]:
        try:
            yield first
            while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
                yield chunk
        finally:
            # Cut short (client gone): a worker thread may still be inside next(chunks),
            # waiting on DuckDB; ``gone`` makes the query watchdog interrupt it, and that
            # thread then closes the generator itself.
            gone.set()
            with contextlib.suppress(ValueError):  # "generator already executing"
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
        admit_upload(self.lake, self.settings, request.headers.get("content-length", ""))
        key = request.headers.get("idempotency-key")  # the lake validates it
        upload = Upload(request, self.settings.max_upload_bytes, self.settings.ingest_idle_seconds)
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
        gone = threading.Event()  # set when the client disconnects: the query is interrupted
        reader = await _unless_gone(request, gone, self.lake.query, sql, None, None, gone.is_set)
        chunks = encode_result(reader, fmt)
        try:  # the first batch is read before the status line: early errors get their code
            first = await _unless_gone(request, gone, next, chunks)
        except BaseException:
            chunks.close()
            raise
        return ResultStream(first, chunks, fmt, gone)

    async def datasets(self, request: Request) -> Response:
        self.authorize(request)
        manifests, total = await run_in_threadpool(self.lake.datasets_page)
        headers = {"X-Flightlake-Total": str(total)}  # a listing cut at max_list says so
        if total > len(manifests):
            headers["X-Flightlake-Truncated"] = "true"
        return JSONResponse([m.to_json() for m in manifests], headers=headers)

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


async def _unless_gone(
    request: Request, gone: threading.Event, func: Callable[..., Any], *args: Any
) -> Any:
    """``func(*args)`` in a worker thread, setting ``gone`` if the client disconnects
    meanwhile (checked every 0.1 s), so a query nobody waits for is interrupted."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(0.1)
        gone.set()

    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            outcome["value"] = await run_in_threadpool(func, *args)
        except Exception as exc:  # re-raised below, outside the group (no ExceptionGroup)
            outcome["error"] = exc
        finally:
            group.cancel_scope.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


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
    routes: list[BaseRoute] = [
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
    # The web console (HTML at /, /sql, /datasets/...) reuses this module's result streaming
    # and error headers, so it is imported here rather than at the top (no import cycle).
    from flightlake.console import console_routes

    routes.extend(console_routes(lake, settings, auth))
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
            ingest = path in INGEST_PATHS and scope.get("method") == "POST"
            query = path in QUERY_PATHS
            observe.record(
                "http",
                method,
                start,
                _code_of(seen["status"]),
                rows_in=int(state.get("rows_in", 0)),
                bytes_in=seen["in"] if ingest else 0,
                bytes_out=seen["out"] if query else 0,
                kind="ingest" if ingest else "query" if query else "",
                status=seen["status"],
                **({"dataset": state["dataset"]} if "dataset" in state else {}),
            )


INGEST_PATHS = ("/v1/ingest", "/upload")  # POSTs here are ingests (the console's is /upload)
QUERY_PATHS = ("/v1/sql", "/sql", "/sql/download")


def _route_of(path: str) -> str:
    """The route a path matched, for metric labels (a dataset name is not a label)."""
    for prefix in ("/v1/datasets/", "/datasets/", "/static/"):
        if path.startswith(prefix):
            return prefix + ("{path}" if prefix == "/static/" else "{name}")
    return path


# status -> outcome code for logs and metrics: the error table read backwards, plus 405, 408
_HTTP_CODES = {status: cls.code for cls, status in _STATUS} | {
    405: InvalidInput.code,
    408: InvalidInput.code,  # an idle upload, cancelled
}


def _code_of(status: int) -> str:
    return "ok" if status < 300 else _HTTP_CODES.get(status, "internal")


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
        reuse_port=settings.workers > 1,
    )
    return server.start()


__all__ = [
    "OPENAPI",
    "UPLOAD_FORMATS",
    "HttpServer",
    "Upload",
    "create_app",
    "ingest_upload",
    "start_http",
    "status_of",
    "upload_format",
]
