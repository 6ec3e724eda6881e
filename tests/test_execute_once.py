"""A query runs once per fetch: the call that needs its schema starts it, the DoGet streams it.

Covers flight.pending through real clients: plain Flight GetFlightInfo + DoGet, the ADBC
driver's prepare / execute / fetch, tickets presented to a server that never started them (a
replica), results nobody fetches (closed, so no DuckDB cursor stays open), and freshness (a
commit between prepare and execute is seen).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.flight.pending import PendingResults
from tests.helpers import wait_until
from tests.servers import Running, flight_server, make_settings


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Running]:
    with flight_server(make_settings(str(tmp_path / "lake"))) as running:
        table = pa.table(
            {"id": pa.array(range(1000), pa.int64()), "v": [i % 7 for i in range(1000)]}
        )
        running.lake.ingest_arrow("t", table.schema, table.to_batches(), "create")
        yield running


def executions(srv: Running, fn: object) -> int:
    """How many queries the lake ran while ``fn()`` ran."""
    count = {"n": 0}
    original = srv.lake.query

    def counting(*args: object, **kwargs: object) -> pa.RecordBatchReader:
        count["n"] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    srv.lake.query = counting  # type: ignore[method-assign]
    try:
        fn()  # type: ignore[operator]
    finally:
        srv.lake.query = original  # type: ignore[method-assign]
    return count["n"]


def test_plain_flight_info_then_do_get_runs_the_query_once(srv: Running) -> None:
    got: dict[str, pa.Table] = {}

    def run() -> None:
        info = srv.client.get_flight_info(
            flight.FlightDescriptor.for_command(b"SELECT v, count(*) AS n FROM t GROUP BY v")
        )
        got["schema"] = info.schema
        got["table"] = srv.client.do_get(info.endpoints[0].ticket).read_all()

    assert executions(srv, run) == 1
    assert got["table"].schema == got["schema"]
    assert sorted(got["table"].column("n").to_pylist()) == sorted(
        [len(range(v, 1000, 7)) for v in range(7)]
    )
    assert srv.lake.engine.active_queries == 0


def test_adbc_prepare_execute_fetch_runs_each_query_once(srv: Running) -> None:
    with dbapi.connect(srv.location, autocommit=True) as conn, conn.cursor() as cur:

        def run() -> None:
            for i in range(5):
                cur.execute(f"SELECT count(*) AS n, {i} AS run FROM t")
                assert cur.fetchall() == [(1000, i)]

        assert executions(srv, run) == 5

        def again() -> None:  # the same statement again: DB-API does not prepare it twice
            cur.execute("SELECT count(*) AS n, 4 AS run FROM t")
            assert cur.fetchall() == [(1000, 4)]

        assert executions(srv, again) == 1
    wait_until(lambda: srv.lake.engine.active_queries == 0, timeout=10, what="queries closed")


def test_ticket_from_another_replica_runs_its_sql(srv: Running) -> None:
    """A ticket naming a result this server never started (another replica handed it out, or
    it expired) still carries its SQL and runs it."""
    ticket = json.dumps({"sql": "SELECT count(*) AS n FROM t", "pending": "0" * 32}).encode()
    table = srv.client.do_get(flight.Ticket(ticket)).read_all()
    assert table.column("n").to_pylist() == [1000]


def test_results_nobody_fetches_are_closed(srv: Running) -> None:
    for i in range(3):
        srv.client.get_flight_info(
            flight.FlightDescriptor.for_command(f"SELECT * FROM t WHERE v = {i}".encode())
        )
    assert srv.lake.engine.active_queries == 3
    time.sleep(srv.server.pending.max_age + 0.1)
    # the next call that parks or claims a result sweeps the expired ones
    info = srv.client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1 AS one"))
    assert srv.client.do_get(info.endpoints[0].ticket).read_all().column(0).to_pylist() == [1]
    wait_until(lambda: srv.lake.engine.active_queries == 0, timeout=10, what="expired closed")
    assert len(srv.server.pending) == 0


def test_closed_prepared_statement_closes_its_started_result(srv: Running) -> None:
    with dbapi.connect(srv.location, autocommit=True) as conn:
        cur = conn.cursor()
        cur.adbc_prepare("SELECT * FROM t")
        assert srv.lake.engine.active_queries == 1
        cur.close()
    wait_until(lambda: srv.lake.engine.active_queries == 0, timeout=10, what="closed")


def test_commit_between_prepare_and_execute_is_seen(srv: Running) -> None:
    """A statement prepared before a commit and executed after it reads the new data."""
    with dbapi.connect(srv.location, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_prepare("SELECT count(*) AS n FROM t")
        more = pa.table({"id": pa.array([5000], pa.int64()), "v": [1]})
        srv.lake.ingest_arrow("t", more.schema, more.to_batches(), "append")
        cur.execute("SELECT count(*) AS n FROM t")
        assert cur.fetchall() == [(1001,)]


def test_pending_results_are_bounded() -> None:
    closed: list[int] = []

    def reader(i: int) -> pa.RecordBatchReader:
        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield pa.record_batch([pa.array([i])], names=["i"])
            finally:
                closed.append(i)

        return pa.RecordBatchReader.from_batches(pa.schema([("i", pa.int64())]), batches())

    pending = PendingResults(capacity=2, max_age=60)
    keys = [pending.park(reader(i)) for i in range(3)]
    assert len(pending) == 2
    assert pending.claim(keys[0]) is None  # pushed out by the third
    assert pending.claim(keys[2]).read_all().column(0).to_pylist() == [2]  # type: ignore[union-attr]
    pending.discard(keys[1])
    assert len(pending) == 0
