"""The plain Arrow Flight contract of DESIGN.md, with a real pyarrow.flight client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.helpers import wait_until
from tests.servers import Running, flight_server, kill_client_mid_put, make_settings


@pytest.fixture
def srv(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Running]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    with flight_server(make_settings(storage_url, s3)) as running:
        yield running


def put(client: flight.FlightClient, descriptor: flight.FlightDescriptor, table: pa.Table) -> dict:
    writer, meta = client.do_put(descriptor, table.schema)
    with writer:
        writer.write_table(table, max_chunksize=1000)
        writer.done_writing()
        answer = meta.read()
    return json.loads(answer.to_pybytes())


def put_csv(
    client: flight.FlightClient, name: str, body: bytes, mode: str = "append", chunk: int = 5
) -> dict:
    command = json.dumps({"ingest": name, "format": "csv", "mode": mode}).encode()
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    table = pa.table({"data": pa.array(chunks, pa.binary())})
    return put(client, flight.FlightDescriptor.for_command(command), table)


def sql(client: flight.FlightClient, query: str) -> pa.Table:
    return client.do_get(flight.Ticket(query.encode())).read_all()


def people(n: int) -> pa.Table:
    return pa.table({"id": list(range(n)), "state": ["IL" if i % 2 else "CA" for i in range(n)]})


def test_do_put_path_appends_and_answers_json(srv: Running) -> None:
    answer = put(srv.client, flight.FlightDescriptor.for_path("people"), people(2500))
    assert answer == {"dataset": "people", "rows_written": 2500, "version": 0}
    answer = put(srv.client, flight.FlightDescriptor.for_path("people"), people(10))
    assert answer == {"dataset": "people", "rows_written": 10, "version": 1}
    assert sql(srv.client, "SELECT count(*) AS c FROM people").to_pylist() == [{"c": 2510}]


def test_do_put_csv_command_infers_schema(srv: Running) -> None:
    answer = put_csv(srv.client, "w", b"id,rate,state\n1,10.5,IL\n2,11.0,CA\n3,,IL\n")
    assert answer["rows_written"] == 3
    table = sql(srv.client, "SELECT state, sum(rate) AS r FROM w GROUP BY state ORDER BY state")
    assert table.to_pylist() == [{"state": "CA", "r": 11.0}, {"state": "IL", "r": 10.5}]


def test_do_put_modes(srv: Running) -> None:
    put_csv(srv.client, "m", b"a\n1\n")
    put_csv(srv.client, "m", b"a\n2\n", mode="overwrite")
    assert sql(srv.client, "SELECT a FROM m").to_pylist() == [{"a": 2}]
    with pytest.raises(pa.ArrowInvalid, match=r"conflict.*already exists"):  # INVALID_ARGUMENT
        put_csv(srv.client, "m", b"a\n3\n", mode="create")


def test_list_flights_and_get_flight_info(srv: Running) -> None:
    put(srv.client, flight.FlightDescriptor.for_path("alpha"), people(7))
    put(srv.client, flight.FlightDescriptor.for_path("beta"), people(3))
    infos = {tuple(i.descriptor.path): i for i in srv.client.list_flights()}
    assert set(infos) == {(b"alpha",), (b"beta",)}
    alpha = infos[(b"alpha",)]
    assert alpha.total_records == 7
    assert alpha.total_bytes > 0
    assert alpha.schema.names == ["id", "state"]
    one = srv.client.get_flight_info(flight.FlightDescriptor.for_path("alpha"))
    assert one.total_records == 7
    data = srv.client.do_get(one.endpoints[0].ticket).read_all()
    assert data.num_rows == 7
    assert data.schema.names == ["id", "state"]


def test_get_flight_info_for_sql_command(srv: Running) -> None:
    put(srv.client, flight.FlightDescriptor.for_path("p"), people(100))
    query = "SELECT state, count(*) AS n FROM p GROUP BY state ORDER BY state"
    info = srv.client.get_flight_info(flight.FlightDescriptor.for_command(query.encode()))
    assert info.schema.names == ["state", "n"]
    result = srv.client.do_get(info.endpoints[0].ticket).read_all()
    assert result.to_pylist() == [{"state": "CA", "n": 50}, {"state": "IL", "n": 50}]
    schema = srv.client.get_schema(flight.FlightDescriptor.for_command(query.encode())).schema
    assert schema.names == ["state", "n"]


def test_large_result_streams_in_batches(srv: Running) -> None:
    n = 300_000
    put(
        srv.client,
        flight.FlightDescriptor.for_path("big"),
        pa.table({"x": pa.array(range(n), pa.int64())}),
    )
    reader = srv.client.do_get(flight.Ticket(b"SELECT x FROM big"))
    sizes = [chunk.data.num_rows for chunk in reader]
    assert sum(sizes) == n
    assert len(sizes) > 1
    assert max(sizes) <= srv.lake.settings.batch_rows


def test_error_codes(srv: Running) -> None:
    c = srv.client
    with pytest.raises(KeyError):  # NOT_FOUND
        c.get_flight_info(flight.FlightDescriptor.for_path("nope"))
    with pytest.raises(KeyError):
        sql(c, "SELECT * FROM nope")
    with pytest.raises(pa.ArrowInvalid, match="Parser Error"):  # INVALID_ARGUMENT
        sql(c, "SELEKT 1")
    with pytest.raises(pa.ArrowInvalid, match="only SELECT"):
        sql(c, "COPY (SELECT 1) TO 'x.csv'")
    with pytest.raises(pa.ArrowInvalid, match="not valid JSON"):
        put(c, flight.FlightDescriptor.for_command(b"{nope"), people(1))
    with pytest.raises(pa.ArrowInvalid, match="unknown format"):
        put(c, flight.FlightDescriptor.for_command(b'{"ingest": "x", "format": "xml"}'), people(1))
    with pytest.raises(pa.ArrowInvalid, match="one binary column"):
        put(c, flight.FlightDescriptor.for_command(b'{"ingest": "x", "format": "csv"}'), people(1))
    with pytest.raises(pa.ArrowInvalid, match=r"'\.\.'"):
        put(c, flight.FlightDescriptor.for_path("../etc"), people(1))
    with pytest.raises(pa.ArrowInvalid, match="ticket is empty"):
        c.do_get(flight.Ticket(b" ")).read_all()
    with pytest.raises(KeyError):
        list(c.do_action(flight.Action("drop", b"nope")))
    with pytest.raises(pa.ArrowNotImplementedError, match="unknown action"):
        list(c.do_action(flight.Action("explode", b"")))
    # and the server keeps serving
    assert sql(c, "SELECT 42 AS x").to_pylist() == [{"x": 42}]


def test_overloaded_ingest_is_unavailable(srv: Running) -> None:
    slots = [srv.lake.ingest_slot(str(i)) for i in range(srv.lake.settings.max_concurrent_ingests)]
    for s in slots:
        s.__enter__()
    try:
        with pytest.raises(flight.FlightUnavailableError, match="busy"):
            put(srv.client, flight.FlightDescriptor.for_path("x"), people(1))
    finally:
        for s in slots:
            s.__exit__(None, None, None)


def test_actions_health_list_drop(srv: Running) -> None:
    names = {a.type for a in srv.client.list_actions()}
    assert {"health", "drop", "list", "gc"} <= names
    health = json.loads(next(srv.client.do_action(flight.Action("health", b""))).body.to_pybytes())
    assert health["status"] == "ok"
    put(srv.client, flight.FlightDescriptor.for_path("d"), people(1))
    listed = json.loads(next(srv.client.do_action(flight.Action("list", b""))).body.to_pybytes())
    assert [m["name"] for m in listed] == ["d"]
    assert set(listed[0]) >= {
        "dataset_id",
        "name",
        "schema_fingerprint",
        "objects",
        "row_count",
        "created_at",
        "updated_at",
    }
    list(srv.client.do_action(flight.Action("drop", b"d")))
    assert list(srv.client.list_flights()) == []
    with pytest.raises(KeyError):
        sql(srv.client, "SELECT * FROM d")


def test_client_killed_mid_put_commits_nothing(srv: Running) -> None:
    kill_client_mid_put(srv.location, "cut")
    wait_until(lambda: srv.lake.active_ingests == 0, timeout=30, what="the ingest to end")
    with pytest.raises(KeyError):
        srv.client.get_flight_info(flight.FlightDescriptor.for_path("cut"))
    assert list(srv.lake.storage.list("data")) == []


def test_flight_info_schema_is_what_do_get_streams(srv: Running) -> None:
    """Regression: a large_string column was advertised as large_string and streamed as
    string, which strict clients (ADBC) reject."""
    table = pa.table(
        {
            "s": pa.array(["a", "b"], pa.large_string()),
            "d": pa.array(["x", "y"]).dictionary_encode(),
        }
    )
    put(srv.client, flight.FlightDescriptor.for_path("typed"), table)
    info = srv.client.get_flight_info(flight.FlightDescriptor.for_path("typed"))
    streamed = srv.client.do_get(info.endpoints[0].ticket).read_all()
    assert info.schema == streamed.schema
    listed = next(iter(srv.client.list_flights()))
    assert listed.schema == streamed.schema


def test_versions_compact_and_time_travel_over_flight(srv: Running) -> None:
    descriptor = flight.FlightDescriptor.for_path("tv")
    for _ in range(3):
        put(srv.client, descriptor, people(2))

    def action(kind: str, body: bytes) -> object:
        return json.loads(next(srv.client.do_action(flight.Action(kind, body))).body.to_pybytes())

    listed = action("versions", b"tv")
    assert [(v["version"], v["rows_added"], v["rows_total"]) for v in listed] == [  # type: ignore[index]
        (2, 2, 6),
        (1, 2, 4),
        (0, 2, 2),
    ]
    report = action("compact", b"tv")
    assert report == {"dataset": "tv", "version": 3, "files_before": 3, "files_after": 1}
    assert sql(srv.client, "SELECT count(*) AS n FROM tv AT (VERSION => 1)").to_pylist() == [
        {"n": 4}
    ]
    assert sql(srv.client, "SELECT count(*) AS n FROM tv").to_pylist() == [{"n": 6}]
    with pytest.raises(pa.ArrowKeyError, match="no version 9"):
        sql(srv.client, "SELECT * FROM tv AT (VERSION => 9)")
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        action("versions", b"nope")
