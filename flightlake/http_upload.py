"""Uploads over HTTP: the request body streamed as the uploaded file, and its ingest.

Shared by the front ends that take files over HTTP (the /v1 shim and the web console), so
both apply the same caps and the same 413/503 rules. ``admit_upload`` refuses a request
before any body is read; ``Upload`` then streams the body (multipart field ``file`` or a
raw body) without holding it; ``ingest_upload`` runs in a worker thread and hands the
pieces to ``Lake.ingest_*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.from_thread
import pyarrow as pa
import pyarrow.parquet as pq
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from flightlake.config import Settings
from flightlake.errors import InvalidInput, TooLarge, Unavailable
from flightlake.ingest import spool
from flightlake.lake import IngestResult, Lake

UPLOAD_PIECE = 1 << 20  # upload bytes handed to the ingest thread at a time
FIELDS_CAP = 64 << 10  # bytes of text fields (not the file) a multipart upload may carry
ARROW_STREAM = "application/vnd.apache.arrow.stream"
UPLOAD_FORMATS = ("csv", "parquet", "arrow")
_FORMAT_HINTS = {  # file-name suffix or content type -> upload format
    **dict.fromkeys((".csv", ".txt", "text/csv"), "csv"),
    **dict.fromkeys((".parquet", ".pq", "application/vnd.apache.parquet"), "parquet"),
    **dict.fromkeys(("application/x-parquet",), "parquet"),
    **dict.fromkeys((".arrow", ".arrows", ".ipc", ".feather", ARROW_STREAM), "arrow"),
    **dict.fromkeys(("application/vnd.apache.arrow.file",), "arrow"),
}


def admit_upload(lake: Lake, settings: Settings, declared: str) -> None:
    """Refuse an upload before reading it: TooLarge (413) when its declared Content-Length
    (``declared``, "" when absent) exceeds FLIGHTLAKE_MAX_UPLOAD_BYTES, Unavailable (503)
    when every ingest slot (FLIGHTLAKE_MAX_CONCURRENT_INGESTS) is busy."""
    cap = settings.max_upload_bytes
    if declared.isdigit() and int(declared) > cap:
        raise TooLarge(
            f"upload of {declared} bytes exceeds the {cap}-byte cap (FLIGHTLAKE_MAX_UPLOAD_BYTES)"
        )
    if lake.active_ingests >= max(1, settings.max_concurrent_ingests):
        raise Unavailable(
            f"all {settings.max_concurrent_ingests} ingest slots are busy; retry shortly"
        )


class Upload:
    """The request body as a stream of the uploaded file's bytes, never held whole.

    A multipart body yields its field ``file`` (python-multipart's streaming parser, no form
    buffering); any other body is the file itself. Small text fields sent before ``file``
    (a browser form's ``name``, ``mode``, ``csrf``) are kept in ``fields`` once ``start``
    returns: at most FIELDS_CAP bytes in all, else InvalidInput. More than ``cap`` body bytes raise
    TooLarge; a body that ends before the file part is complete raises InvalidInput; a
    client that sends nothing for ``idle_seconds`` (> 0, ``ingest_idle_seconds``) gets 408
    with the connection closed.
    """

    def __init__(self, request: Request, cap: int, idle_seconds: float = 0.0) -> None:
        self._body = request.stream()
        self._state = request.state  # body_requested: the body was asked for (see _pull)
        self._cap = cap
        self._idle = idle_seconds
        self._received = 0
        self._ended = False
        self._pieces: list[bytes] = []  # file bytes parsed, not yet handed on
        self._size = 0
        ctype, params = parse_options_header(request.headers.get("content-type"))
        self._parser: MultipartParser | None = None
        self.filename = ""
        self.fields: dict[str, str] = {}  # multipart text fields seen before the file
        self._field_bytes = 0
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
        self._part = {"headers": {}, "field": b"", "value": b"", "is_file": False, "text": None}

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
            if self._stage == "before" and b"filename" not in options:
                self._part["text"] = (options.get(b"name", b"").decode("utf-8", "replace"), [])
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
        elif self._part.get("text") is not None:
            self._field_bytes += end - start
            if self._field_bytes > FIELDS_CAP:
                raise InvalidInput(f"the form's text fields exceed {FIELDS_CAP} bytes")
            self._part["text"][1].append(data[start:end])

    def _part_end(self) -> None:
        if self._part.get("is_file"):
            self._stage, self._part["is_file"] = "after", False
        elif self._part.get("text") is not None:
            name, pieces = self._part["text"]
            self.fields.setdefault(name, b"".join(pieces).decode("utf-8", "replace"))

    async def _pull(self) -> None:
        """Read one body chunk and feed it on; at the end check the file arrived whole."""
        # Reading tells a client waiting on Expect: 100-continue to send (http.lingering).
        self._state.body_requested = True
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
    Parquet and Arrow IPC need random access, so they are spooled here first. With an
    ``idempotency_key`` already committed for the dataset, the answer is that replay."""
    if fmt == "csv":
        return lake.ingest_csv(name, chunks, mode, idempotency_key=idempotency_key)
    floor = lake.settings.min_free_spool_bytes  # the spool disk is guarded like CSV's
    with spool(chunks, spool_dir, floor, suffix=f".{fmt}") as (path, _size):
        schema, batches = _open_arrow(path, fmt)
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
