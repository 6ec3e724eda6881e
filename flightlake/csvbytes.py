"""A CSV's raw bytes, without parsing: what one fast pass can tell (flightlake.csvread).

- ByteScan: the encoding (a UTF-16/UTF-32 byte order mark or NUL bytes are refused by name),
  the number of quote characters, and whether any field starts like a zero-padded number or
  a 16-digit integer (then numeric columns' text is checked: csvread._text_check).
- unclosed_quote: the exact quote state at the end of the file, as pyarrow parses.
- Background: runs a scan on a thread of its own while an upload is spooled.
- spool: writes an upload to a local temp file, scanning a CSV's bytes as they come.
- spool_while: the same, while a consumer on another thread already reads the file
  (Growth: readers wait for bytes not yet written), so parsing overlaps the upload.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import mmap
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from flightlake.admission import check_free_disk
from flightlake.errors import InvalidInput

T = TypeVar("T")

SPOOL_CHECK_BYTES = 8 << 20  # free disk space is checked whenever this much more is spooled

BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
# a field that starts like a zero-padded number or an integer of 16+ digits (RE2, bytes)
_SUSPECT = r'[,\r\n"][ \t]*[+-]?(?:0[0-9]|[0-9]{16})'  # ByteScan puts a "\n" before the file
_QUOTED_FIELD = re.compile(rb'"[^"]*(?:""[^"]*)*"')


class ByteScan:
    """Facts about a CSV's raw bytes, gathered chunk by chunk in one pass at memchr/RE2
    speed: the encoding (a UTF-16/UTF-32 byte order mark or NUL bytes make ``error``), the
    number of ``"`` characters, and ``suspect``: a field starts like a zero-padded number
    or a 16-digit integer, so numeric columns' text must be checked."""

    def __init__(self) -> None:
        self.quotes = 0
        self.suspect = False
        self.error: InvalidInput | None = None
        self._head = b""  # the first bytes, until a byte order mark can be told
        self._tail = b"\n"  # the stream's last bytes (a field starts at the stream's start)

    def feed(self, chunk: bytes) -> None:
        if self.error is not None or not chunk:
            return
        if len(self._head) < 4:
            self._head += chunk[: 4 - len(self._head)]
            if len(self._head) == 4:
                self._check_bom()
            if self.error is not None:
                return
        if b"\x00" in chunk:
            self.error = InvalidInput(
                "CSV has NUL bytes: it is not UTF-8 text (UTF-16 or UTF-32 without a byte "
                "order mark?); convert it to UTF-8"
            )
            return
        self.quotes += chunk.count(b'"')
        if not self.suspect:
            self.suspect = matches(self._tail + chunk[:64]) or matches(chunk)
            self._tail = (self._tail + chunk[-64:])[-64:]

    def finish(self) -> None:
        """The stream ended (a file shorter than 4 bytes may still hold a byte order mark)."""
        if self.error is None and len(self._head) < 4:
            self._check_bom()

    def _check_bom(self) -> None:
        for bom, encoding in BOMS:
            if self._head.startswith(bom):
                self.error = InvalidInput(
                    f"CSV is {encoding} text (byte order mark found); convert it to UTF-8"
                )
                return


def matches(data: bytes) -> bool:
    """Does RE2 find _SUSPECT in ``data`` (no copy, GIL released)."""
    buf = pa.py_buffer(data)
    offsets = pa.py_buffer(memoryview(bytes(4) + len(data).to_bytes(4, "little")))
    arr = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, buf])
    return bool(pc.match_substring_regex(arr, _SUSPECT)[0].as_py())


class Background:
    """Calls ``work(item)`` for each item given, in order, on a thread of its own (RE2 and
    file writes release the GIL, so a scan overlaps the upload); at most ``depth`` items
    wait. Leaving the block waits for the work; an exception in it is re-raised there."""

    def __init__(self, work: Callable[[bytes], None] | None, depth: int = 8) -> None:
        self._work = work
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="csv-scan", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and self._work is not None:
                try:
                    self._work(item)
                except BaseException as exc:  # handed to the caller in __exit__
                    self._error = exc

    def __enter__(self) -> Callable[[bytes], None]:
        if self._work is not None:
            self._thread.start()
        return self._queue.put

    def __exit__(self, *exc: object) -> None:
        if self._work is None:
            return
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error


def unclosed_quote(path: Path) -> int | None:
    """The line where a quoted field opens that is never closed, or None: the quote state
    exactly as pyarrow parses (a quote opens a field only at the field's start); pyarrow
    itself takes the rest of the file as that field's value, silently. One Python step per
    quoted field: run when the file's quote count is odd (a field is surely open, or a
    stray quote hides it) or small (EXACT_QUOTES); a file with many quotes, an even count,
    a stray quote AND a field left open at its end is the one case not caught."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = 3 if data[:3] == b"\xef\xbb\xbf" else 0
        pos = start
        while True:
            q = data.find(b'"', pos)
            if q < 0:
                return None
            if q == start or data[q - 1] in b",\r\n":
                match = _QUOTED_FIELD.match(data, q)
                if match is None:
                    step = 8 << 20
                    return 1 + sum(
                        data[i : min(i + step, q)].count(b"\n") for i in range(0, q, step)
                    )
                pos = match.end()
            else:
                pos = q + 1


class SpoolCut(Exception):
    """The upload being spooled failed (cut, cancelled, disk full): readers stop."""


class Growth:
    """How much of a spool file being written is there (spool_while). A reader asks
    ``wait(end)`` before reading up to ``end``: it returns once the file holds ``end`` bytes
    or is complete, and raises SpoolCut once the upload failed."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.written = 0
        self.done = False
        self.failed = False

    def grew(self, n: int) -> None:
        with self._cv:
            self.written += n
            self._cv.notify_all()

    def finish(self) -> None:
        with self._cv:
            self.done = True
            self._cv.notify_all()

    def fail(self) -> None:
        with self._cv:
            self.failed = True
            self._cv.notify_all()

    def wait(self, end: int, stopped: Callable[[], bool] = lambda: False) -> int:
        """Bytes written once the file holds ``end`` bytes or is complete (or the reader
        is ``stopped()``: checked every 0.1 s). Raises SpoolCut when the upload failed."""
        with self._cv:
            while not (self.written >= end or self.done or self.failed or stopped()):
                self._cv.wait(0.1)
            if self.failed:
                raise SpoolCut("the upload ended before its end")
            return self.written


# spooled files and what their bytes showed while spooling (spool() adds, removes), and
# how far those still being written have got (spool_while)
_SPOOLED: dict[str, ByteScan] = {}
_GROWING: dict[str, Growth] = {}
_SPOOLED_LOCK = threading.Lock()


def spooled_scan(path: Path) -> ByteScan | None:
    """The scan spool() made of the file at ``path`` while writing it, if it did (while
    the file is still written, by spool_while, the scan is complete once the file is)."""
    with _SPOOLED_LOCK:
        return _SPOOLED.get(str(path))


def spooled_growth(path: Path) -> Growth | None:
    """The Growth of a file spool_while is still writing (None: the file is complete)."""
    with _SPOOLED_LOCK:
        return _GROWING.get(str(path))


def _write_spool(
    fh: io.BufferedWriter,
    path: Path,
    chunks: Iterable[bytes | memoryview],
    scan: ByteScan | None,
    min_free_bytes: int,
    growth: Growth | None = None,
) -> int:
    """Write ``chunks`` to ``fh`` (checking free disk, feeding ``scan``); return the size."""
    size = 0
    unchecked = SPOOL_CHECK_BYTES  # check before the first write, then every few MiB
    with Background(scan.feed if scan else None) as feed:
        for chunk in chunks:
            n = len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            unchecked += n
            if min_free_bytes and unchecked >= SPOOL_CHECK_BYTES:
                check_free_disk(
                    str(path.parent),
                    min_free_bytes + unchecked,
                    "ingest spool disk",
                    "min_free_spool_bytes",
                    floor=min_free_bytes,
                )
                unchecked = 0
            fh.write(chunk)
            size += n
            if scan is not None:
                feed(bytes(chunk))
            if growth is not None:
                fh.flush()  # readers of the file see the bytes now
                growth.grew(n)
    if scan is not None:
        scan.finish()
    return size


@contextlib.contextmanager
def spool(
    chunks: Iterable[bytes | memoryview],
    spool_dir: str = "",
    min_free_bytes: int = 0,
    suffix: str = ".csv",
) -> Iterator[tuple[Path, int]]:
    """Write a byte stream to a local temp file; yield (path, size); delete it afterwards.

    Raises ResourceExhausted (naming the spool disk, not its path) before a write would
    leave less than ``min_free_bytes`` free on the spool's volume (0: no check); the partial
    spool file is deleted. A ``.csv`` spool's bytes are scanned (ByteScan) as they are
    written, and ingest_csv of this path uses that scan instead of scanning while it parses.
    """
    fd, name = tempfile.mkstemp(prefix="flightlake-", suffix=suffix, dir=spool_dir or None)
    path = Path(name)
    scan = ByteScan() if suffix == ".csv" else None  # while the upload comes in
    try:
        with os.fdopen(fd, "wb") as fh:
            size = _write_spool(fh, path, chunks, scan, min_free_bytes)
        if scan is not None:
            with _SPOOLED_LOCK:
                _SPOOLED[name] = scan
        yield path, size
    finally:
        with _SPOOLED_LOCK:
            _SPOOLED.pop(name, None)
        path.unlink(missing_ok=True)


class _Refused(Exception):
    """spool_while: the consumer failed before the upload ended; stop reading it."""


def spool_while(
    chunks: Iterable[bytes | memoryview],
    consume: Callable[[Path], T],
    spool_dir: str = "",
    min_free_bytes: int = 0,
) -> T:
    """Spool a CSV upload as ``spool`` does while ``consume(path)`` already reads the file on
    a thread of its own (with this thread's context variables); return what it returns.

    The consumer's reads of bytes not yet written wait for them (``spooled_growth``), so
    parsing, encoding and uploading overlap the network receive; everything that needs the
    whole file (the ByteScan facts) is complete when the consumer reads the end. Errors, in
    order: the upload's own (the consumer then gets SpoolCut and aborts), the bytes' encoding
    (ByteScan), the consumer's. A consumer that fails before the upload ends (a header that
    is not the dataset's, a malformed row) stops it: the rest is not read, and the error is
    raised then, after the encoding errors of the bytes read so far. The spool file is
    deleted afterwards."""
    fd, name = tempfile.mkstemp(prefix="flightlake-", suffix=".csv", dir=spool_dir or None)
    path = Path(name)
    scan, growth = ByteScan(), Growth()
    with _SPOOLED_LOCK:
        _SPOOLED[name] = scan
        _GROWING[name] = growth
    outcome: list[T] = []
    failure: list[BaseException] = []
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.append(context.run(consume, path))
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    def until_refused() -> Iterator[bytes | memoryview]:
        for chunk in chunks:
            if failure:  # the consumer refused the file (a header that is not the dataset's,
                raise _Refused  # bad CSV): the rest of the upload is not read
            yield chunk

    worker = threading.Thread(target=run, name="csv-ingest", daemon=True)
    try:
        worker.start()
        try:
            with os.fdopen(fd, "wb") as fh:
                _write_spool(fh, path, until_refused(), scan, min_free_bytes, growth)
        except _Refused:
            growth.fail()  # a read-ahead still waiting on the file (pyarrow's) ends now
            worker.join()
            raise scan.error or failure[0] from None  # the scan's word on the bytes it saw first
        except BaseException:
            growth.fail()
            worker.join()
            raise
        growth.finish()
        worker.join()
        if scan.error is not None:
            raise scan.error
        if failure:
            raise failure[0]
        return outcome[0]
    finally:
        with _SPOOLED_LOCK:
            _SPOOLED.pop(name, None)
            _GROWING.pop(name, None)
        path.unlink(missing_ok=True)
