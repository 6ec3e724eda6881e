"""Errors read like messages: every Flight and Flight SQL error names the problem once, with
the right gRPC code, no traceback and no server path (storage root, temp folders). The
server's own log keeps the full traceback. Checked with pyarrow.flight and the real ADBC
driver; also the Flight SQL message for unbound placeholders."""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake import observe
from flightlake.flight import flightsql_pb as pb
from flightlake.secrets import Principal
from tests.http_helpers import http_server
from tests.servers import Running, flight_server, make_settings

TOKEN = "errors-read-token-0123456789"
PARAMS_SQL = "SELECT CAST(? AS VARCHAR) AS a WHERE CAST(? AS VARCHAR) IS NOT NULL"


@pytest.fixture
def srv(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Running]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    with flight_server(make_settings(storage_url, s3, max_concurrent_ingests=1)) as running:
        table = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "x"]})
        running.lake.ingest_arrow("t", table.schema, table.to_batches(), "create")
        yield running


def _put(client: flight.FlightClient, name: str, table: pa.Table, mode: str = "append") -> None:
    command = json.dumps({"ingest": name, "format": "arrow", "mode": mode})
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), table.schema)
    writer.write_table(table)
    writer.done_writing()
    reader.read()
    writer.close()


def _run(location: str, sql: str, params: tuple[Any, ...] | None = None) -> list[Any]:
    """Execute ``sql`` through the ADBC driver and fetch every row."""
    with dbapi.connect(location, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _server_part(message: str) -> str:
    """What the server sent: pyarrow's client appends its own debug context to stream errors."""
    return message.split(". gRPC client debug context")[0]


def assert_clean(message: str, srv: Running, *, says: str) -> None:
    """One statement of the problem, no traceback, no source or server path."""
    sent = _server_part(message)
    assert says in sent, sent
    assert sent.count(says) == 1, f"named more than once: {sent!r}"
    for leak in ("Traceback", 'File "', ".py", tempfile.gettempdir() + "/"):
        assert leak not in sent, f"{leak!r} in {sent!r}"
    root = srv.lake.storage.root_url
    assert root not in sent, sent
    assert root.removeprefix("s3://") not in sent, sent


def _flightsql_action(kind: str, body: bytes = b"") -> flight.Action:
    return flight.Action(kind, body)


def _flight_cases(srv: Running) -> list[tuple[str, type[Exception], str, Callable[[], Any]]]:
    client = srv.client
    wrong = pa.table({"other": ["x"]})
    return [
        ("unknown dataset", pa.ArrowKeyError, "dataset 'nope' not found",
         lambda: client.do_get(flight.Ticket(b"SELECT * FROM nope")).read_all()),
        ("unknown path", pa.ArrowKeyError, "'nope' not found",
         lambda: client.get_flight_info(flight.FlightDescriptor.for_path("nope"))),
        ("drop unknown", pa.ArrowKeyError, "'nope' not found",
         lambda: list(client.do_action(flight.Action("drop", b"nope")))),
        ("bad SQL", pa.ArrowInvalid, "syntax error",
         lambda: client.do_get(flight.Ticket(b"SELEC 1")).read_all()),
        ("error mid-stream", pa.ArrowInvalid, "Could not convert string",
         lambda: client.do_get(
             flight.Ticket(b"SELECT CAST(s AS INT) AS n FROM t ORDER BY id")
         ).read_all()),
        ("write statement", pa.ArrowInvalid, "only SELECT",
         lambda: client.do_get(flight.Ticket(b"DROP TABLE t")).read_all()),
        ("unknown action", pa.ArrowNotImplementedError, "unknown action 'nope'",
         lambda: list(client.do_action(flight.Action("nope", b"")))),
        ("schema conflict", pa.ArrowInvalid, "schema conflict",
         lambda: _put(client, "t", wrong)),
        ("exists (mode=create)", pa.ArrowInvalid, "'t' already exists",
         lambda: _put(client, "t", pa.table({"id": [9], "s": ["z"]}), mode="create")),
        ("refused type", pa.ArrowInvalid, "column 'h' has type halffloat",
         lambda: _put(client, "h", pa.table({"h": pa.array([1.0], pa.float16())}))),
        ("bad command", pa.ArrowInvalid, "JSON",
         lambda: client.get_flight_info(flight.FlightDescriptor.for_command(b"{nope"))),
        ("unsupported Flight SQL", pa.ArrowNotImplementedError, "transactions are not supported",
         lambda: list(client.do_action(flight.Action("BeginTransaction", b"")))),
        ("unknown prepared statement", pa.ArrowKeyError, "unknown or closed prepared statement",
         lambda: client.do_get(flight.Ticket(pb.pack(
             pb.CommandPreparedStatementQuery(prepared_statement_handle=b"gone")
         ))).read_all()),
    ]  # fmt: skip


def test_every_flight_error_is_one_clean_message(srv: Running) -> None:
    for what, code, says, call in _flight_cases(srv):
        with pytest.raises(code) as raised:
            call()
        assert_clean(str(raised.value), srv, says=says)
        assert what


def test_busy_server_is_unavailable_without_traceback(srv: Running) -> None:
    with srv.lake.ingest_slot("someone"), pytest.raises(flight.FlightUnavailableError) as raised:
        _put(srv.client, "t", pa.table({"id": [9], "s": ["z"]}))
    assert_clean(str(raised.value), srv, says="ingest slots are busy")


def test_adbc_busy_and_existing_are_clean(srv: Running) -> None:
    table = pa.table({"id": [9], "s": ["z"]})
    with (
        dbapi.connect(srv.location, autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        with srv.lake.ingest_slot("someone"), pytest.raises(adbc_driver_manager.Error) as busy:
            cur.adbc_ingest("t", table, mode="append")
        assert "(Unavailable; " in str(busy.value), busy.value  # ADBC: IO status, gRPC code
        assert_clean(str(busy.value), srv, says="ingest slots are busy")
        with pytest.raises(adbc_driver_manager.Error) as exists:
            cur.adbc_ingest("t", table, mode="create")
        assert_clean(str(exists.value), srv, says="'t' already exists")


def test_a_missing_object_never_shows_its_path(srv: Running) -> None:
    """DuckDB's I/O errors name the Parquet object; the client reads no server path."""
    key = srv.lake.dataset("t").objects[0]
    srv.lake.storage.delete([key])
    with pytest.raises((flight.FlightError, pa.ArrowException)) as raised:
        srv.client.do_get(flight.Ticket(b"SELECT * FROM t")).read_all()
    sent = _server_part(str(raised.value))
    assert "<server path>" in sent, sent
    assert_clean(sent, srv, says="<server path>")
    with pytest.raises(adbc_driver_manager.Error) as adbc_raised:
        _run(srv.location, "SELECT * FROM t")
    assert_clean(str(adbc_raised.value), srv, says="<server path>")
    with http_server(srv.lake, srv.lake.settings) as http:
        answer = http.client.post("/v1/sql", json={"sql": "SELECT * FROM t"})
    assert answer.status_code >= 400
    assert_clean(answer.json()["error"], srv, says="<server path>")


def test_internal_errors_say_internal_and_the_log_keeps_the_traceback(
    srv: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: a catalog listing that raises KeyError) reaches the client as INTERNAL
    with no detail; the server log keeps the whole traceback."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("/secret/place")

    monkeypatch.setattr(srv.lake, "datasets", broken)
    with (
        caplog.at_level(logging.ERROR, "flightlake.flight"),
        pytest.raises(flight.FlightInternalError) as raised,
    ):
        list(srv.client.list_flights())
    assert_clean(str(raised.value), srv, says="internal error: KeyError")
    assert "/secret/place" not in str(raised.value)
    record = next(r for r in caplog.records if r.exc_info)
    logged = observe.FullTracebacks().format(record)
    assert "Traceback (most recent call last)" in logged
    assert 'File "' in logged
    assert "/secret/place" in logged


def test_adbc_errors_are_clean_with_the_right_code(srv: Running) -> None:
    cases = [
        ("SELECT * FROM nope", "NOT_FOUND", "dataset 'nope' not found"),
        ("SELEC 1", "INVALID_ARGUMENT", "syntax error"),
        ("DROP TABLE t", "INVALID_ARGUMENT", "only SELECT"),
        ("SELECT CAST(s AS INT) FROM t", "INVALID_ARGUMENT", "Could not convert string"),
        (
            PARAMS_SQL,
            "INVALID_ARGUMENT",
            "the statement has 2 parameters ($1, $2) but none were bound",
        ),
    ]
    for sql, code, says in cases:
        with pytest.raises(adbc_driver_manager.Error) as raised:
            _run(srv.location, sql)
        message = str(raised.value)
        assert message.startswith(f"{code}: "), message
        assert_clean(message, srv, says=says)
    with (
        dbapi.connect(srv.location, autocommit=True) as conn,
        conn.cursor() as cur,
        pytest.raises(adbc_driver_manager.Error) as raised,
    ):
        cur.adbc_ingest("t", pa.table({"other": ["x"]}), mode="append")
    assert_clean(str(raised.value), srv, says="schema conflict")


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ((), "the statement has 2 parameters ($1, $2) but none were bound"),
        (("x",), "the statement has 2 parameters ($1, $2) but 1 was bound: $2 is missing"),
    ],
)
def test_adbc_names_the_missing_parameters(
    srv: Running, params: tuple[str, ...], says: str
) -> None:
    with pytest.raises(adbc_driver_manager.Error) as raised:
        _run(srv.location, PARAMS_SQL, params or None)
    assert_clean(str(raised.value), srv, says=says)
    assert "Unexpected prepared parameter" not in str(raised.value)


def test_parameters_all_bound_run(srv: Running) -> None:
    assert _run(srv.location, PARAMS_SQL, ("x", "y")) == [("x",)]
    assert _run(srv.location, "SELECT $2::INT - $1::INT AS n", (1, 3)) == [(2,)]


def test_plain_ticket_names_missing_parameters_the_same_way(srv: Running) -> None:
    with pytest.raises(pa.ArrowInvalid) as raised:
        srv.client.do_get(flight.Ticket(PARAMS_SQL.encode())).read_all()
    assert_clean(str(raised.value), srv, says="but none were bound")


def test_auth_errors_are_clean(tmp_path: Path) -> None:
    settings = make_settings(
        str(tmp_path / "lake"), principals=(Principal("reader", "read", token=TOKEN),)
    )
    with flight_server(settings) as running:
        with pytest.raises(flight.FlightUnauthenticatedError) as raised:
            list(running.client.list_flights())
        assert_clean(str(raised.value), running, says="token")
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
        with pytest.raises(flight.FlightUnauthorizedError) as denied:
            list(running.client.do_action(flight.Action("gc", b""), options))
        assert_clean(str(denied.value), running, says="write")
        assert re.search(r"role", str(denied.value))
        with pytest.raises(adbc_driver_manager.Error) as adbc_raised:
            _run(running.location, "SELECT 1")
        assert str(adbc_raised.value).startswith("UNAUTHENTICATED: "), adbc_raised.value
        assert_clean(str(adbc_raised.value), running, says="token")
