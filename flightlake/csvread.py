"""CSV bytes → typed record batches, with the file's values exactly (DESIGN.md "Fidelity").

The rules, and how they are kept:

- Nulls: only an empty unquoted field is NULL; ``NA``, ``N/A``, ``null``, ``None``, ``nan``,
  ``#N/A`` and every other text are data, and a quoted empty field is the empty string
  (``ConvertOptions(null_values=[""], quoted_strings_can_be_null=False)``).
- Booleans are the words ``true``/``false`` (any of True, TRUE, ...); ``1`` and ``0`` are numbers.
- ``NaN``, ``inf``, ``-inf`` (and the spellings pyarrow's float parser accepts: ``nan``,
  ``Infinity``, ``-Inf``...) in a float column are those floats.
- Types equal what inspecting the whole file gives: each column gets the first type of
  ``ORDER`` that accepts every one of its values (pyarrow's own inference order), so a
  1 MiB sample only guides the first attempt. A later value that contradicts a column's type
  makes the column wider and the file is read again (see ``_wider``), so the result does not
  depend on where a value sits.
- Integers keep every digit: a column whose integers do not all fit int64 is
  ``decimal128(38, 0)``; with more than 38 digits, or mixed with fractions, it is a string.
  A float column holding an integer a double cannot represent exactly is a string.
  Numbers with leading zeros (``007``, ``-01.5``) make their column a string, so they stay.
  A column with no value at all is a string.
- The file is read by ONE pyarrow reader from start to end, so quotes mean exactly what
  pyarrow makes of them (a ``"`` inside an unquoted field is data). pyarrow's reader reads
  ahead without a byte bound, so ``_Source`` holds its reads back until the consumer has
  taken the batches (memory stays bounded), and never ends a read block with a CR: pyarrow
  drops the LF of a quoted CR LF whose CR ends a block (apache/arrow#51368).
- Another encoding is refused naming it: a UTF-16 / UTF-32 byte order mark, or NUL bytes.
  That and the other raw-byte facts (flightlake.csvbytes) are gathered while the upload is
  spooled, so reading the spool only parses.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from flightlake.catalog import NewObjects
from flightlake.csvbytes import ByteScan, spooled_growth, spooled_scan, unclosed_quote
from flightlake.errors import Conflict, InvalidInput
from flightlake.fidelity import conform, normalize_schema

log = logging.getLogger("flightlake.ingest")

SAMPLE_BYTES = 1 << 20  # the first block: the types of the first attempt
BLOCK_BYTES = 1 << 20  # CSV read block
MAX_BLOCK_BYTES = 256 << 20  # a record must fit in a block: blocks grow up to this for huge rows
READ_AHEAD_BYTES = 16 << 20  # how far pyarrow may read ahead of the batches taken (>= 2 blocks)
READ_AHEAD_WAIT_S = 1.0  # a held-back read proceeds after this long (no deadlock, ever)
EXACT_QUOTES = 100_000  # files with at most this many quotes get the exact EOF quote check

NULL_VALUES = [""]
TRUE_VALUES = ["true", "True", "TRUE"]
FALSE_VALUES = ["false", "False", "FALSE"]
BIG_INTEGER = pa.decimal128(38, 0)
# pyarrow's inference order (arrow/csv/inference_internal.h), with zoned timestamps after
# naive ones: a column is the first of these that accepts all its values.
ORDER: tuple[pa.DataType, ...] = (
    pa.null(),
    pa.int64(),
    pa.bool_(),
    pa.float64(),
    pa.date32(),
    pa.time32("s"),
    pa.timestamp("s"),
    pa.timestamp("ns"),
    pa.timestamp("s", tz="UTC"),
    pa.timestamp("ns", tz="UTC"),
    pa.string(),
)
_LEADING_ZERO = r"^[ \t]*[+-]?0[0-9]"
_LONG_INTEGER = r"^[ \t]*[+-]?[0-9]{16,}[ \t]*$"
_INTEGER = r"^[ \t]*[+-]?[0-9]{1,38}[ \t]*$"
_CONVERSION_RE = re.compile(
    r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to ([^:]+): "
    r"(?:invalid value|[^']*) '(.*)'",
    re.S,
)
_DECIMAL_RE = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?.*(?:Decimal|decimal)", re.S)


class Sink(Protocol):
    """Where batches go: ingest.ParquetSink."""

    def write(self, batch: pa.RecordBatch) -> None: ...
    def close(self) -> NewObjects: ...
    def abort(self) -> None: ...


def convert_options(
    types: dict[str, pa.DataType] | None = None, columns: list[str] | None = None
) -> pacsv.ConvertOptions:
    """The fidelity rules as pyarrow options (only an empty unquoted field is NULL)."""
    return pacsv.ConvertOptions(
        column_types=types or {},
        include_columns=columns or [],
        null_values=NULL_VALUES,
        true_values=TRUE_VALUES,
        false_values=FALSE_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )


class _RowError:
    """Remembers the first malformed row pyarrow reports, to put its line in the message."""

    def __init__(self) -> None:
        self.message = ""

    def __call__(self, row: pacsv.InvalidRow) -> str:
        if not self.message:
            where = f"line {row.number}" if row.number is not None else "a row"
            self.message = (
                f"{where} has {row.actual_columns} fields, the header has "
                f"{row.expected_columns}: {row.text[:120]!r}"
            )
        return "error"


def _parse_options(handler: _RowError) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler)


class _Source(io.RawIOBase):
    """The spooled file as pyarrow reads it, one read per block.

    - Reads wait (up to READ_AHEAD_WAIT_S) while pyarrow is more than READ_AHEAD_BYTES
      ahead of the batches taken (``taken()``): pyarrow's own read-ahead has no byte bound.
    - A read never ends with a CR while bytes follow (apache/arrow#51368).
    - With ``scan``, its bytes go through a ByteScan (``bytes``): another encoding is
      refused as soon as it is seen.
    - A file still being spooled (csvbytes.spool_while) is read as if complete: a read
      waits until the bytes it asks for (and one more, for the CR rule) are written or the
      file is complete; it raises SpoolCut when the upload failed.
    """

    def __init__(self, path: Path, block: int, scan: bool = True) -> None:
        super().__init__()
        self._fh = path.open("rb")
        self._growth = spooled_growth(path)
        self._block = block
        self._ahead = max(READ_AHEAD_BYTES, 2 * block)
        self._scan = scan
        self._cv = threading.Condition()
        self._taken = 0
        self.pos = 0
        self.bytes = ByteScan()
        self._stopped = False
        self.held = 0  # reads held back
        self.timeouts = 0  # ...that went ahead after READ_AHEAD_WAIT_S

    def readable(self) -> bool:
        return True

    def taken(self) -> None:
        """The consumer took one batch (about one block of the file)."""
        with self._cv:
            self._taken += 1
            self._cv.notify_all()

    def stop(self) -> None:
        """The consumer is done: pending and later reads end at once (EOF)."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def readinto(self, buffer: Any) -> int:
        with self._cv:
            if not self._stopped and self.pos >= self._taken * self._block + self._ahead:
                self.held += 1
                if not self._cv.wait(READ_AHEAD_WAIT_S):
                    self.timeouts += 1  # the consumer is slow (or stuck): read one more block
            if self._stopped:
                return 0
        view = memoryview(buffer)
        if self._growth is not None:
            self._growth.wait(self.pos + len(view) + 1, lambda: self._stopped)
            if self._stopped:
                return 0
        n = self._fh.readinto(view)
        if n > 1 and view[n - 1] == 0x0D and self._fh.read(1):  # a CR with bytes after it
            self._fh.seek(-2, os.SEEK_CUR)  # give back the CR: the next block starts with it
            n -= 1
        chunk = view[:n]
        if self._scan:
            if n:
                self.bytes.feed(bytes(chunk))
            else:
                self.bytes.finish()
            if self.bytes.error is not None:
                raise self.bytes.error
        self.pos += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def infer_csv_schema(path: Path, size: int) -> pa.Schema:
    """The types of a first attempt, from the header and a sample (the first block).

    Columns may come back as ``null`` (no value in the sample): reading widens them.
    Raises InvalidInput for an empty file, another encoding, bad column names or a sample
    that is not CSV."""
    if size == 0:
        raise InvalidInput("CSV is empty: no header line")
    handler = _RowError()
    block = SAMPLE_BYTES
    while True:
        read = pacsv.ReadOptions(block_size=block, use_threads=False)
        source = _Source(path, block)
        try:
            with pacsv.open_csv(
                source,
                read_options=read,
                parse_options=_parse_options(handler),
                convert_options=convert_options(),
            ) as reader:
                inferred = reader.schema
                source.stop()
            break
        except (pa.ArrowInvalid, pa.ArrowTypeError, InvalidInput) as exc:
            if source.bytes.error is not None:
                raise source.bytes.error from None
            if not _too_big_for_block(exc) or block >= MAX_BLOCK_BYTES:
                raise _csv_error(exc, handler) from exc
            block *= 8
        finally:
            source.close()
    check_columns(inferred.names)
    for f in inferred:
        if pa.types.is_binary(f.type):
            raise InvalidInput(
                f"CSV is not valid UTF-8 text: column {f.name!r} has bytes that are not UTF-8"
            )
    schema = pa.schema([pa.field(f.name, f.type) for f in inferred])
    for name, kind in _text_check(path, schema, block, sample_only=True).items():
        log.info("CSV column %r: leading zeros or long integers; reading it as %s", name, kind)
        schema = _set(schema, name, kind)
    return schema


def check_columns(names: list[str]) -> None:
    """Reject empty and duplicate column names with a message naming them."""
    for i, name in enumerate(names, 1):
        if not name.strip():
            raise InvalidInput(f"column {i} has an empty name")
    seen: set[str] = set()
    dups = [n for n in names if n.lower() in seen or seen.add(n.lower())]  # type: ignore[func-returns-value]
    if dups:
        raise InvalidInput("duplicate column names: " + ", ".join(sorted(set(dups))))


def _too_big_for_block(exc: Exception) -> bool:
    return "straddling object straddles two block boundaries" in str(exc)


def _csv_error(exc: Exception, handler: _RowError) -> InvalidInput:
    text = str(exc)
    if handler.message:
        return InvalidInput(f"malformed CSV: {handler.message}")
    if "Empty CSV file" in text:
        return InvalidInput("CSV is empty: no header line")
    if "UTF8" in text or "utf8" in text.lower():
        return InvalidInput(f"CSV is not valid UTF-8 text: {text}")
    return InvalidInput(f"malformed CSV: {text}")


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _text_check(
    path: Path, schema: pa.Schema, block: int, sample_only: bool = False
) -> dict[str, pa.DataType]:
    """Numeric columns whose type would change their text, and the type that keeps it:
    string for a zero-padded value (``007``, ``-01.5``); for a float column: decimal128(38, 0)
    when every value is an integer of at most 38 digits and some are beyond int64 (pyarrow
    infers double for those), else string when an integer is beyond int64 or a double does
    not hold it exactly. Reads only those columns, as text (the whole file, or its first
    block)."""
    columns = [f.name for f in schema if _numeric(f.type)]
    if not columns:
        return {}
    padded: set[str] = set()
    inexact: set[str] = set()  # an integer a double does not hold exactly
    beyond: set[str] = set()  # an integer beyond int64
    integral = {c: pa.types.is_floating(schema.field(c).type) for c in columns}
    for batch in _batches(
        path,
        pa.schema([pa.field(c, pa.string()) for c in columns]),
        block,
        scan=False,
        include=columns,
        first_only=sample_only,
    ):
        for name in columns:
            if name in padded:
                continue
            values = batch.column(name)
            if pc.any(pc.match_substring_regex(values, _LEADING_ZERO)).as_py():
                padded.add(name)
            elif pa.types.is_floating(schema.field(name).type):
                if integral[name]:
                    every = pc.all(pc.match_substring_regex(values, _INTEGER)).as_py()
                    integral[name] = every in (True, None)
                for number in _long_integers(values):
                    if int(float(number)) != number:
                        inexact.add(name)
                    if not -(2**63) <= number < 2**63:
                        beyond.add(name)
    retype: dict[str, pa.DataType] = dict.fromkeys(padded, pa.string())
    for name in (inexact | beyond) - padded:
        retype[name] = BIG_INTEGER if integral[name] and name in beyond else pa.string()
    return retype


def _long_integers(values: pa.Array) -> list[int]:
    """The integers of 16 digits or more among ``values`` (text)."""
    longs = values.filter(pc.fill_null(pc.match_substring_regex(values, _LONG_INTEGER), False))
    return [int(v) for v in longs.to_pylist()]


def _batches(
    path: Path,
    schema: pa.Schema,
    block: int,
    scan: bool = True,
    include: list[str] | None = None,
    first_only: bool = False,
    source_out: list[_Source] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Read the file with ``schema`` (by column name) in one pyarrow reader.

    Raises _Widen (a value contradicts a type), _BiggerBlocks (a record does not fit a
    block), Conflict (the header is not the dataset's) or InvalidInput (bad CSV)."""
    handler = _RowError()
    source = _Source(path, block, scan=scan)
    if source_out is not None:
        source_out.append(source)
    read = pacsv.ReadOptions(block_size=block, use_threads=not first_only)
    convert = convert_options({f.name: f.type for f in schema}, include)
    try:
        with pacsv.open_csv(
            source,
            read_options=read,
            parse_options=_parse_options(handler),
            convert_options=convert,
        ) as reader:
            if include is None and reader.schema.names != schema.names:
                from flightlake.catalog import schema_difference

                raise Conflict(
                    "CSV header does not match the dataset: "
                    f"{schema_difference(schema, reader.schema)}"
                )
            try:
                for batch in reader:
                    yield batch
                    if first_only:
                        return
                    source.taken()
            finally:
                source.stop()  # before the reader closes: it may wait for a held-back read
    except (pa.ArrowInvalid, pa.ArrowTypeError, InvalidInput) as exc:
        if source.bytes.error is not None:
            raise source.bytes.error from None
        if isinstance(exc, InvalidInput):
            raise
        if _too_big_for_block(exc):
            raise _BiggerBlocks() from exc
        widen = _conversion_failure(exc, schema)  # CSV column numbers count the file's columns
        if widen is not None:
            raise widen from exc
        raise _csv_error(exc, handler) from exc
    finally:
        source.close()


class _BiggerBlocks(Exception):
    """A record does not fit in one read block: read again with larger blocks."""


class _Widen(Exception):
    """A value contradicts a column's type: read again with ``column`` as ``new_type``."""

    def __init__(
        self, column: str, old_type: pa.DataType, value: str | None, row: str | None
    ) -> None:
        super().__init__(column)
        self.column = column
        self.where = f" on line {row}" if row else ""
        self.old_type = old_type
        self.value = value
        self.new_type = _wider(old_type, value)


def _conversion_failure(exc: Exception, schema: pa.Schema) -> _Widen | None:
    text = str(exc)
    match = _CONVERSION_RE.search(text)
    value: str | None = None
    if match:
        value = match.group(4)
    else:
        match = _DECIMAL_RE.search(text)
        if not match:
            return None
    index = int(match.group(1))
    if index >= len(schema):
        return None
    f = schema.field(index)
    if pa.types.is_string(f.type):
        return None
    return _Widen(f.name, f.type, value, match.group(2))


_INTEGER_TEXT = re.compile(r"[ \t]*[+-]?([0-9]+)[ \t]*")


def _wider(old: pa.DataType, value: str | None) -> pa.DataType:
    """The next type after ``old`` that accepts ``value`` (pyarrow's order), with the
    integer rule: an integer beyond int64 → decimal128(38, 0); beyond 38 digits, or a decimal
    column meeting anything else → string (a double would round the big integers)."""
    if value is None or pa.types.is_decimal(old):
        return pa.string()
    integer = _INTEGER_TEXT.fullmatch(value)
    overflow = integer is not None and not -(2**63) <= int(value) < 2**63
    big = BIG_INTEGER if integer and len(integer.group(1).lstrip("0")) <= 38 else pa.string()
    if overflow and pa.types.is_integer(old):
        return big
    if old not in ORDER:
        return pa.string()
    for kind in ORDER[ORDER.index(old) + 1 :]:
        if _accepts(kind, value):
            return kind
        if overflow and pa.types.is_integer(kind):
            return big
    return pa.string()


def _accepts(kind: pa.DataType, value: str) -> bool:
    if pa.types.is_string(kind):
        return True
    quoted = '"' + value.replace('"', '""') + '"'
    data = ("v\n" + quoted + "\n").encode("utf-8", "surrogateescape")
    try:
        pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=convert_options({"v": kind}),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def stored_type(kind: pa.DataType) -> pa.DataType:
    """A column with no value at all (null) is stored as string."""
    return pa.string() if pa.types.is_null(kind) else kind


def ingest_csv(
    path: Path,
    size: int,
    open_sink: Callable[[pa.Schema], Sink],
    name: str,
    target: pa.Schema | None = None,
) -> NewObjects:
    """Read the spooled CSV at ``path`` (``size`` bytes; while csvbytes.spool_while still
    writes it, its size so far is asked of the spool) into the sink ``open_sink(schema)``
    makes.

    ``target`` fixes the types (an append): a value it cannot hold is a Conflict naming the
    column, the value and its line. Without it the types are inferred (module docstring).
    A sink that saw a failed attempt is aborted; only the last attempt's sink is closed."""
    scanned = spooled_scan(path)
    growth = spooled_growth(path)
    if scanned is not None and scanned.error is not None:
        raise scanned.error
    if growth is not None:  # still being spooled: wait for a first byte (or the end)
        size = growth.wait(1)
    schema = target if target is not None else infer_csv_schema(path, size)
    block = BLOCK_BYTES
    limit = (len(ORDER) + 2) * len(schema) + 8
    settled = True  # the first attempt writes at once: most files never contradict
    for _attempt in range(limit):
        try:
            if not settled:
                # after a contradiction: settle the types reading only the typed columns,
                # without writing, then write once
                _scan(path, schema, block)
                settled = True
            return _write(path, schema, block, open_sink, name, target is not None, scanned)
        except _BiggerBlocks:
            if block >= MAX_BLOCK_BYTES:
                raise InvalidInput(
                    f"a CSV record is larger than {MAX_BLOCK_BYTES >> 20} MiB; split the field "
                    "or ingest it as Arrow"
                ) from None
            block *= 8
            log.info(
                "CSV has records larger than the read block; reading with %d MiB blocks",
                block >> 20,
            )
        except _Widen as widen:
            if target is not None:
                shown = f"value {widen.value!r}" if widen.value is not None else "a value"
                raise Conflict(
                    f"CSV column {widen.column!r}: {shown}{widen.where} is not "
                    f"{widen.old_type} as dataset {name!r} requires"
                ) from None
            log.warning(
                "CSV column %r: value %r%s contradicts type %s; reading it as %s",
                widen.column,
                widen.value,
                widen.where,
                widen.old_type,
                widen.new_type,
            )
            schema = _set(schema, widen.column, widen.new_type)
            settled = False
        except _Retype as retype:
            for column, kind in retype.types.items():
                schema = _set(schema, column, kind)
            settled = False
    raise InvalidInput("CSV column types did not settle")  # unreachable: types only widen


class _Retype(Exception):
    """Numeric columns whose text must be kept (zero-padded, or long integers in floats)."""

    def __init__(self, types: dict[str, pa.DataType]) -> None:
        super().__init__(", ".join(sorted(types)))
        self.types = types


def _set(schema: pa.Schema, column: str, kind: pa.DataType) -> pa.Schema:
    return schema.set(schema.get_field_index(column), pa.field(column, kind))


def _scan(path: Path, schema: pa.Schema, block: int) -> None:
    """Read every typed (non-string) column once; raises _Widen on a contradiction."""
    typed = [f.name for f in schema if not pa.types.is_string(f.type)]
    if typed:
        for _ in _batches(path, schema, block, scan=False, include=typed):
            pass


def _write(
    path: Path,
    schema: pa.Schema,
    block: int,
    open_sink: Callable[[pa.Schema], Sink],
    name: str,
    append: bool,
    scanned: ByteScan | None,
) -> NewObjects:
    """One attempt: every batch into a new sink, then the checks that need the whole file
    (an unclosed quote; numbers' text). ``scanned``: the spool's ByteScan, if any."""
    # one stored spelling per logical type (fidelity): timestamp[s] → [us], time32 → time64
    stored = normalize_schema(pa.schema([pa.field(f.name, stored_type(f.type)) for f in schema]))
    for f in schema:
        if pa.types.is_null(f.type):
            log.info("CSV column %r: no values in the file; storing it as string", f.name)
    sink = open_sink(stored)
    try:
        sources: list[_Source] = []
        for batch in _batches(path, schema, block, scan=scanned is None, source_out=sources):
            sink.write(batch if batch.schema == stored else conform(batch, stored))
        facts = scanned if scanned is not None else sources[0].bytes
        if facts.error is not None:  # seen while spooling, after the parse got this far
            raise facts.error
        if facts.quotes % 2 or facts.quotes <= EXACT_QUOTES:
            line = unclosed_quote(path) if facts.quotes else None
            if line is not None:
                raise InvalidInput(
                    f"malformed CSV: a quoted field opened on line {line} is never closed"
                )
        if facts.suspect:
            retype = _text_check(path, schema, block)
            if retype and append:
                raise Conflict(
                    f"CSV column(s) {', '.join(sorted(retype))}: values such as zero-padded or "
                    f"very long numbers are text, but dataset {name!r} stores these columns as "
                    "numbers"
                )
            if retype:
                log.info(
                    "CSV columns %s: leading zeros or long integers; reading them as %s",
                    list(retype),
                    list(map(str, retype.values())),
                )
                raise _Retype(retype)
        return sink.close()
    except BaseException:
        sink.abort()
        raise
