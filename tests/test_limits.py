"""Limits under heavy and hostile queries, with real servers and real clients.

- A query nobody waits for stops: after a client deadline (pyarrow.flight), an ADBC
  ``adbc_cancel()`` and an HTTP client that hangs up, for queries that never yield a batch,
  the engine's running-query count drops to 0 and the server's CPU use drops.
- Admission: past ``max_concurrent_queries`` a query waits ``query_queue_seconds``, then fails
  UNAVAILABLE / 503 with Retry-After naming the limit.
- Memory: past the memory limits a query fails RESOURCE_EXHAUSTED-style naming memory and
  the setting, and the server keeps serving.
- Disk: an ingest that would leave less than the free-space floor fails naming the disk
  (never its path) and leaves nothing behind.

The CPU checks are generous upper bounds over a one-second window, as the issue asks: a
runaway query keeps a core (100 %) or two busy; a stopped one leaves the process near idle.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import httpx
import psutil
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake import observe
from flightlake.errors import QueryError
from tests.helpers import wait_until
from tests.http_helpers import http_server
from tests.servers import Running, flight_server, make_settings

# Queries that never yield a batch: an endless recursive CTE and a huge self cross join.
ENDLESS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
CROSS = "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range + b.range < 0"
# A query whose first batch comes at once and whose end never does: holds a slot while open.
ENDLESS_ROWS = "SELECT range AS i FROM range(1000000000000)"
HEAVY = [pytest.param(ENDLESS, id="recursive-cte"), pytest.param(CROSS, id="cross-join")]


def cancelled_total(reason: str) -> float:
    value = observe.REGISTRY.get_sample_value(
        "flightlake_queries_cancelled_total", {"reason": reason}
    )
    return value or 0.0


def cpu_percent(seconds: float = 1.0) -> float:
    """This process's CPU use over the next ``seconds`` (100 = one core busy)."""
    proc = psutil.Process()
    proc.cpu_percent(None)
    time.sleep(seconds)
    return float(proc.cpu_percent(None))


def assert_ended(lake: Any) -> None:
    """No DuckDB work left running and no result stream left open (within 5 s)."""
    engine = lake.engine
    wait_until(lambda: engine.running_queries == 0, 5, what="the DuckDB work to stop")
    wait_until(lambda: engine.active_queries == 0, 5, what="the result stream to close")


def assert_stopped(lake: Any) -> None:
    """No query left running, and the process is near idle again."""
    assert_ended(lake)
    assert cpu_percent() < 40


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Running]:
    with flight_server(make_settings(str(tmp_path / "lake"), query_timeout=120)) as running:
        yield running


# -- a query nobody waits for stops ---------------------------------------------------------
@pytest.mark.parametrize("sql", HEAVY)
def test_flight_deadline_stops_the_query_before_its_first_batch(srv: Running, sql: str) -> None:
    before = cancelled_total("client_gone")
    options = flight.FlightCallOptions(timeout=1.5)
    with pytest.raises(flight.FlightTimedOutError):
        srv.client.do_get(flight.Ticket(sql.encode()), options).read_all()
    assert_stopped(srv.lake)
    assert cancelled_total("client_gone") == before + 1
    assert srv.client.do_get(flight.Ticket(b"SELECT 1 AS ok")).read_all().to_pylist() == [{"ok": 1}]


@pytest.mark.parametrize("sql", HEAVY)
def test_adbc_cancel_stops_the_query_before_its_first_batch(srv: Running, sql: str) -> None:
    errors: list[BaseException] = []
    with dbapi.connect(srv.location, autocommit=True) as conn, conn.cursor() as cursor:

        def run() -> None:
            try:
                cursor.execute(sql)
                cursor.fetchall()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_until(lambda: srv.lake.engine.running_queries == 1, 10, what="the query to start")
        time.sleep(0.5)  # well inside DuckDB now
        cursor.adbc_cancel()
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert errors, "the cancelled query should fail on the client"
    assert "cancel" in str(errors[0]).lower()
    assert_stopped(srv.lake)


def test_http_client_hanging_up_stops_the_query(tmp_path: Path) -> None:
    settings = make_settings(str(tmp_path / "lake"), query_timeout=120)
    from flightlake.lake import Lake

    lake = Lake(settings)
    try:
        with http_server(lake, settings) as running:
            before = cancelled_total("client_gone")
            with (
                httpx.Client(base_url=running.url, timeout=1.5) as client,
                pytest.raises(httpx.ReadTimeout),
            ):
                client.post("/v1/sql", json={"sql": ENDLESS})
            # httpx closed the connection on the timeout: the server sees the disconnect
            assert_stopped(lake)
            assert cancelled_total("client_gone") == before + 1
            reply = running.client.post("/v1/sql", json={"sql": "SELECT 1 AS ok"})
            assert reply.json() == [{"ok": 1}]
    finally:
        lake.close()


def test_a_client_leaving_mid_stream_stops_the_query(srv: Running) -> None:
    reader = srv.client.do_get(flight.Ticket(ENDLESS_ROWS.encode()))
    assert reader.read_chunk().data.num_rows > 0
    reader.cancel()
    assert_stopped(srv.lake)


def test_an_http_client_leaving_mid_stream_stops_the_query(tmp_path: Path) -> None:
    from flightlake.lake import Lake

    settings = make_settings(str(tmp_path / "lake"), query_timeout=120)
    lake = Lake(settings)
    try:
        with http_server(lake, settings) as running:
            headers = {"accept": "application/vnd.apache.arrow.stream"}
            body = {"sql": ENDLESS_ROWS}
            with running.client.stream("POST", "/v1/sql", json=body, headers=headers) as reply:
                assert reply.status_code == 200
                assert next(reply.iter_bytes())
            assert_stopped(lake)
    finally:
        lake.close()


def test_query_timeout_stops_a_query_before_its_first_batch(tmp_path: Path) -> None:
    settings = make_settings(str(tmp_path / "lake"), query_timeout=1)
    with flight_server(settings) as running:
        before = cancelled_total("timeout")
        with pytest.raises(pa.ArrowInvalid, match=r"query_timeout \(1 s\)"):
            running.client.do_get(flight.Ticket(ENDLESS.encode())).read_all()
        assert_ended(running.lake)
        assert cancelled_total("timeout") == before + 1


def test_an_unread_result_frees_its_slot(tmp_path: Path) -> None:
    """A reader dropped without reading a batch ends its query (cursor and slot)."""
    from flightlake.lake import Lake

    lake = Lake(make_settings(str(tmp_path / "lake"), max_concurrent_queries=1))
    try:
        for _ in range(3):
            reader = lake.query("SELECT 1 AS x")
            assert lake.engine.active_queries == 1
            del reader
            assert_ended(lake)
    finally:
        lake.close()


# -- admission ------------------------------------------------------------------------------
def test_queries_past_the_limit_wait_then_fail_unavailable(tmp_path: Path) -> None:
    settings = make_settings(
        str(tmp_path / "lake"), max_concurrent_queries=1, query_queue_seconds=0.5
    )
    with flight_server(settings) as running:
        # takes the only slot until dropped (RecordBatchReader.close() keeps its source)
        held = [running.lake.query(ENDLESS_ROWS, 1000)]
        try:
            with pytest.raises(flight.FlightUnavailableError, match="max_concurrent_queries"):
                running.client.do_get(flight.Ticket(b"SELECT 1")).read_all()
            with http_server(running.lake, settings) as web:
                reply = web.client.post("/v1/sql", json={"sql": "SELECT 1"})
                assert reply.status_code == 503
                assert "max_concurrent_queries" in reply.json()["error"]
                assert int(reply.headers["retry-after"]) >= 1
        finally:
            held.clear()
        assert_ended(running.lake)
        assert running.client.do_get(flight.Ticket(b"SELECT 1 AS x")).read_all().num_rows == 1


def test_a_queued_query_runs_once_a_slot_frees(tmp_path: Path) -> None:
    settings = make_settings(str(tmp_path / "lake"), max_concurrent_queries=1)
    with flight_server(settings) as running:
        held = [running.lake.query(ENDLESS_ROWS, 1000)]
        timer = threading.Timer(0.5, held.clear)
        timer.start()
        try:
            table = running.client.do_get(flight.Ticket(b"SELECT 42 AS x")).read_all()
        finally:
            timer.join()
        assert table.to_pylist() == [{"x": 42}]


def test_a_queued_query_whose_client_leaves_stops_waiting(tmp_path: Path) -> None:
    settings = make_settings(
        str(tmp_path / "lake"), max_concurrent_queries=1, query_queue_seconds=60
    )
    with flight_server(settings) as running:
        held = [running.lake.query(ENDLESS_ROWS, 1000)]
        try:
            before = cancelled_total("client_gone")
            options = flight.FlightCallOptions(timeout=1)
            with pytest.raises(flight.FlightTimedOutError):
                running.client.do_get(flight.Ticket(b"SELECT 1"), options).read_all()
            engine = running.lake.engine
            wait_until(lambda: engine.queued_queries == 0, 5, what="the queued query to leave")
            assert cancelled_total("client_gone") == before + 1
        finally:
            held.clear()
        assert_ended(running.lake)


# -- memory ---------------------------------------------------------------------------------
def test_duckdb_out_of_memory_is_resource_exhausted(tmp_path: Path) -> None:
    settings = make_settings(str(tmp_path / "lake"), query_memory_limit="50MB")
    sql = "SELECT list(range) AS l FROM range(20000000)"
    with flight_server(settings) as running:
        with pytest.raises(pa.ArrowInvalid) as caught:
            running.client.do_get(flight.Ticket(sql.encode())).read_all()
        message = str(caught.value)
        assert message.startswith("resource exhausted: query ran out of memory")
        assert "query_memory_limit (50MB)" in message
        assert "Traceback" not in message.split(". Detail:")[0]
        assert_ended(running.lake)
        with http_server(running.lake, settings) as web:
            reply = web.client.post("/v1/sql", json={"sql": sql})
            assert reply.status_code == 507
            assert "memory" in reply.json()["error"]
            assert "query_memory_limit" in reply.json()["error"]
        assert running.client.do_get(flight.Ticket(b"SELECT 1 AS x")).read_all().num_rows == 1


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat('x', 30000000) AS s",
        "SELECT lpad('', 30000000, 'y') AS s",
        "SELECT range(4000000) AS l",
    ],
    ids=["repeat", "lpad", "list"],
)
def test_a_result_too_large_for_memory_is_resource_exhausted(tmp_path: Path, sql: str) -> None:
    """Values DuckDB's memory limit does not account for (one huge string or list) are
    caught by max_result_batch_bytes before they are sent."""
    settings = make_settings(str(tmp_path / "lake"), max_result_batch_bytes=8 << 20)
    with flight_server(settings) as running:
        with pytest.raises(pa.ArrowInvalid, match="max_result_batch_bytes") as caught:
            running.client.do_get(flight.Ticket(sql.encode())).read_all()
        assert "memory" in str(caught.value)
        assert_ended(running.lake)
        assert running.client.do_get(flight.Ticket(b"SELECT 1 AS x")).read_all().num_rows == 1


def test_server_memory_ceiling_interrupts_the_query_that_grows_it(tmp_path: Path) -> None:
    """Strings DuckDB's memory limit does not see: many 100 kB values, 100 GB in all, with
    the batch cap off. The watchdog interrupts the query once the process's resident memory
    passes the ceiling; the next query runs although the allocator still holds the pages."""
    from flightlake.admission import resident_bytes

    ceiling = resident_bytes() + (300 << 20)
    settings = make_settings(
        str(tmp_path / "lake"), max_result_batch_bytes=0, max_server_memory_bytes=ceiling
    )
    sql = "SELECT repeat('x', 100000) AS s FROM range(1000000)"
    with flight_server(settings) as running:
        with pytest.raises(pa.ArrowInvalid) as caught:
            running.client.do_get(flight.Ticket(sql.encode())).read_all()
        message = str(caught.value).split(". Detail:")[0]
        assert "protect the server's memory" in message
        assert "max_server_memory_bytes" in message
        assert resident_bytes() < ceiling + (2 << 30)  # stopped long before 100 GB
        for _ in range(3):
            table = running.client.do_get(flight.Ticket(b"SELECT 1 AS x")).read_all()
            assert table.num_rows == 1


# -- disk -----------------------------------------------------------------------------------
def put_csv(client: flight.FlightClient, name: str, body: bytes) -> dict[str, Any]:
    command = json.dumps({"ingest": name, "format": "csv"}).encode()
    table = pa.table({"data": pa.array([body], pa.binary())})
    writer, meta = client.do_put(flight.FlightDescriptor.for_command(command), table.schema)
    with writer:
        writer.write_table(table)
        writer.done_writing()
        result: dict[str, Any] = json.loads(meta.read().to_pybytes())
        return result


def put_arrow(client: flight.FlightClient, name: str, table: pa.Table) -> None:
    writer, meta = client.do_put(flight.FlightDescriptor.for_path(name), table.schema)
    with writer:
        writer.write_table(table)
        writer.done_writing()
        meta.read()


def test_ingest_refuses_to_fill_the_spool_disk(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # a floor larger than any disk: every spooled ingest must be refused
    settings = make_settings(
        str(tmp_path / "lake"), spool_dir=str(spool), min_free_spool_bytes=1 << 60
    )
    with flight_server(settings) as running:
        with pytest.raises(pa.ArrowInvalid) as caught:
            put_csv(running.client, "t", b"a,b\n1,2\n")
        message = str(caught.value).split(". Detail:")[0]
        assert "not enough free space on the ingest spool disk" in message
        assert "min_free_spool_bytes" in message
        assert str(tmp_path) not in message
        assert list(spool.iterdir()) == []  # the spool file was removed
        assert list(running.lake.storage.list("data")) == []
        with http_server(running.lake, settings) as web:
            files = {"file": ("t.parquet", b"PAR1", "application/octet-stream")}
            reply = web.client.post("/v1/ingest?name=t", files=files)
            assert reply.status_code == 507
            assert "ingest spool disk" in reply.json()["error"]
            assert str(tmp_path) not in reply.json()["error"]
        assert list(spool.iterdir()) == []
        with pytest.raises(KeyError):
            running.client.get_flight_info(flight.FlightDescriptor.for_path("t"))


def test_ingest_refuses_to_fill_the_local_storage_disk(tmp_path: Path) -> None:
    settings = make_settings(str(tmp_path / "lake"), min_free_storage_bytes=1 << 60)
    table = pa.table({"id": pa.array(range(1000), pa.int64())})
    with flight_server(settings) as running:
        with pytest.raises(pa.ArrowInvalid) as caught:
            put_arrow(running.client, "t", table)
        message = str(caught.value).split(". Detail:")[0]
        assert "not enough free space on the storage disk" in message
        assert "min_free_storage_bytes" in message
        assert str(tmp_path) not in message
        assert list(running.lake.storage.list("data")) == []
        with pytest.raises(KeyError):
            running.client.get_flight_info(flight.FlightDescriptor.for_path("t"))


def test_timeout_message_names_the_setting(tmp_path: Path) -> None:
    from flightlake.lake import Lake

    lake = Lake(make_settings(str(tmp_path / "lake"), query_timeout=0.5))
    try:
        with pytest.raises(QueryError, match="query_timeout"):
            lake.query(CROSS).read_all()
    finally:
        lake.close()
