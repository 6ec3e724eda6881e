"""Every Arrow type a client can send: an exact round trip through plain Flight, Flight SQL
(the real ADBC driver) and HTTP (Arrow IPC), or a refusal at ingest naming column and type.

``ACCEPTED`` is the table of types with their edge values and the one stored spelling each
reads back as; ``REFUSED`` the types (and values) ingest refuses. Each accepted type must also
append its own read-back to the dataset it came from (the fingerprints match).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.http_helpers import RunningHttp, http_server
from tests.servers import Running, flight_server, make_settings

ARROW = "application/vnd.apache.arrow.stream"
UTC = dt.UTC
D = decimal.Decimal

# Instants around the edges: pre-1970, the Berlin and Los Angeles DST switches (the instant
# before and at each), the epoch, far future.
INSTANTS = [
    dt.datetime(1900, 1, 1, 0, 0, tzinfo=UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
    dt.datetime(1970, 1, 1, tzinfo=UTC),
    dt.datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC),  # Berlin: 01:59:59 CET
    dt.datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC),  # Berlin: 03:00:00 CEST
    dt.datetime(2024, 10, 27, 0, 59, 59, tzinfo=UTC),  # Berlin: 02:59:59 CEST
    dt.datetime(2024, 10, 27, 1, 0, 0, tzinfo=UTC),  # Berlin: 02:00:00 CET (again)
    dt.datetime(2024, 3, 10, 10, 0, 0, tzinfo=UTC),  # Los Angeles: 03:00 PDT
    dt.datetime(2024, 11, 3, 9, 0, 0, tzinfo=UTC),  # Los Angeles: 01:00 PST (second one)
    dt.datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC),  # +14:00 is still year 9999
    None,
]
INSTANTS_NS = [i for i in INSTANTS if i is None or 1678 <= i.year <= 2261]  # int64 ns range
WALL = [None if i is None else i.replace(tzinfo=None) for i in INSTANTS]
FRACTIONS = [dt.datetime(1960, 6, 1, 12, 0, 0, 123000), dt.datetime(2038, 1, 19, 3, 14, 7, 999000)]
TIMES = [dt.time(0, 0), dt.time(12, 30, 15), dt.time(23, 59, 59), None]
ZONES = ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "+05:30"]


@dataclass(frozen=True)
class Case:
    """One sent column, and the type it is stored and read back as (None: unchanged)."""

    id: str
    values: pa.Array
    stored: pa.DataType | None = None

    @property
    def expected(self) -> pa.DataType:
        return self.stored if self.stored is not None else self.values.type


def _dict(indices: pa.DataType, values: pa.Array, ordered: bool = False) -> pa.Array:
    index = pa.array([0, 1, None, 1, 0], indices)
    return pa.DictionaryArray.from_arrays(index, values, ordered=ordered)


def _ints() -> list[Case]:
    cases = []
    for bits in (8, 16, 32, 64):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        cases.append(Case(f"int{bits}", pa.array([lo, -1, 0, hi, None], f"int{bits}")))
        cases.append(Case(f"uint{bits}", pa.array([0, 1, 2**bits - 1, None], f"uint{bits}")))
    return cases


def _floats() -> list[Case]:
    edges = [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, None]
    return [
        Case("float32", pa.array([*edges, 3.4028234663852886e38], pa.float32())),
        Case("float64", pa.array([*edges, 1.7976931348623157e308, 5e-324], pa.float64())),
    ]


def _decimals() -> list[Case]:
    def dec(kind: pa.DataType, digits: int, scale: int) -> pa.Array:
        nines = "9" * digits
        top = f"{nines[: digits - scale] or '0'}.{nines[digits - scale :]}"
        tiny = D(f"0.{'0' * (scale - 1)}1") if scale else D(1)
        return pa.array([D("-" + top), D(top), D(0), tiny, None], kind)

    return [
        Case("decimal128(9,2)", dec(pa.decimal128(9, 2), 9, 2)),
        Case("decimal128(18,0)", dec(pa.decimal128(18, 0), 18, 0)),
        Case("decimal128(38,10)", dec(pa.decimal128(38, 10), 38, 10)),
        Case("decimal128(38,38)", dec(pa.decimal128(38, 38), 38, 38)),
        Case("decimal256(20,3)", dec(pa.decimal256(20, 3), 20, 3), pa.decimal128(20, 3)),
        Case("decimal256(38,5)", dec(pa.decimal256(38, 5), 38, 5), pa.decimal128(38, 5)),
        Case("decimal32(5,2)", dec(pa.decimal32(5, 2), 5, 2), pa.decimal128(5, 2)),
        Case("decimal64(18,4)", dec(pa.decimal64(18, 4), 18, 4), pa.decimal128(18, 4)),
    ]


def _text() -> list[Case]:
    words = ["", "a", "ünïcödé 😀", None, "x" * 1000, "NA", "null", "line\nbreak"]
    raw = [b"", b"\x00\xff\x01", None, b"x" * 1000]
    return [
        Case("string", pa.array(words, pa.string())),
        Case("large_string", pa.array(words, pa.large_string()), pa.string()),
        Case("string_view", pa.array(words, pa.string_view()), pa.string()),
        Case("binary", pa.array(raw, pa.binary())),
        Case("large_binary", pa.array(raw, pa.large_binary()), pa.binary()),
        Case("binary_view", pa.array(raw, pa.binary_view()), pa.binary()),
        Case(
            "fixed_size_binary",
            pa.array([b"\x00\x00\x00", b"abc", None], pa.binary(3)),
            pa.binary(),
        ),
        Case("bool", pa.array([True, False, None], pa.bool_())),
    ]


def _dates_times() -> list[Case]:
    days = [dt.date(1, 1, 1), dt.date(1969, 12, 31), dt.date(2024, 2, 29), dt.date(9999, 12, 31)]
    return [
        Case("date32", pa.array([*days, None], pa.date32())),
        Case("date64", pa.array([*days, None], pa.date64()), pa.date32()),
        Case("time32[s]", pa.array(TIMES, pa.time32("s")), pa.time64("us")),
        Case(
            "time32[ms]",
            pa.array([*TIMES, dt.time(1, 2, 3, 456000)], pa.time32("ms")),
            pa.time64("us"),
        ),
        Case("time64[us]", pa.array([*TIMES, dt.time(23, 59, 59, 999999)], pa.time64("us"))),
        Case(
            "time64[ns]",
            pa.array([0, 86_399_999_999_000, 1_000, None], pa.time64("ns")),
            pa.time64("us"),
        ),
    ]


def _timestamps() -> list[Case]:
    cases = [
        Case("timestamp[s]", pa.array(WALL, pa.timestamp("s")), pa.timestamp("us")),
        Case("timestamp[ms]", pa.array(WALL + FRACTIONS, pa.timestamp("ms")), pa.timestamp("us")),
        Case("timestamp[us]", pa.array(WALL + FRACTIONS, pa.timestamp("us"))),
        Case("timestamp[ns]", pa.array([-(2**62), 0, 1, 2**62, None], pa.timestamp("ns"))),
    ]
    for zone in ZONES:
        for unit in ("s", "ms", "us"):
            cases.append(
                Case(
                    f"timestamp[{unit},{zone}]",
                    pa.array(INSTANTS, pa.timestamp(unit, zone)),
                    pa.timestamp("us", zone),
                )
            )
        cases.append(
            Case(
                f"timestamp[ns,{zone}]",
                pa.array(INSTANTS_NS, pa.timestamp("ns", zone)),
                pa.timestamp("us", zone),
            )
        )
    return cases


def _durations() -> list[Case]:
    # int64 extremes where Python's timedelta can hold them (999,999,999 days)
    days = 999_999_999 * 86_400
    top = {"s": days, "ms": days * 1000, "us": 2**63 - 1, "ns": 2**63 - 1}
    return [
        Case(f"duration[{u}]", pa.array([-top[u], -1, 0, 1, top[u], None], pa.duration(u)))
        for u in ("s", "ms", "us", "ns")
    ]


def _nested() -> list[Case]:
    ints = [[1, None, 3], [], None, [2**62]]
    berlin = pa.timestamp("us", "Europe/Berlin")
    row_type = pa.struct(
        [
            ("a", pa.int32()),
            ("b", pa.string()),
            ("c", pa.list_(pa.int64())),
            ("at", berlin),
            ("took", pa.duration("ms")),
        ]
    )
    rows = [
        {"a": 1, "b": "x", "c": [1], "at": INSTANTS[3], "took": dt.timedelta(seconds=1)},
        {"a": None, "b": None, "c": None, "at": None, "took": None},
        None,
    ]
    return [
        Case("list<int64>", pa.array(ints, pa.list_(pa.int64()))),
        Case("large_list<int64>", pa.array(ints, pa.large_list(pa.int64())), pa.list_(pa.int64())),
        Case("list_view<int64>", pa.array(ints, pa.list_view(pa.int64())), pa.list_(pa.int64())),
        Case(
            "large_list_view<string>",
            pa.array([["a", None], [], None], pa.large_list_view(pa.large_string())),
            pa.list_(pa.string()),
        ),
        Case(
            "fixed_size_list<float32,3>",
            pa.array([[1.0, 2.0, None], None, [0.0, -1.5, 3.0]], pa.list_(pa.float32(), 3)),
            pa.list_(pa.float32()),
        ),
        Case(
            "list<list<string>>",
            pa.array([[["a"], []], None, [None]], pa.list_(pa.list_(pa.string()))),
        ),
        Case(
            "list<timestamp[us,Berlin]>",
            pa.array([INSTANTS[:4], [], None], pa.list_(berlin)),
        ),
        Case("struct", pa.array(rows, row_type)),
        Case(
            "map<string,int64>",
            pa.array([[("k", 1), ("", None)], [], None], pa.map_(pa.string(), pa.int64())),
        ),
        Case(
            "map<int32,list<string>>",
            pa.array([[(1, ["a", None])], None], pa.map_(pa.int32(), pa.list_(pa.string()))),
        ),
    ]


def _dictionaries() -> list[Case]:
    words = ["alpha", "bé", "c" * 40]
    cases = []
    for index in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        for kind in (pa.string(), pa.large_string(), pa.string_view()):
            cases.append(
                Case(
                    f"dictionary<{index},{kind}>",
                    _dict(pa.type_for_alias(index), pa.array(words, kind)),
                    pa.string(),
                )
            )
    cases.append(
        Case("dictionary ordered (Enum)", _dict(pa.uint8(), pa.array(words), True), pa.string())
    )
    cases.append(
        Case("dictionary<int32,int64>", _dict(pa.int32(), pa.array([7, -7, 0])), pa.int64())
    )
    cases.append(
        Case(
            "dictionary<int16,binary_view>",
            _dict(pa.int16(), pa.array([b"a", b"", b"\x00"], pa.binary_view())),
            pa.binary(),
        )
    )
    cases.append(
        Case(
            "list<dictionary<int8,string>>",
            pa.array([["a", None], None, []], pa.list_(pa.dictionary(pa.int8(), pa.string()))),
            pa.list_(pa.string()),
        )
    )
    return cases


ACCEPTED = [
    *_ints(),
    *_floats(),
    *_decimals(),
    *_text(),
    *_dates_times(),
    *_timestamps(),
    *_durations(),
    *_nested(),
    *_dictionaries(),
]


@dataclass(frozen=True)
class Refusal:
    """A column ingest refuses; ``says`` are the words the message must hold."""

    id: str
    values: pa.Array
    says: tuple[str, ...]


REFUSED = [
    Refusal("null", pa.array([None, None], pa.null()), ("type null",)),
    Refusal("float16", pa.array([1.5, None], pa.float16()), ("halffloat", "float32")),
    Refusal(
        "decimal256(50,3)", pa.array([D("1.5")], pa.decimal256(50, 3)), ("decimal256(50, 3)", "38")
    ),
    Refusal(
        "month_day_nano_interval",
        pa.array([(1, 2, 3), None], pa.month_day_nano_interval()),
        ("month_day_nano_interval",),
    ),
    Refusal(
        "uuid", pa.array([b"\x01" * 16, None], pa.uuid()), ("arrow.uuid", "fixed_size_binary[16]")
    ),
    Refusal(
        "dense_union",
        pa.UnionArray.from_dense(
            pa.array([0, 1], pa.int8()),
            pa.array([0, 0], pa.int32()),
            [pa.array([1]), pa.array(["a"])],
        ),
        ("dense_union",),
    ),
    Refusal(
        "run_end_encoded",
        pa.RunEndEncodedArray.from_arrays(pa.array([2, 3], pa.int32()), pa.array(["a", "b"])),
        ("run_end_encoded",),
    ),
    Refusal("list<null>", pa.array([[None], None], pa.list_(pa.null())), ("list<item: null>",)),
    Refusal(
        "struct<float16>", pa.array([{"h": 1.0}], pa.struct([("h", pa.float16())])), ("halffloat",)
    ),
    # values the stored spelling cannot hold exactly
    Refusal(
        "timestamp[ns,tz] with nanoseconds",
        pa.array([0, 1_000_000_001], pa.timestamp("ns", "Europe/Berlin")),
        ("timestamp[ns, tz=Europe/Berlin]", "lose data"),
    ),
    Refusal(
        "time64[ns] with nanoseconds", pa.array([1], pa.time64("ns")), ("time64[ns]", "lose data")
    ),
    Refusal(
        "date64 not midnight", pa.array([86_400_000 + 1], pa.date64()), ("date64[ms]", "lose data")
    ),
]


# -- servers ------------------------------------------------------------------------------------
@dataclass
class Fronts:
    flight: Running
    http: RunningHttp
    adbc: dbapi.Connection


@pytest.fixture(scope="module")
def fronts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronts]:
    """One lake behind Flight (+ Flight SQL) and HTTP, with an ADBC connection."""
    settings = make_settings(str(tmp_path_factory.mktemp("types") / "lake"))
    with (
        flight_server(settings) as running,
        http_server(running.lake, settings) as http,
        dbapi.connect(running.location, autocommit=True) as conn,
    ):
        yield Fronts(running, http, conn)


def _name(prefix: str, case_id: str) -> str:
    return prefix + "_" + "".join(c if c.isalnum() else "_" for c in case_id)


def _same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN, recursively."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _put(client: flight.FlightClient, name: str, table: pa.Table, mode: str = "create") -> None:
    command = f'{{"ingest": "{name}", "format": "arrow", "mode": "{mode}"}}'
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), table.schema)
    writer.write_table(table)
    writer.done_writing()
    reader.read()
    writer.close()


def _get(client: flight.FlightClient, sql: str) -> pa.Table:
    return client.do_get(flight.Ticket(sql.encode())).read_all()


def _http_arrow_bytes(http: RunningHttp, sql: str) -> bytes:
    response = http.client.post("/v1/sql", json={"sql": sql}, headers={"accept": ARROW})
    assert response.status_code == 200, response.text
    return response.content


def _http_arrow(http: RunningHttp, sql: str) -> pa.Table:
    return pa.ipc.open_stream(_http_arrow_bytes(http, sql)).read_all()


def _adbc(conn: dbapi.Connection, sql: str) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def _check(back: pa.Table, case: Case, how: str) -> None:
    got = back.schema.field("v").type
    assert str(got) == str(case.expected), f"{how}: sent {case.values.type}, read back {got}"
    assert _same(back.column("v").to_pylist(), case.values.to_pylist()), how


# -- the round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_round_trip_flight_http_and_append(fronts: Fronts, case: Case) -> None:
    client = fronts.flight.client
    name = _name("f", case.id)
    table = pa.table({"n": pa.array(range(len(case.values)), pa.int64()), "v": case.values})
    _put(client, name, table)
    sql = f"SELECT * FROM {name} ORDER BY n"
    back = _get(client, sql)
    _check(back, case, "Flight do_get")
    info = client.get_flight_info(flight.FlightDescriptor.for_path(name))
    assert str(info.schema.field("v").type) == str(case.expected), "FlightInfo schema"
    body = _http_arrow_bytes(fronts.http, sql)
    _check(pa.ipc.open_stream(body).read_all(), case, "HTTP Arrow")
    rows = fronts.http.client.post("/v1/sql", json={"sql": sql})
    assert rows.status_code == 200, rows.text
    assert [row["n"] for row in rows.json()] == list(range(len(case.values)))
    # What was read back appends unchanged, and so does the original again.
    _put(client, name, back, mode="append")
    _put(client, name, table, mode="append")
    upload = fronts.http.client.post(
        "/v1/ingest", params={"name": name, "mode": "append"}, files={"file": ("b.arrows", body)}
    )
    assert upload.status_code == 200, upload.text
    again = _get(client, f"SELECT * FROM {name} ORDER BY n")
    assert again.num_rows == 4 * table.num_rows
    assert str(again.schema.field("v").type) == str(case.expected)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_round_trip_adbc(fronts: Fronts, case: Case) -> None:
    name = _name("a", case.id)
    table = pa.table({"n": pa.array(range(len(case.values)), pa.int64()), "v": case.values})
    with fronts.adbc.cursor() as cur:
        cur.adbc_ingest(name, table, mode="create")
    back = _adbc(fronts.adbc, f"SELECT * FROM {name} ORDER BY n")
    _check(back, case, "ADBC")
    with fronts.adbc.cursor() as cur:
        assert cur.adbc_ingest(name, back, mode="append") == table.num_rows


@pytest.mark.parametrize("refusal", REFUSED, ids=[r.id for r in REFUSED])
def test_refused_at_ingest_naming_column_and_type(fronts: Fronts, refusal: Refusal) -> None:
    client = fronts.flight.client
    table = pa.table(
        {"n": pa.array(range(len(refusal.values)), pa.int64()), "odd col": refusal.values}
    )
    name = _name("r", refusal.id)
    with pytest.raises(pa.ArrowInvalid) as raised:
        _put(client, name, table)
    message = str(raised.value).split(". Detail:")[0]
    assert "column 'odd col'" in message, message
    for word in refusal.says:
        assert word in message, message
    with (
        pytest.raises(adbc_driver_manager.ProgrammingError) as adbc_raised,
        fronts.adbc.cursor() as cur,
    ):
        cur.adbc_ingest(name, table, mode="create")
    assert "column 'odd col'" in str(adbc_raised.value)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    upload = fronts.http.client.post(
        "/v1/ingest",
        params={"name": name},
        files={"file": ("r.arrows", sink.getvalue().to_pybytes())},
    )
    assert upload.status_code == 400, upload.text
    assert "column 'odd col'" in upload.json()["error"]
    # nothing was created
    with pytest.raises(pa.ArrowKeyError):
        client.get_flight_info(flight.FlightDescriptor.for_path(name))


def test_json_values_of_zones_durations_and_dictionaries(fronts: Fronts) -> None:
    """HTTP JSON: zoned instants in UTC with Z, durations in seconds, dictionaries as values."""
    table = pa.table(
        {
            "at": pa.array([INSTANTS[4]], pa.timestamp("us", "Europe/Berlin")),
            "took": pa.array([1500], pa.duration("ms")),
            "kind": _dict(pa.uint32(), pa.array(["x", "y"], pa.string_view()))[:1],
        }
    )
    _put(fronts.flight.client, "json_types", table)
    response = fronts.http.client.post("/v1/sql", json={"sql": "SELECT * FROM json_types"})
    assert response.status_code == 200, response.text
    assert response.json() == [{"at": "2024-03-31T01:00:00.000000Z", "took": 1.5, "kind": "x"}]


def test_zone_survives_sql_by_name_and_instants_in_expressions(fronts: Fronts) -> None:
    """A zoned column selected by name keeps its zone through filters, joins and CTEs;
    computed values keep their instant (labelled UTC)."""
    berlin = pa.timestamp("us", "Europe/Berlin")
    _put(
        fronts.flight.client,
        "zoned",
        pa.table({"id": [1, 2], "ts": pa.array(INSTANTS[3:5], berlin)}),
    )
    client = fronts.flight.client
    for sql in (
        "SELECT ts FROM zoned WHERE id = 2",
        "WITH x AS (SELECT ts, id FROM zoned) SELECT ts FROM x WHERE id = 2",
        "SELECT z.ts FROM zoned z JOIN zoned y USING (id) WHERE id = 2",
    ):
        back = _get(client, sql)
        assert back.schema.field("ts").type == berlin, sql
        assert back.column("ts").to_pylist() == [INSTANTS[4]], sql
    renamed = _get(client, "SELECT z.ts AS moment FROM zoned z WHERE id = 2")
    assert renamed.schema.field("moment").type == berlin
    shifted = _get(client, "SELECT max(ts) + INTERVAL 1 HOUR AS later FROM zoned")
    assert shifted.column("later").to_pylist() == [INSTANTS[4] + dt.timedelta(hours=1)]
    assert shifted.schema.field("later").type == pa.timestamp("us", "UTC")
    # a computed column named like a stored one is not relabelled
    _put(client, "took", pa.table({"d": pa.array([5, 7], pa.duration("s"))}))
    counted = _get(client, "SELECT count(*) AS d FROM took")
    assert counted.schema.field("d").type == pa.int64()
    assert _get(client, "SELECT d FROM took ORDER BY d").schema.field("d").type == pa.duration("s")


def test_polars_and_pandas_everyday_columns(fronts: Fronts) -> None:
    """polars Categorical/Enum/Datetime(tz)/Duration/Time and pandas category/tz/timedelta
    round-trip through ADBC and append their own read-back."""
    import pandas as pd
    import polars as pl

    frame = pl.DataFrame(
        {
            "cat": pl.Series(["a", "b", None], dtype=pl.Categorical),
            "enum": pl.Series(["x", "y", "x"], dtype=pl.Enum(["x", "y"])),
            "at": pl.Series(INSTANTS[3:6]).dt.convert_time_zone("Europe/Berlin"),
            "took": pl.Series([dt.timedelta(seconds=1), None, dt.timedelta(days=-2)]),
            "when": pl.Series([dt.time(1, 2, 3), None, dt.time(23, 59, 59, 999999)]),
        }
    )
    with fronts.adbc.cursor() as cur:
        cur.adbc_ingest("polars_mix", frame.to_arrow(), mode="create")
    back = pl.from_arrow(_adbc(fronts.adbc, "SELECT * FROM polars_mix"))
    assert isinstance(back, pl.DataFrame)
    assert back.schema["at"] == pl.Datetime("us", "Europe/Berlin")
    assert back.schema["took"] == pl.Duration("us")
    assert back.schema["cat"] == pl.String
    assert back.with_columns(pl.col("cat", "enum").cast(pl.String)).equals(
        frame.with_columns(pl.col("cat", "enum").cast(pl.String))
    )
    with fronts.adbc.cursor() as cur:
        cur.adbc_ingest("polars_mix", back.to_arrow(), mode="append")

    pdf = pd.DataFrame(
        {
            "cat": pd.Categorical(["a", "b", "a"]),
            "at": pd.to_datetime(
                ["2024-03-31 00:59:59", "2024-03-31 01:00:00", "1950-01-01 00:00:00"], utc=True
            ).tz_convert("America/Los_Angeles"),
            "took": pd.to_timedelta([1, 2, 3], unit="s"),
        }
    )
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    _put(fronts.flight.client, "pandas_mix", table)
    read = _get(fronts.flight.client, "SELECT * FROM pandas_mix").to_pandas()
    assert str(read["at"].dtype).endswith("America/Los_Angeles]")
    assert (read["at"] == pdf["at"]).all()
    assert (read["took"] == pdf["took"]).all()
    assert list(read["cat"]) == ["a", "b", "a"]


@pytest.mark.s3
def test_zones_durations_dictionaries_on_s3(s3_server: Any, s3_bucket: str) -> None:
    """The same stored spellings and restored labels on S3."""
    settings = make_settings(f"s3://{s3_bucket}/lake", s3_server)
    table = pa.table(
        {
            "at": pa.array(INSTANTS, pa.timestamp("s", "Asia/Kolkata")),
            "took": pa.array(range(len(INSTANTS)), pa.duration("ns")),
            "kind": pa.DictionaryArray.from_arrays(
                pa.array([i % 2 for i in range(len(INSTANTS))], pa.uint32()),
                pa.array(["p", "q"], pa.string_view()),
            ),
        }
    )
    with flight_server(settings) as running:
        _put(running.client, "s3_types", table)
        back = _get(running.client, "SELECT * FROM s3_types")
        assert str(back.schema) == str(
            pa.schema(
                {
                    "at": pa.timestamp("us", "Asia/Kolkata"),
                    "took": pa.duration("ns"),
                    "kind": pa.string(),
                }
            )
        )
        assert back.column("at").to_pylist() == INSTANTS
        _put(running.client, "s3_types", back, mode="append")


def test_datasets_stored_with_older_spellings_still_append(tmp_path: Any) -> None:
    """A dataset whose manifest holds a spelling stored before 0.2 (v0.1 kept timestamp[s]
    from CSV inference, time32 as sent) takes appends of the same columns, Arrow and CSV."""
    from flightlake.ingest import ParquetSink
    from flightlake.lake import Lake

    old = pa.schema({"ts": pa.timestamp("s"), "t": pa.time32("s")})
    batch = pa.record_batch(
        [pa.array([WALL[3]], pa.timestamp("s")), pa.array([dt.time(10)], pa.time32("s"))],
        schema=old,
    )
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        sink = ParquetSink(lake.storage, "old", old)
        sink.write(batch)
        new = sink.close()
        lake.catalog.commit("old", "create", new)  # the old spelling, committed as is
        assert lake.dataset("old").schema == old
        lake.ingest_arrow("old", old, [batch], "append")
        lake.ingest_csv("old", [b"ts,t\n2024-01-01 00:00:00,10:00:00\n"], "append")
        back = lake.query("SELECT * FROM old ORDER BY ts").read_all()
        assert back.num_rows == 3
        assert str(back.schema) == "ts: timestamp[us]\nt: time64[us]"
        lake.ingest_arrow("old", back.schema, back.to_batches(), "append")
    finally:
        lake.close()
