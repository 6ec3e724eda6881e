"""The console's handlers: each decodes the request, calls the Lake, renders a template.

Every response carries the console's security headers (a Content-Security-Policy that allows
only the console's own scripts and styles, no inline script). Errors are shown as a page (or
the fragment htmx asked for) with the status the /v1 API would answer, never a traceback.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flightlake.auth import Authenticator
from flightlake.catalog import validate_name
from flightlake.config import Settings
from flightlake.console.results import DISPLAY_ROWS, Chart, run_query
from flightlake.console.session import CSRF_FIELD, Gate, Visitor, anonymous_csrf
from flightlake.encode import encode_result
from flightlake.errors import FlightlakeError, InvalidInput, NotFound
from flightlake.http import ResultStream, error_headers, lingering, status_of
from flightlake.http_upload import Upload, admit_upload, ingest_upload, upload_format
from flightlake.lake import MODES, IngestResult, Lake, check_mode

log = logging.getLogger("flightlake.console")

HERE = Path(__file__).parent
DATASET_ROWS = 100  # rows a dataset page shows
VERSIONS_SHOWN = 100  # versions a dataset page lists, newest first
FORM_CAP = 64 << 10  # bytes a sign-in form may have
DOWNLOADS = {"csv": "csv", "arrow": "arrows", "parquet": "parquet"}  # format -> file suffix
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}

Handler = Callable[[Request], Awaitable[Response]]


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its suffix (the chart is SVG)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["thousands"] = lambda n: f"{int(n):,}"
    env.filters["size"] = human_size
    env.filters["quote"] = lambda text: urllib.parse.quote(str(text), safe="")
    return Jinja2Templates(env=env)


def human_size(n: int) -> str:
    """Bytes as "812 B", "3.4 KiB", "1.2 GiB" (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


class Console:
    """The console's pages over one Lake."""

    def __init__(self, lake: Lake, settings: Settings, auth: Authenticator) -> None:
        self.lake = lake
        self.settings = settings
        self.gate = Gate(auth, settings.session_ttl_seconds)
        self.templates = _templates()

    # -- plumbing ----------------------------------------------------------------------------
    def render(
        self,
        request: Request,
        name: str,
        visitor: Visitor,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        context |= {
            "visitor": visitor,
            "auth": self.gate.enabled,
            "csrf_field": CSRF_FIELD,
            "upload_cap": self.settings.max_upload_bytes,
        }
        response = self.templates.TemplateResponse(
            request, name, context, status_code=status, headers=headers
        )
        response.headers["cache-control"] = "no-store"
        self.gate.set_csrf(request, response, visitor)
        return response

    def page(self, handler: Callable[[Request, Visitor], Awaitable[Response]]) -> Handler:
        """``handler`` behind sign-in, with errors rendered as an error page."""

        async def run(request: Request) -> Response:
            visitor = self.gate.visitor(request)
            if visitor is None:
                return self._to_login(request)
            try:
                response = await handler(request, visitor)
            except FlightlakeError as exc:
                response = await self.error(request, visitor, exc)
            return response

        return run

    async def error(self, request: Request, visitor: Visitor, exc: FlightlakeError) -> Response:
        status = status_of(exc)
        headers = await error_headers(request, exc)
        headers.pop("WWW-Authenticate", None)
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d: %s", request.method, request.url.path, status, exc)
        page = self.render(
            request, "error.html", visitor, status, headers, message=str(exc), code=status
        )
        return lingering(request, page)

    def _to_login(self, request: Request) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = "/login" + (f"?next={urllib.parse.quote(here, safe='')}" if here != "/" else "")
        if request.headers.get("hx-request") == "true":  # htmx: have the whole page go there
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method != "GET":
            return Response("sign in first", 401, media_type="text/plain")
        return RedirectResponse(target, status_code=303)

    # -- sign-in -----------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        visitor = self.gate.visitor(request)
        if not self.gate.enabled or visitor is not None:
            return RedirectResponse("/", status_code=303)
        return self.render(
            request, "login.html", anonymous_csrf(request), next=_next(request), message=""
        )

    async def login(self, request: Request) -> Response:
        anonymous = anonymous_csrf(request)
        if not self.gate.enabled:
            return RedirectResponse("/", status_code=303)
        try:
            form = await _small_form(request)
            self.gate.check_csrf(request, form.get(CSRF_FIELD, ""))
            token = await run_in_threadpool(
                self.gate.sign_in,
                form.get("token", ""),
                form.get("username", ""),
                form.get("password", ""),
            )
        except FlightlakeError as exc:
            status = status_of(exc)
            log.info("console sign-in refused -> %d: %s", status, exc)
            return self.render(
                request,
                "login.html",
                anonymous,
                status,
                next=_next(request),
                message=str(exc),
            )
        response = RedirectResponse(_next(request), status_code=303)
        self.gate.set_session(request, response, token)
        return response

    async def logout(self, request: Request, visitor: Visitor) -> Response:
        form = await _small_form(request)
        self.gate.check_csrf(request, form.get(CSRF_FIELD, ""))
        response = RedirectResponse("/login" if self.gate.enabled else "/", status_code=303)
        self.gate.sign_out(request, response)
        return response

    # -- pages -------------------------------------------------------------------------------
    async def home(self, request: Request, visitor: Visitor) -> Response:
        datasets = await run_in_threadpool(self.lake.datasets)
        return self.render(
            request,
            "home.html",
            visitor,
            datasets=datasets,
            capped=len(datasets) >= self.settings.max_list,
            cap=self.settings.max_list,
        )

    async def dataset(self, request: Request, visitor: Visitor) -> Response:
        name = request.path_params["name"]
        try:
            validate_name(name)
        except InvalidInput as exc:
            raise NotFound(f"dataset {name!r} not found") from exc
        manifest = await run_in_threadpool(self.lake.dataset, name)
        schema = await run_in_threadpool(self.lake.read_schema, manifest)
        versions = await run_in_threadpool(self._versions, manifest)
        sample = await run_in_threadpool(
            run_query, self.lake, f'SELECT * FROM "{name}" LIMIT {DATASET_ROWS}', DATASET_ROWS
        )
        return self.render(
            request,
            "dataset.html",
            visitor,
            manifest=manifest,
            schema=[(f.name, str(f.type)) for f in schema],
            versions=versions,
            sample=sample,
        )

    def _versions(self, manifest: Any) -> list[dict[str, Any]]:
        """The dataset's versions, newest first (at most VERSIONS_SHOWN): version, time,
        operation, rows (the total after it) and rows added, "" where unknown.

        Uses ``Lake.versions(name)`` where the lake has it (the Delta table history, from
        0.2); otherwise only the current version is known, from the manifest.
        """
        history = getattr(self.lake, "versions", None)
        if history is None:
            entries: list[Any] = [
                {
                    "version": manifest.version,
                    "timestamp": manifest.updated_at,
                    "rows_total": manifest.row_count,
                }
            ]
        else:
            entries = list(history(manifest.name))[:VERSIONS_SHOWN]
        return [_version_entry(entry) for entry in entries]

    async def sql(self, request: Request, visitor: Visitor) -> Response:
        sql = request.query_params.get("sql", "")
        result, message, status = None, "", 200
        if sql.strip():
            try:
                result = await run_in_threadpool(run_query, self.lake, sql, DISPLAY_ROWS)
            except FlightlakeError as exc:
                status, message = status_of(exc), str(exc)
                log.info("console query -> %d: %s", status, exc)
        return self.render(
            request,
            "sql.html",
            visitor,
            status,
            sql=sql,
            result=result,
            message=message,
            chart_box=(Chart.WIDTH, Chart.HEIGHT),
            downloads=list(DOWNLOADS),
        )

    async def download(self, request: Request, visitor: Visitor) -> Response:
        sql = request.query_params.get("sql", "")
        fmt = request.query_params.get("format", "csv")
        if fmt not in DOWNLOADS:
            raise InvalidInput(f"unknown format {fmt!r}: use one of {', '.join(DOWNLOADS)}")
        if not sql.strip():
            raise InvalidInput("query parameter 'sql' is required")
        reader = await run_in_threadpool(self.lake.query, sql)
        chunks = encode_result(reader, fmt)
        try:  # the first piece is read before the status line: early errors get their page
            first = await run_in_threadpool(next, chunks)
        except BaseException:
            chunks.close()
            raise
        response = ResultStream(first, chunks, fmt)
        filename = f"flightlake-result-{time.strftime('%Y%m%d-%H%M%S')}.{DOWNLOADS[fmt]}"
        response.headers["content-disposition"] = f'attachment; filename="{filename}"'
        return response

    async def upload_form(self, request: Request, visitor: Visitor) -> Response:
        self.gate.require_write(visitor)
        return self.render(request, "upload.html", visitor, modes=MODES, outcome=None)

    async def upload(self, request: Request, visitor: Visitor) -> Response:
        """The /v1/ingest path for a browser form: same caps, same 413/503 rules."""
        request.state.upload = True
        self.gate.require_write(visitor)
        try:
            result = await self._ingest(request)
        except FlightlakeError as exc:
            status = status_of(exc)
            headers = await error_headers(request, exc)
            log.info("console upload -> %d: %s", status, exc)
            page = self.render(
                request, "upload.html", visitor, status, headers, modes=MODES, outcome=str(exc)
            )
            return lingering(request, page)
        return self.render(request, "upload.html", visitor, modes=MODES, outcome=result)

    async def _ingest(self, request: Request) -> IngestResult:
        admit_upload(self.lake, self.settings, request.headers.get("content-length", ""))
        upload = Upload(request, self.settings.max_upload_bytes)
        await upload.start()
        self.gate.check_csrf(request, upload.fields.get(CSRF_FIELD, ""))
        if "name" not in upload.fields:
            raise InvalidInput("the form must send the field 'name' before the field 'file'")
        name = validate_name(upload.fields["name"].strip())
        request.state.dataset = name
        mode = check_mode(upload.fields.get("mode") or None)
        if upload.content_type and not upload.filename:
            raise InvalidInput("choose a file to upload")
        fmt = upload_format(upload.fields.get("format") or None, upload.filename, "")
        result = await run_in_threadpool(
            ingest_upload, self.lake, name, mode, fmt, upload.chunks(), self.settings.spool_dir
        )
        request.state.rows_in = result.rows_written
        return result


def _version_entry(entry: Any) -> dict[str, Any]:
    """One history entry (a mapping, or an object with attributes) as the template's row."""

    def pick(*keys: str) -> Any:
        for key in keys:
            value = entry.get(key) if isinstance(entry, dict) else getattr(entry, key, None)
            if value is not None:
                return value
        return ""

    return {
        "version": pick("version"),
        "time": pick("timestamp", "time", "updated_at"),
        "operation": pick("operation"),
        "rows": pick("rows_total", "rows", "row_count"),
        "added": pick("rows_added"),
    }


def _next(request: Request) -> str:
    """Where to go after sign-in: a path of this site only (no open redirect)."""
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _small_form(request: Request) -> dict[str, str]:
    """An urlencoded form body of at most FORM_CAP bytes, first value per field."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_CAP:
            raise InvalidInput(f"the form exceeds {FORM_CAP} bytes")
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


class SecurityHeaders:
    """ASGI wrapper adding the console's security headers to every response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in names
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def console_routes(lake: Lake, settings: Settings, auth: Authenticator) -> list[BaseRoute]:
    """The console's routes, to add to the HTTP app (they sit beside /v1, never under it)."""
    console = Console(lake, settings, auth)
    page = console.page

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, SecurityHeaders(_asgi(handler)), methods=[method])

    return [
        route("/", page(console.home), "GET"),
        route("/datasets/{name}", page(console.dataset), "GET"),
        route("/sql", page(console.sql), "GET"),
        route("/sql/download", page(console.download), "GET"),
        route("/upload", page(console.upload_form), "GET"),
        route("/upload", page(console.upload), "POST"),
        route("/login", console.login_form, "GET"),
        route("/login", console.login, "POST"),
        route("/logout", page(console.logout), "POST"),
        Mount("/static", SecurityHeaders(StaticFiles(directory=HERE / "static"))),
    ]


def _asgi(handler: Handler) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
