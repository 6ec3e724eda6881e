"""Query results as bytes, batch by batch: JSON rows, Arrow IPC stream, CSV or Parquet.

JSON follows what a JSON user expects of SQL values, with Arrow kernels doing the work
(a 500k-row result encodes in about a second, never as one giant string). Rows are compact
objects, one per line (``{"a":1,"b":"x"}``): no space the reader has to skip.

    integers, floats         numbers (a whole float keeps its ".0"); NaN and +/-infinity null
    decimals                 numbers with their exact digits (12.30, not 12.3 or "12.30")
    booleans, null           true / false, null
    dates, times             ISO 8601 strings: "2024-01-31", "13:45:00.000000"
    timestamps               ISO 8601: "2024-01-31T13:45:00.000000"; zoned ones in UTC, "...Z"
    strings                  strings
    lists, structs, maps     arrays, objects, arrays of [key, value] (nested decimals: floats)
    binary                   base64 strings
    intervals, durations     [months, days, nanoseconds]; seconds
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import datetime as dt
import decimal
import json
import math
import os
import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flightlake.errors import InvalidInput

FORMATS = ("json", "arrow", "csv", "parquet")


def _plain(value: Any) -> Any:
    """A nested value made JSON-ready (the slow path for lists, structs, binary, ...)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _dumps(values: list[Any]) -> pa.Array:
    return pa.array(
        [
            json.dumps(_plain(v), ensure_ascii=False, default=str, separators=(",", ":"))
            for v in values
        ],
        pa.string(),
    )


def _quoted(text: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', text, '"', "")


def json_values(col: pa.Array) -> pa.Array:
    """Each value of ``col`` as JSON text ("null" for null), with Arrow kernels where it can.

    Dates, times and timestamps become ISO 8601 strings (zoned timestamps in UTC with "Z");
    decimals become JSON numbers with their exact digits; NaN and infinities become null.
    """
    text, bare = _json_text(col)
    return _quoted(text) if bare else text


def _json_text(col: pa.Array) -> tuple[pa.Array, bool]:
    """``json_values`` of ``col``, or (for strings and dates with no nulls) the text that
    only needs its quotes (``True``): ``json_rows`` writes those with the separators rather
    than copying every value once more to add them."""
    kind = col.type
    if pa.types.is_dictionary(kind):
        col = col.dictionary_decode()
        kind = col.type
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        col, kind = col.cast(pa.string()), pa.string()
    if pa.types.is_string(kind):
        if pc.any(pc.match_substring_regex(col, r'["\\\x00-\x1f]')).as_py():
            return _dumps(col.to_pylist()), False  # needs escaping: let json do it
        text, quote = col, True
    elif pa.types.is_floating(kind):
        text = pc.if_else(pc.is_finite(col), col, None).cast(pa.string())
        # Arrow writes 45.0 as "45": keep it a float for JSON readers that tell them apart
        whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text, quote = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text), False
    elif (
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    ):
        text, quote = col.cast(pa.string()), False
    elif pa.types.is_timestamp(kind):
        if kind.tz:
            col = col.cast(pa.timestamp(kind.unit, "UTC"))
        text = pc.replace_substring(col.cast(pa.string()), " ", "T", max_replacements=1)
        quote = True
    elif pa.types.is_date(kind) or pa.types.is_time(kind):
        text, quote = col.cast(pa.string()), True
    else:
        return _dumps(col.to_pylist()), False
    if quote and text.null_count == 0:
        return text, True
    return pc.fill_null(_quoted(text) if quote else text, "null"), False


def json_rows(batch: pa.RecordBatch) -> bytes:
    """The batch as row objects, each written as ``,\\n{...}`` (the caller fixes the first)."""
    if batch.num_columns == 0:
        return b",\n{}" * int(batch.num_rows)
    parts: list[Any] = []
    close = ""  # a quote the previous value still needs
    for i, (name, col) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
        text, bare = _json_text(col)
        key = json.dumps(name, ensure_ascii=False)
        parts.append(close + (",\n{" if i == 0 else ",") + key + (':"' if bare else ":"))
        parts.append(text)
        close = '"' if bare else ""
    rows = pc.binary_join_element_wise(*parts, close + "}", "")
    offsets = memoryview(rows.buffers()[1]).cast("i")
    start, end = offsets[rows.offset], offsets[rows.offset + len(rows)]
    out: bytes = rows.buffers()[2][start:end].to_pybytes()
    return out


def _json_stream(reader: pa.RecordBatchReader) -> Iterator[bytes]:
    opening = b"["
    for rows in _json_batches(reader):
        yield opening + rows[1:] if opening else rows
        opening = b""
    yield opening + b"]\n" if opening else b"\n]\n"


def _json_batches(reader: pa.RecordBatchReader) -> Iterator[bytes]:
    """``json_rows`` of each non-empty batch, in order, encoded ``AHEAD`` at a time on the
    shared encoding threads (Arrow's kernels release the GIL)."""
    pending: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
    try:
        for batch in reader:
            if batch.num_rows:
                pending.append(_encoders().submit(json_rows, batch))
            while pending and (len(pending) >= AHEAD or pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


_ENCODERS: concurrent.futures.ThreadPoolExecutor | None = None
_ENCODERS_LOCK = threading.Lock()


def _encoders() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that encode JSON batches, one per core, shared by every request."""
    global _ENCODERS
    with _ENCODERS_LOCK:
        if _ENCODERS is None:
            _ENCODERS = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="flightlake-json"
            )
        return _ENCODERS


class _Sink:
    """A write-only file collecting what a pyarrow writer emits; drained after each batch."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0  # bytes written so far: the Parquet writer asks (its footer offsets)

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.position += len(self.parts[-1])
        return len(self.parts[-1])

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _writer_stream(reader: pa.RecordBatchReader, fmt: str) -> Iterator[bytes]:
    sink = _Sink()
    writer: Any
    if fmt == "arrow":
        writer = pa.ipc.new_stream(sink, reader.schema)
    elif fmt == "parquet":  # a row group per batch; the footer comes last
        writer = pq.ParquetWriter(sink, reader.schema, compression="zstd")
    else:
        writer = pacsv.CSVWriter(sink, reader.schema)
    with writer:
        for batch in reader:
            writer.write_batch(batch)
            yield sink.drain()
    yield sink.drain()


def encode_result(reader: pa.RecordBatchReader, fmt: str) -> Generator[bytes, None, None]:
    """``reader`` as json | arrow | csv | parquet bytes, a piece per batch; the first piece
    comes once the first batch is read, so errors before it can still become a proper error
    answer. A thread of its own encodes up to ``AHEAD`` pieces ahead of the consumer (Arrow's
    kernels release the GIL: the next batch is encoded while this one is sent).
    Closing the generator closes the reader (and cancels the query)."""

    def pieces() -> Iterator[bytes]:
        try:
            yield from _json_stream(reader) if fmt == "json" else _writer_stream(reader, fmt)
        except pa.ArrowException as exc:
            raise InvalidInput(f"cannot write this result as {fmt}: {exc}") from exc
        finally:
            reader.close()

    yield from _ahead(pieces())


AHEAD = 2  # pieces encoded before the consumer asks for them


def _ahead(pieces: Iterator[bytes]) -> Generator[bytes, None, None]:
    """``pieces``, produced on a thread of its own at most ``AHEAD`` ahead; an error raised
    there is raised here. Closing this generator stops the thread, which closes ``pieces``
    (only that thread ever touches it)."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for piece in pieces:
                if not offer(("piece", piece)):
                    return
            offer(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer(("error", exc))
        finally:
            if stop.is_set():
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

    thread = threading.Thread(target=produce, name="flightlake-encode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # let a producer blocked on a full queue see it
            while True:
                items.get_nowait()
        thread.join(timeout=30)
