"""Flight SQL on the Flight port, through the stock ADBC driver, polars and pandas.

Most tests run against a server whose lake is on local disk and on SeaweedFS S3
(``storage_url``); the protocol details no client library exposes (SqlInfo values, XDBC
types, refusals) are checked with a bare ``pyarrow.flight`` client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from flightlake.flight import flightsql
from flightlake.flight import flightsql_pb as pb
from flightlake.flight.flightsql import CATALOG, DB_SCHEMA
from flightlake.flight.flightsql_meta import SQL_INFO_SCHEMA
from scripts.gen_workers import il_role_counts, write_workers_csv
from tests.servers import Running, flight_server, make_settings

ROWS = 3000
IL_BY_ROLE = "SELECT role, count(*) AS n FROM workers WHERE state = ? GROUP BY role ORDER BY role"


@pytest.fixture(scope="module")
def workers_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_workers_csv(tmp_path_factory.mktemp("flightsql") / "workers.csv", ROWS)


@pytest.fixture
def srv(storage_url: str, workers_csv: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """A server over a lake (local or S3) holding the ``workers`` dataset."""
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    with flight_server(make_settings(storage_url, s3)) as running:
        running.lake.ingest_csv_file("workers", workers_csv, "create")
        yield running


@pytest.fixture
def local_srv(tmp_path: Path) -> Iterator[Running]:
    """A server over an empty local lake, for protocol-level checks."""
    with flight_server(make_settings(str(tmp_path / "lake"))) as running:
        yield running


@pytest.fixture
def conn(srv: Running) -> Iterator[dbapi.Connection]:
    # autocommit=True: the server has no transactions, so the DB-API default (off) cannot
    # be honoured and ADBC would warn.
    with dbapi.connect(srv.location, autocommit=True) as connection:
        yield connection


def flightsql_info(client: flight.FlightClient, message: Message) -> flight.FlightInfo:
    return client.get_flight_info(flight.FlightDescriptor.for_command(pb.pack(message)))


def fetch(client: flight.FlightClient, info: flight.FlightInfo) -> pa.Table:
    return pa.concat_tables(
        [client.do_get(endpoint.ticket).read_all() for endpoint in info.endpoints]
    )


# -- queries ----------------------------------------------------------------------------------
def test_execute_fetchall_and_fetch_arrow_table(srv: Running, conn: dbapi.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM workers")
        assert cur.fetchall() == [(ROWS,)]
        cur.execute("SELECT * FROM workers ORDER BY worker_id")
        table = cur.fetch_arrow_table()
    expected = srv.lake.query("SELECT * FROM workers ORDER BY worker_id").read_all()
    assert table.num_rows == ROWS
    assert table.schema == expected.schema
    assert table.equals(expected)


def test_parameters_bind_by_position(conn: dbapi.Connection, workers_csv: Path) -> None:
    with conn.cursor() as cur:
        cur.execute(IL_BY_ROLE, ["IL"])
        assert dict(cur.fetchall()) == il_role_counts(workers_csv)
        # The same prepared statement with new values.
        cur.execute(IL_BY_ROLE, ["no such state"])
        assert cur.fetchall() == []
        cur.execute("SELECT count(*) FROM workers WHERE worker_id <= ? AND state <> $2", [10, "IL"])
        (count,) = cur.fetchone()
        assert 0 < count <= 10


def test_parameters_are_bound_not_pasted(conn: dbapi.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM workers WHERE state = ?", ["IL' OR '1'='1"])
        assert cur.fetchall() == [(0,)]


def test_every_parameter_set_runs(conn: dbapi.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT ?::BIGINT * 2 AS doubled", pa.record_batch({"0": [1, 2, 3]}))
        assert cur.fetchall() == [(2,), (4,), (6,)]


def test_parameter_sets_are_bounded(
    conn: dbapi.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flightsql, "MAX_PARAM_SETS", 2)
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error, match="more than 2"):
        cur.execute("SELECT ?::BIGINT AS x", pa.record_batch({"0": [1, 2, 3]}))


def test_prepared_statements_are_closed_with_the_cursor(
    srv: Running, conn: dbapi.Connection
) -> None:
    assert srv.server.sql is not None
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()
        assert srv.server.sql.open_prepared == 1
    assert srv.server.sql.open_prepared == 0


def test_a_reused_statement_sees_a_replaced_dataset(srv: Running, conn: dbapi.Connection) -> None:
    """Regression: the schema a prepared statement reports is resolved at each execution."""
    srv.lake.ingest_arrow(
        "shifty", pa.schema([("a", pa.int64())]), [pa.record_batch({"a": [1]})], "create"
    )
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM shifty")  # prepared once, re-executed below
        assert cur.fetchall() == [(1,)]
        srv.lake.ingest_arrow(
            "shifty",
            pa.schema([("b", pa.string()), ("c", pa.float64())]),
            [pa.record_batch({"b": ["x"], "c": [2.5]})],
            "overwrite",
        )
        cur.execute("SELECT * FROM shifty")
        assert cur.fetch_arrow_table().to_pylist() == [{"b": "x", "c": 2.5}]


def test_bad_sql_is_a_clear_error(conn: dbapi.Connection) -> None:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        cur.execute("SELEC * FROM workers")
    assert "INVALID_ARGUMENT" in str(err.value)
    assert "syntax error" in str(err.value)


def test_unknown_table_is_an_error(conn: dbapi.Connection) -> None:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute("SELECT * FROM nope")
    assert "nope" in str(err.value)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE t (x INTEGER)",
        "INSERT INTO workers (worker_id) VALUES (1)",
        "DROP VIEW workers",
    ],
)
def test_write_statements_point_at_ingest(conn: dbapi.Connection, statement: str) -> None:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        cur.execute(statement)
    assert "read-only" in str(err.value)
    assert "ingest" in str(err.value)


# -- catalog ----------------------------------------------------------------------------------
def test_get_objects(conn: dbapi.Connection, srv: Running) -> None:
    srv.lake.ingest_arrow(
        "other", pa.schema([("x", pa.int64())]), [pa.record_batch({"x": [1]})], "create"
    )
    objects = conn.adbc_get_objects().read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == [CATALOG]
    (schema,) = objects[0]["catalog_db_schemas"]
    assert schema["db_schema_name"] == DB_SCHEMA
    tables = {t["table_name"]: t for t in schema["db_schema_tables"]}
    assert set(tables) == {"workers", "other"}
    assert {t["table_type"] for t in tables.values()} == {"TABLE"}
    columns = [c["column_name"] for c in tables["workers"]["table_columns"]]
    assert columns == srv.lake.dataset("workers").schema.names

    filtered = conn.adbc_get_objects(depth="tables", table_name_filter="wor%").read_all()
    names = [
        t["table_name"]
        for t in filtered.to_pylist()[0]["catalog_db_schemas"][0]["db_schema_tables"]
    ]
    assert names == ["workers"]
    assert conn.adbc_get_objects(depth="catalogs").read_all()["catalog_name"].to_pylist() == [
        CATALOG
    ]


def test_get_table_schema_matches_query_results(conn: dbapi.Connection) -> None:
    schema = conn.adbc_get_table_schema("workers")
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM workers LIMIT 1")
        assert cur.fetch_arrow_table().schema == schema
    assert conn.adbc_get_table_schema("workers", db_schema_filter=DB_SCHEMA) == schema
    with pytest.raises(adbc_driver_manager.Error):
        conn.adbc_get_table_schema("missing")


def test_get_table_types(conn: dbapi.Connection) -> None:
    assert conn.adbc_get_table_types() == ["TABLE"]


def test_get_info_names_the_server(conn: dbapi.Connection) -> None:
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "flightlake"
    assert info["vendor_version"]
    assert info["vendor_arrow_version"] == pa.__version__


# -- bulk ingest ------------------------------------------------------------------------------
def _count(conn: dbapi.Connection, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{table}"')
        (count,) = cur.fetchone()
        return int(count)


def test_ingest_modes(conn: dbapi.Connection, srv: Running) -> None:
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})
    with conn.cursor() as cur:
        assert cur.adbc_ingest("items", data, mode="create") == 3
        with pytest.raises(adbc_driver_manager.Error, match="already exists"):
            cur.adbc_ingest("items", data, mode="create")
        assert cur.adbc_ingest("items", data, mode="append") == 3
        assert _count(conn, "items") == 6
        with pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.adbc_ingest("missing", data, mode="append")
        assert cur.adbc_ingest("items", data.slice(0, 1), mode="replace") == 1
        assert _count(conn, "items") == 1
        assert cur.adbc_ingest("fresh", data, mode="replace") == 3
        assert cur.adbc_ingest("both", data, mode="create_append") == 3
        assert cur.adbc_ingest("both", data, mode="create_append") == 3
        assert _count(conn, "both") == 6
        with pytest.raises(adbc_driver_manager.Error, match="conflict"):
            cur.adbc_ingest("both", pa.table({"other": [1.5]}), mode="append")
        cur.execute("SELECT * FROM items")
        assert cur.fetch_arrow_table().to_pylist() == [{"id": 1, "name": "a"}]
    assert srv.lake.dataset("both").row_count == 6
    # Ingested datasets are plain datasets: plain Flight lists them too.
    names = {info.descriptor.path[0].decode() for info in srv.client.list_flights()}
    assert {"workers", "items", "fresh", "both"} <= names
    assert "missing" not in names


def test_pandas_to_sql_and_polars_write_database(conn: dbapi.Connection) -> None:
    frame = pd.DataFrame({"city": ["Chicago", "Peoria"], "people": [2_700_000, 110_000]})
    assert frame.to_sql("cities", conn, index=False) == 2  # if_exists="fail": creates
    assert frame.to_sql("cities", conn, index=False, if_exists="append") == 2
    back = pd.read_sql("SELECT * FROM cities ORDER BY people DESC, city", conn)
    assert back["city"].tolist() == ["Chicago", "Chicago", "Peoria", "Peoria"]
    assert back["people"].tolist() == [2_700_000, 2_700_000, 110_000, 110_000]
    # if_exists="replace" would need DROP TABLE, which read-only SQL refuses;
    # cursor.adbc_ingest(..., mode="replace") is the way (see docs/flight-sql.md).
    with pytest.raises(pd.errors.DatabaseError, match="ingest"):
        frame.to_sql("cities", conn, index=False, if_exists="replace")

    pl.DataFrame({"x": [1, 2, 3]}).write_database(
        "numbers", conn, engine="adbc", if_table_exists="append"
    )
    assert pl.read_database("SELECT sum(x)::BIGINT AS s FROM numbers", conn)["s"][0] == 6


# -- dataframe libraries ----------------------------------------------------------------------
# polars opens its own connection with the DB-API default (autocommit off); ADBC then warns
# that the server has no transactions. That warning is expected here.
@pytest.mark.filterwarnings("ignore:Cannot disable autocommit")
def test_polars_read_database_uri(srv: Running, workers_csv: Path) -> None:
    uri = f"flightsql://127.0.0.1:{srv.server.port}?transport=tcp"
    frame = pl.read_database_uri(
        "SELECT role, count(*) AS n FROM workers WHERE state = 'IL' GROUP BY role",
        uri,
        engine="adbc",
    )
    assert dict(zip(frame["role"], frame["n"], strict=True)) == il_role_counts(workers_csv)
    everything = pl.read_database_uri("SELECT * FROM workers", uri, engine="adbc")
    assert everything.height == ROWS


def test_pandas_read_sql(conn: dbapi.Connection, workers_csv: Path) -> None:
    frame = pd.read_sql(
        "SELECT role, count(*) AS n FROM workers WHERE state = 'IL' GROUP BY role", conn
    )
    assert dict(zip(frame["role"], frame["n"], strict=True)) == il_role_counts(workers_csv)
    assert len(pd.read_sql("SELECT * FROM workers", conn)) == ROWS


# -- plain Flight on the same port -------------------------------------------------------------
def test_plain_flight_still_works_beside_flight_sql(srv: Running, conn: dbapi.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()
    client = srv.client
    assert client.do_get(flight.Ticket(b"SELECT 1 AS one")).read_all().to_pylist() == [{"one": 1}]
    ticket = flight.Ticket(json.dumps({"dataset": "workers"}).encode())
    assert client.do_get(ticket).read_all().num_rows == ROWS
    info = client.get_flight_info(flight.FlightDescriptor.for_path("workers"))
    assert info.total_records == ROWS
    info = client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 2 AS two"))
    assert fetch(client, info).to_pylist() == [{"two": 2}]
    health = json.loads(
        next(iter(client.do_action(flight.Action("health", b"")))).body.to_pybytes()
    )
    assert health["status"] == "ok"
    actions = {a.type for a in client.list_actions()}
    assert {"health", "drop", "CreatePreparedStatement", "ClosePreparedStatement"} <= actions


# -- protocol details -------------------------------------------------------------------------
def test_sql_info_values(local_srv: Running) -> None:
    client = local_srv.client
    info = flightsql_info(client, pb.CommandGetSqlInfo(info=[0, 3, 4, 8, 10, 11, 504, 9999]))
    assert info.schema == SQL_INFO_SCHEMA
    rows = {r["info_name"]: r["value"] for r in fetch(client, info).to_pylist()}
    assert rows == {0: "flightlake", 3: False, 4: True, 8: 0, 10: True, 11: False, 504: '"'}
    everything = fetch(client, flightsql_info(client, pb.CommandGetSqlInfo()))
    assert everything.num_rows > 30


def test_xdbc_type_info(local_srv: Running) -> None:
    client = local_srv.client
    table = fetch(client, flightsql_info(client, pb.CommandGetXdbcTypeInfo()))
    codes = table["data_type"].to_pylist()
    assert codes == sorted(codes)
    assert {"BIGINT", "VARCHAR", "DOUBLE", "DATE", "TIMESTAMP"} <= set(
        table["type_name"].to_pylist()
    )
    varchar = fetch(client, flightsql_info(client, pb.CommandGetXdbcTypeInfo(data_type=12)))
    assert varchar["type_name"].to_pylist() == ["VARCHAR"]


@pytest.mark.parametrize(
    "message",
    [
        pb.CommandGetPrimaryKeys(table="workers"),
        pb.CommandGetExportedKeys(table="workers"),
        pb.CommandGetImportedKeys(table="workers"),
        pb.CommandGetCrossReference(pk_table="a", fk_table="b"),
    ],
    ids=lambda m: m.DESCRIPTOR.name,
)
def test_keys_answer_empty(local_srv: Running, message: Message) -> None:
    info = flightsql_info(local_srv.client, message)
    table = fetch(local_srv.client, info)
    assert table.num_rows == 0
    assert table.schema == info.schema
    assert "pk_table_name" in table.schema.names or "key_sequence" in table.schema.names


def test_catalog_filters(local_srv: Running) -> None:
    client = local_srv.client
    local_srv.lake.ingest_arrow("a_b", pa.schema([("x", pa.int8())]), [], "create")
    local_srv.lake.ingest_arrow("axb", pa.schema([("x", pa.int8())]), [], "create")

    def tables(**kwargs: object) -> list[str]:
        info = flightsql_info(client, pb.CommandGetTables(**kwargs))
        return fetch(client, info)["table_name"].to_pylist()

    assert tables() == ["a_b", "axb"]
    assert tables(table_name_filter_pattern="a_b") == ["a_b", "axb"]
    assert tables(table_name_filter_pattern="a\\_b") == ["a_b"]
    assert tables(catalog="elsewhere") == []
    assert tables(db_schema_filter_pattern="ma%") == ["a_b", "axb"]
    assert tables(table_types=["VIEW"]) == []
    schemas = fetch(client, flightsql_info(client, pb.CommandGetDbSchemas(catalog=CATALOG)))
    assert schemas.to_pylist() == [{"catalog_name": CATALOG, "db_schema_name": DB_SCHEMA}]


def test_statement_ticket_outlives_its_prepared_statement(local_srv: Running) -> None:
    client = local_srv.client
    request = pb.ActionCreatePreparedStatementRequest(query="SELECT ?::INTEGER + 1 AS answer")
    (result,) = client.do_action(flight.Action("CreatePreparedStatement", pb.pack(request)))
    created = pb.ActionCreatePreparedStatementResult()
    wrapper = any_pb2.Any.FromString(result.body.to_pybytes())
    created.ParseFromString(wrapper.value)
    handle = created.prepared_statement_handle
    command = pb.pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    descriptor = flight.FlightDescriptor.for_command(command)
    params = pa.table({"0": pa.array([41], pa.int32())})
    writer, reader = client.do_put(descriptor, params.schema)
    with writer:
        writer.write_table(params)
        writer.done_writing()
        answer = pb.DoPutPreparedStatementResult.FromString(reader.read().to_pybytes())
    assert answer.prepared_statement_handle == handle
    info = client.get_flight_info(descriptor)
    close = pb.ActionClosePreparedStatementRequest(prepared_statement_handle=handle)
    assert list(client.do_action(flight.Action("ClosePreparedStatement", pb.pack(close)))) == []
    assert fetch(client, info).to_pylist() == [{"answer": 42}]
    with pytest.raises(KeyError, match="prepared statement"):  # NOT_FOUND
        client.get_flight_info(descriptor)


def test_updates_are_refused_with_a_pointer_to_ingest(local_srv: Running) -> None:
    command = pb.pack(pb.CommandStatementUpdate(query="DELETE FROM workers"))
    writer, _ = local_srv.client.do_put(flight.FlightDescriptor.for_command(command), pa.schema([]))
    with pytest.raises(pa.ArrowInvalid, match=r"read-only.*ingest"):
        writer.close()


@pytest.mark.parametrize(
    "action", ["BeginTransaction", "EndTransaction", "CreatePreparedSubstraitPlan"]
)
def test_transactions_and_substrait_are_unimplemented(local_srv: Running, action: str) -> None:
    with pytest.raises(pa.ArrowNotImplementedError):
        list(local_srv.client.do_action(flight.Action(action, b"")))


def test_transaction_ids_are_refused(local_srv: Running) -> None:
    query = pb.CommandStatementQuery(query="SELECT 1", transaction_id=b"tx")
    with pytest.raises(pa.ArrowNotImplementedError, match="transactions"):
        flightsql_info(local_srv.client, query)


def test_statement_query_without_preparing(local_srv: Running) -> None:
    client = local_srv.client
    descriptor = flight.FlightDescriptor.for_command(
        pb.pack(pb.CommandStatementQuery(query="SELECT 42 AS answer, 'x' AS label"))
    )
    assert client.get_schema(descriptor).schema.names == ["answer", "label"]
    info = client.get_flight_info(descriptor)
    (endpoint,) = info.endpoints
    assert pb.unpack(endpoint.ticket.ticket)[0] == "TicketStatementQuery"
    table = fetch(client, info)
    assert table.schema == info.schema
    assert table.to_pylist() == [{"answer": 42, "label": "x"}]


# -- docs -------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Cannot disable autocommit")
def test_docs_examples_run(srv: Running) -> None:
    """Every Python example of docs/flight-sql.md runs against a server (bar credentials)."""
    text = (Path(__file__).parent.parent / "docs" / "flight-sql.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    runnable = [b for b in blocks if "db_kwargs" not in b]
    assert len(runnable) >= 3
    for block in runnable:
        exec(block.replace("8815", str(srv.server.port)), {})


def test_time_travel_through_adbc(conn: dbapi.Connection, srv: Running) -> None:
    before = _count(conn, "workers")
    srv.lake.ingest_csv("workers", [open_header(srv) + b"\n"])  # an empty append: version 1
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM workers AT (VERSION => 0)")
        assert cur.fetchone() == (before,)
        cur.execute("SELECT count(*) FROM workers AT (VERSION => 1)")
        assert cur.fetchone() == (before,)
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error, match="no version 9"):
        cur.execute("SELECT count(*) FROM workers AT (VERSION => 9)")


def open_header(srv: Running) -> bytes:
    """The CSV header line of the workers dataset (column names)."""
    return ",".join(srv.lake.dataset("workers").schema.names).encode()
