"""encode_result: pieces encoded a step ahead on a thread of their own, and still one stream:
errors reach the consumer, closing it ends the query, the JSON is compact."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

from flightlake.encode import AHEAD, encode_result

SCHEMA = pa.schema([("i", pa.int64()), ("s", pa.string())])


def batches(
    count: int,
    fail_at: int = -1,
    closed: threading.Event | None = None,
    made: list[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    try:
        for n in range(count):
            if made is not None:
                made.append(n)
            if n == fail_at:
                raise pa.ArrowInvalid("boom in batch")
            yield pa.record_batch([pa.array([n]), pa.array([f"row {n}"])], schema=SCHEMA)
    finally:
        if closed is not None:
            closed.set()


def test_json_is_compact_rows_one_per_line() -> None:
    body = b"".join(encode_result(pa.RecordBatchReader.from_batches(SCHEMA, batches(3)), "json"))
    assert body == b'[\n{"i":0,"s":"row 0"},\n{"i":1,"s":"row 1"},\n{"i":2,"s":"row 2"}\n]\n'
    assert json.loads(body) == [{"i": n, "s": f"row {n}"} for n in range(3)]


@pytest.mark.parametrize("fmt", ["json", "csv", "arrow", "parquet"])
def test_an_error_after_the_first_piece_reaches_the_consumer(fmt: str) -> None:
    pieces = encode_result(pa.RecordBatchReader.from_batches(SCHEMA, batches(5, fail_at=2)), fmt)
    assert next(pieces)
    with pytest.raises(Exception, match="boom in batch"):
        list(pieces)


def test_closing_early_closes_the_source_and_the_thread() -> None:
    closed = threading.Event()
    made: list[int] = []
    before = threading.active_count()
    pieces = encode_result(
        pa.RecordBatchReader.from_batches(SCHEMA, batches(10_000, closed=closed, made=made)),
        "json",
    )
    assert next(pieces).startswith(b"[")
    pieces.close()  # an HTTP client hung up after the first piece
    assert closed.wait(10)  # the query's reader was closed: the query ends
    assert threading.active_count() <= before
    # it read no more than AHEAD pieces past the one taken (plus the one in hand)
    assert len(made) <= 1 + AHEAD + 1


def test_quotes_written_with_the_separators_keep_every_value_exact() -> None:
    """Strings and dates without nulls get their quotes from the separators; with nulls, or
    needing escapes, from the value path: every mix must parse back to the same rows."""
    table = pa.table(
        {
            "s": ["a", "b", "c"],  # first column, bare
            "n": [1, None, 3],
            "d": [dt.date(2024, 1, 2), None, dt.date(2024, 1, 4)],  # dates with a null
            "e": ['say "hi"', "tab\there", "plain"],  # needs escaping
            "t": [dt.date(2020, 5, 6)] * 3,  # bare date
            "z": ["x", None, "z"],  # last column, with a null
            "w": ["end", "of", "row"],  # last column, bare
        }
    )
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    body = b"".join(encode_result(reader, "json"))
    assert json.loads(body) == [
        {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}
        for row in table.to_pylist()
    ]
    assert body.startswith(b'[\n{"s":"a","n":1,"d":"2024-01-02","e":"say \\"hi\\""')


def test_floats_stay_floats_and_integers_integers() -> None:
    table = pa.table(
        {
            "f": pa.array([45.0, -0.0, 1.5, 1e20, float("nan"), None], pa.float64()),
            "h": pa.array([2.0, 3.25, 0.0, -7.0, float("inf"), 1.0], pa.float32()),
            "i": pa.array([45, 0, 1, 2, 3, None], pa.int64()),
        }
    )
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    rows = json.loads(b"".join(encode_result(reader, "json")))
    assert [type(r["f"]) for r in rows[:4]] == [float] * 4
    assert [r["f"] for r in rows] == [45.0, -0.0, 1.5, 1e20, None, None]
    assert [r["h"] for r in rows] == [2.0, 3.25, 0.0, -7.0, None, 1.0]
    assert all(type(r["h"]) is float for r in rows if r["h"] is not None)
    assert [type(r["i"]) for r in rows[:5]] == [int] * 5
