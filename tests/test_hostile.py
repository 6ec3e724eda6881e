"""Hostile and odd input over the real Flight front end: each case ends in a clear error
naming the problem, or a correct ingest — never a crash, a partial commit or a leftover
object — and the server keeps serving afterwards."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.helpers import wait_until
from tests.servers import Running, flight_server, make_settings


@pytest.fixture
def srv(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Running]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    with flight_server(make_settings(storage_url, s3)) as running:
        yield running


def put_csv(client: flight.FlightClient, name: str, body: bytes, chunk: int = 1 << 20) -> dict:
    command = json.dumps({"ingest": name, "format": "csv"}).encode()
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    table = pa.table({"data": pa.array(pieces, pa.binary())})
    writer, meta = client.do_put(flight.FlightDescriptor.for_command(command), table.schema)
    with writer:
        writer.write_table(table)
        writer.done_writing()
        return json.loads(meta.read().to_pybytes())


def put_command(client: flight.FlightClient, command: bytes, table: pa.Table) -> None:
    writer, meta = client.do_put(flight.FlightDescriptor.for_command(command), table.schema)
    with writer:
        writer.write_table(table)
        writer.done_writing()
        meta.read()


def rows(client: flight.FlightClient, sql: str) -> list[dict]:
    return client.do_get(flight.Ticket(sql.encode())).read_all().to_pylist()


def assert_clean(srv: Running, name: str) -> None:
    """Nothing committed, nothing left in the store, and the server still answers."""
    with pytest.raises(KeyError):
        srv.client.get_flight_info(flight.FlightDescriptor.for_path(name))
    assert list(srv.lake.storage.list("data")) == []
    assert rows(srv.client, "SELECT 1 AS ok") == [{"ok": 1}]


garbage = bytes(random.Random(7).getrandbits(8) for _ in range(50_000))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "CSV is empty"),
        (b"a,b\n1,2\n3\n", "line 3 has 1 fields, the header has 2"),
        (b"a,b\n1,\xc3\x28\n", "not valid UTF-8"),
        (garbage, "CSV"),
        (b"a,b,a\n1,2,3\n", "duplicate column names: a"),
        (b"a,,b\n1,2,3\n", "column 2 has an empty name"),
        (b'a,b\n1,"unterminated\n2,3\n', "CSV"),
    ],
    ids=[
        "empty",
        "ragged",
        "bad-utf8",
        "binary-garbage",
        "dup-columns",
        "empty-column",
        "open-quote",
    ],
)
def test_bad_csv_is_refused_cleanly(srv: Running, body: bytes, message: str) -> None:
    with pytest.raises(pa.ArrowInvalid, match=message):
        put_csv(srv.client, "bad", body)
    assert_clean(srv, "bad")


def test_odd_but_valid_csv_ingests_correctly(srv: Running) -> None:
    body = (
        "\ufeffid,note,when,amount\r\n"
        '1,"multi\r\nline",2024-01-02,1\r\n'
        '2,"comma, and ""quotes""",2024-01-03,2\r\n'
    ).encode() + b"".join(b"%d,plain,2024-01-04,%d\r\n" % (i, i) for i in range(3, 100_000))
    body += b"100000,late,2024-01-05,2.5\r\n"  # contradicts the sampled int64 far from the top
    answer = put_csv(srv.client, "odd", body, chunk=777)
    assert answer["rows_written"] == 100_000
    info = srv.client.get_flight_info(flight.FlightDescriptor.for_path("odd"))
    assert info.schema.names == ["id", "note", "when", "amount"]
    assert str(info.schema.field("amount").type) == "double"
    assert rows(srv.client, "SELECT note FROM odd WHERE id <= 2 ORDER BY id") == [
        {"note": "multi\r\nline"},
        {"note": 'comma, and "quotes"'},
    ]
    assert rows(srv.client, "SELECT sum(amount) AS s FROM odd") == [
        {"s": sum(range(1, 100_000)) + 2.5}
    ]


def test_header_only_csv_is_an_empty_dataset(srv: Running) -> None:
    assert put_csv(srv.client, "hdr", b"a,b\n")["rows_written"] == 0
    assert rows(srv.client, "SELECT count(*) AS n FROM hdr") == [{"n": 0}]


def test_a_20_mb_field_ingests(srv: Running) -> None:
    body = b"id,blob\n1," + b"x" * (20 << 20) + b"\n2,small\n"
    assert put_csv(srv.client, "wide", body)["rows_written"] == 2
    assert rows(srv.client, "SELECT id, length(blob) AS n FROM wide ORDER BY id") == [
        {"id": 1, "n": 20 << 20},
        {"id": 2, "n": 5},
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../up", "'..'"),
        ("a/b", "'/'"),
        ("nul\x00", "NUL"),
        ("cr\rlf", "CR, LF or TAB"),
        ("x" * 1100, "longer than 1024"),
        ("sp ace", "invalid dataset name"),
    ],
)
def test_bad_dataset_names_over_flight(srv: Running, name: str, problem: str) -> None:
    command = json.dumps({"ingest": name, "format": "csv"}).encode()
    table = pa.table({"data": pa.array([b"a\n1\n"], pa.binary())})
    with pytest.raises(pa.ArrowInvalid, match=problem):
        put_command(srv.client, command, table)
    assert list(srv.lake.storage.list("data")) == []
    assert list(srv.lake.storage.list("_catalog")) == []  # nor a 0.1-style manifest


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"ingest": 5}', '"ingest"'),
        (b'{"ingest": "x", "mode": "upsert"}', "unknown ingest mode"),
        (b'{"ingest": "x", "extra": 1}', "unknown do_put command fields: extra"),
    ],
)
def test_malformed_put_commands(srv: Running, command: bytes, message: str) -> None:
    table = pa.table({"a": [1]})
    with pytest.raises(pa.ArrowInvalid, match=message):
        put_command(srv.client, command, table)
    assert rows(srv.client, "SELECT 2 AS ok") == [{"ok": 2}]


@pytest.mark.parametrize(
    ("ticket", "message"),
    [
        (b"\xff\xfe\xfd", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b'{"neither": 1}', '"sql" or "dataset"'),
        (b'{"dataset": "../x"}', "'..'"),
        (b"SELECT 1; DROP TABLE x", "exactly one"),
    ],
)
def test_malformed_tickets(srv: Running, ticket: bytes, message: str) -> None:
    with pytest.raises(pa.ArrowInvalid, match=message):
        srv.client.do_get(flight.Ticket(ticket)).read_all()
    assert rows(srv.client, "SELECT 3 AS ok") == [{"ok": 3}]


def test_client_cancelling_a_query_stops_it(srv: Running) -> None:
    reader = srv.client.do_get(flight.Ticket(b"SELECT range AS x FROM range(100000000000)"))
    assert reader.read_chunk().data.num_rows > 0
    wait_until(lambda: srv.lake.engine.active_queries == 1, timeout=10, what="query running")
    reader.cancel()
    wait_until(
        lambda: srv.lake.engine.active_queries == 0, timeout=30, what="the cancelled query to stop"
    )
    assert rows(srv.client, "SELECT 4 AS ok") == [{"ok": 4}]
