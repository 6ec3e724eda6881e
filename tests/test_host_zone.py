"""Answers never depend on the server host's time zone or locale: DuckDB runs in UTC with the
Gregorian calendar. Real `flightlake serve` processes started with other TZ and LC_ALL
values answer the same as UTC, on Flight, Flight SQL (ADBC) and HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.lake import Lake
from tests.servers import make_settings
from tests.subprocess_server import env_without_flightlake, flightlake_serve

UTC = dt.UTC
MIDNIGHT = dt.datetime(2024, 6, 1, 0, 0, tzinfo=UTC)
BERLIN_SWITCH = dt.datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 03:00 CEST

SQL = """
SELECT ts::DATE AS d, hour(ts) AS h, strftime(ts, '%Y-%m-%d %H:%M') AS s,
       tstz::DATE AS dz, hour(tstz) AS hz, strftime(tstz, '%Y-%m-%d %H:%M') AS sz,
       year(tstz) AS y, date_trunc('day', tstz) AS day, CAST(ts AS TIMESTAMPTZ) AS ts_tz,
       TIMESTAMPTZ '2024-06-01 00:00:00' AS lit, tstz, berlin, hour(berlin) AS hb
FROM t
"""
EXPECTED: dict[str, Any] = {
    "d": dt.date(2024, 6, 1),
    "h": 0,
    "s": "2024-06-01 00:00",
    "dz": dt.date(2024, 6, 1),
    "hz": 0,
    "sz": "2024-06-01 00:00",
    "y": 2024,
    "day": MIDNIGHT,
    "ts_tz": MIDNIGHT,
    "lit": MIDNIGHT,
    "tstz": MIDNIGHT,
    "berlin": BERLIN_SWITCH,
    "hb": 1,
}
EXPECTED_JSON = {
    **{k: v for k, v in EXPECTED.items() if isinstance(v, int | str)},
    "d": "2024-06-01",
    "dz": "2024-06-01",
    **{k: "2024-06-01T00:00:00.000000Z" for k in ("day", "ts_tz", "lit", "tstz")},
    "berlin": "2024-03-31T01:00:00.000000Z",
}
ZONED = {
    "day": pa.timestamp("us", "UTC"),
    "tstz": pa.timestamp("us", "UTC"),
    "berlin": pa.timestamp("us", "Europe/Berlin"),
}


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding ``t``: a wall-clock timestamp, a UTC instant and a Berlin instant."""
    folder = tmp_path_factory.mktemp("zones") / "lake"
    folder.mkdir()
    lake = Lake(make_settings(str(folder)))
    try:
        table = pa.table(
            {
                "ts": pa.array([MIDNIGHT.replace(tzinfo=None)], pa.timestamp("us")),
                "tstz": pa.array([MIDNIGHT], pa.timestamp("us", "UTC")),
                "berlin": pa.array([BERLIN_SWITCH], pa.timestamp("us", "Europe/Berlin")),
            }
        )
        lake.ingest_arrow("t", table.schema, table.to_batches(), "create")
    finally:
        lake.close()
    return folder


def _check_arrow(table: pa.Table, how: str) -> None:
    assert table.to_pylist() == [EXPECTED], how
    for name, kind in ZONED.items():
        assert table.schema.field(name).type == kind, f"{how}: {name}"


@pytest.fixture(
    params=[
        ("America/Los_Angeles", "C.UTF-8"),
        ("Asia/Kolkata", "th_TH.UTF-8"),  # ICU's Thai locale defaults to the Buddhist calendar
        ("Pacific/Kiritimati", "de_DE.UTF-8"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def host(request: pytest.FixtureRequest, lake_dir: Path) -> Iterator[Any]:
    zone, locale = request.param
    env = env_without_flightlake({"TZ": zone, "LC_ALL": locale, "LANG": locale})
    with flightlake_serve("--storage", str(lake_dir), env=env) as server:
        yield server


def test_answers_as_in_utc_on_every_front_end(host: Any) -> None:
    with flight.FlightClient(host.flight) as client:
        _check_arrow(client.do_get(flight.Ticket(SQL.encode())).read_all(), "Flight")
    with dbapi.connect(host.flight, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(SQL)
        _check_arrow(cur.fetch_arrow_table(), "Flight SQL (ADBC)")
    with httpx.Client(base_url=host.http, timeout=60) as http:
        arrow = http.post(
            "/v1/sql", json={"sql": SQL}, headers={"accept": "application/vnd.apache.arrow.stream"}
        )
        assert arrow.status_code == 200, arrow.text
        _check_arrow(pa.ipc.open_stream(arrow.content).read_all(), "HTTP Arrow")
        rows = http.post("/v1/sql", json={"sql": SQL})
        assert rows.status_code == 200, rows.text
        assert rows.json() == [EXPECTED_JSON]


def test_the_zone_cannot_be_changed_by_a_client(host: Any) -> None:
    with flight.FlightClient(host.flight) as client:
        for sql in ("SET TimeZone = 'Asia/Tokyo'", "SELECT current_setting('TimeZone')"):
            with pytest.raises(pa.ArrowInvalid):
                client.do_get(flight.Ticket(sql.encode())).read_all()
        again = client.do_get(flight.Ticket(b"SELECT hour(tstz) AS hz FROM t")).read_all()
        assert again.to_pylist() == [{"hz": 0}]
