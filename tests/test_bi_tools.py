"""BI and SQL tools connect and browse: each tool's connect-and-browse sequence, as its source
sends it, through the real ADBC driver or raw Flight SQL (``pyarrow.flight`` with the messages
of ``flightlake.flight.flightsql_pb``), on a lake on local disk and on SeaweedFS S3.

Besides the answers, every metadata row, plan and session answer is checked against the
no-leak rule: no storage path, temporary path, endpoint, credential or setting name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from flightlake.errors import QueryError
from flightlake.flight import flightsql_pb as pb
from flightlake.flight.flightsql_meta import (
    _CONVERT,
    DATETIME_FUNCTIONS,
    NUMERIC_FUNCTIONS,
    STRING_FUNCTIONS,
    SYSTEM_FUNCTIONS,
)
from scripts.gen_workers import write_workers_csv
from tests.servers import Running, flight_server, make_settings

ROWS = 400
HOUR_US = 3_600_000_000
# Instants (µs since the epoch, UTC) of the `events` dataset: odd offsets, one before 1970.
EVENT_US = [-HOUR_US // 2, 0, 5 * HOUR_US + 123, 5 * HOUR_US + 59 * 60_000_000, 26 * HOUR_US]


@pytest.fixture(scope="module")
def workers_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_workers_csv(tmp_path_factory.mktemp("bi") / "workers.csv", ROWS)


def _events() -> pa.Table:
    return pa.table(
        {
            "ts": pa.array(EVENT_US, pa.timestamp("us", "UTC")),
            "v": pa.array(range(len(EVENT_US)), pa.int64()),
        }
    )


@pytest.fixture
def srv(storage_url: str, workers_csv: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """A server whose lake (local or S3) holds ``workers`` (two appends: two files) and
    ``events`` (zoned timestamps)."""
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    with flight_server(make_settings(storage_url, s3)) as running:
        running.lake.ingest_csv_file("workers", workers_csv, "create")
        running.lake.ingest_csv_file("workers", workers_csv, "append")
        events = _events()
        running.lake.ingest_arrow("events", events.schema, events.to_batches(), "create")
        yield running


@pytest.fixture
def conn(srv: Running) -> Iterator[dbapi.Connection]:
    with dbapi.connect(srv.location, autocommit=True) as connection:
        yield connection


# -- helpers ----------------------------------------------------------------------------------
def meta(client: flight.FlightClient, message: Message) -> pa.Table:
    """A Flight SQL metadata command, as Go / Java / C++ clients send it: GetFlightInfo, then
    DoGet of each endpoint's ticket."""
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pb.pack(message)))
    return pa.concat_tables([client.do_get(e.ticket).read_all() for e in info.endpoints])


def run_sql(client: flight.FlightClient, sql: str) -> pa.Table:
    return meta(client, pb.CommandStatementQuery(query=sql))


def action(client: flight.FlightClient, kind: str, body: bytes = b"") -> list[bytes]:
    return [r.body.to_pybytes() for r in client.do_action(flight.Action(kind, body))]


def leak_terms(srv: Running) -> list[str]:
    """What must never reach a client: storage paths, temp paths, endpoint, keys, settings."""
    settings = srv.lake.settings
    terms = [
        settings.storage,
        srv.lake.storage.root_url,
        "flightlake-duckdb-",  # the engine's temporary directory
        "read_parquet",
        ".parquet",
        "_delta_log",
        "memory_limit",
        "allowed_directories",
        "s3_",
    ]
    if settings.s3_endpoint:
        terms.append(settings.s3_endpoint.split("://")[-1])
        terms.append(settings.credentials.access_key_id)
        terms.append(settings.credentials.secret_access_key)
    return [t for t in terms if t]


def assert_no_leak(srv: Running, *answers: Any) -> None:
    text = "\n".join(_text(a) for a in answers)
    for term in leak_terms(srv):
        assert term not in text, f"{term!r} reached a client"


def _text(answer: Any) -> str:
    if isinstance(answer, pa.Table):
        return repr(answer.schema) + repr(answer.to_pylist())
    if isinstance(answer, bytes):
        return answer.decode("utf-8", "replace")
    return repr(answer)


def errors_total() -> float:
    """flightlake_errors_total summed over its labels (Prometheus)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "flightlake_errors"
        for sample in metric.samples
        if sample.name == "flightlake_errors_total"
    )


def table_names(table: pa.Table) -> list[str]:
    return sorted(table.column("table_name").to_pylist())


# -- Grafana ----------------------------------------------------------------------------------
def test_grafana_table_dropdown_columns_and_date_bin(srv: Running) -> None:
    """influxdata/grafana-flightsql-datasource, pkg/flightsql/resources.go: getSQLInfo sends
    GetSqlInfo with no codes; getTables sends GetTables(table_types=["BASE TABLE"]) (newer
    releases add "table"); getColumns sends GetTables(table_name_filter_pattern=<table>,
    include_schema=true) and reads the Arrow schema. pkg/flightsql/macro.go expands
    $__dateBin(col) to date_bin(interval '<N> second', col, timestamp '1970-01-01T00:00:00Z')."""
    client = srv.client
    info = meta(client, pb.CommandGetSqlInfo())
    assert 0 in info.column("info_name").to_pylist()
    for types in (["BASE TABLE"], ["BASE TABLE", "table"], ["table"], ["TABLE"], ["base table"]):
        tables = meta(client, pb.CommandGetTables(table_types=types))
        assert table_names(tables) == ["events", "workers"], types
    assert meta(client, pb.CommandGetTables(table_types=["VIEW"])).num_rows == 0
    columns = meta(
        client, pb.CommandGetTables(table_name_filter_pattern="workers", include_schema=True)
    )
    assert columns.num_rows == 1
    schema = pa.ipc.read_schema(pa.py_buffer(columns.column("table_schema")[0].as_py()))
    assert schema == srv.lake.query_schema("SELECT * FROM workers")
    assert_no_leak(srv, info, tables, columns)

    for seconds in (3600, 7 * 60, 86400):
        sql = (
            f"SELECT date_bin(interval '{seconds} second', ts, "
            "timestamp '1970-01-01T00:00:00Z') as ts_binned, count(*) AS n "
            "FROM events GROUP BY 1 ORDER BY 1"
        )
        got = run_sql(client, sql)
        step = seconds * 1_000_000
        expected: dict[int, int] = {}
        for us in EVENT_US:  # floor to the grid origin + k * stride, as PostgreSQL does
            expected[us // step * step] = expected.get(us // step * step, 0) + 1
        assert got.column("ts_binned").cast(pa.int64()).to_pylist() == sorted(expected)
        assert got.column("n").to_pylist() == [expected[k] for k in sorted(expected)]


def test_date_bin_follows_postgres_semantics(srv: Running) -> None:
    """PostgreSQL 14 date_bin(stride, source, origin): the bin start origin + k * stride at
    or before source, also when the origin lies after the source; DataFusion's two-argument
    form bins from the Unix epoch."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    cases = [
        ("date_bin(interval '1 hour', TIMESTAMP '2024-01-01 10:30:00', "
         "TIMESTAMP '2024-01-01 10:45:00')", datetime(2024, 1, 1, 9, 45)),
        ("date_bin(interval '15 minute', TIMESTAMP '2020-02-11 15:44:17', "
         "TIMESTAMP '2001-01-01')", datetime(2020, 2, 11, 15, 30)),
        ("date_bin(interval '7 minute', TIMESTAMP '2024-01-01 10:03:00')",
         datetime(2024, 1, 1, 10, 3)),
        ("DATE_BIN(INTERVAL '1 day', TIMESTAMPTZ '2024-01-20 10:30:00+00')",
         datetime(2024, 1, 20, tzinfo=UTC)),
    ]  # fmt: skip
    for expr, expected in cases:
        (value,) = run_sql(srv.client, f"SELECT {expr} AS b").column("b").to_pylist()
        assert value == expected, expr
    seven = (datetime(2024, 1, 1, 10, 3, tzinfo=UTC) - epoch) // timedelta(minutes=7)
    assert seven * timedelta(minutes=7) + epoch == datetime(2024, 1, 1, 10, 3, tzinfo=UTC)


# -- Flight SQL JDBC driver (DBeaver, Tableau, Metabase) ----------------------------------------
#: The SqlInfo codes apache/arrow-java's ArrowDatabaseMetadata (flight-sql-jdbc-core) reads up
#: to 18.3 - a superset: every code of FlightSql.proto's SqlInfo enum in 0-9 and 500-576 but
#: the result-set concurrency ones (568-571) - with the dense-union member FlightSql.proto
#: gives each: 0 string, 1 bool, 2 bigint, 3 int32 bitmask, 4 string list, 5 int32 -> int32
#: list map. A code the driver reads and the server lacks fails the driver.
STR, BOOL, BIGINT, INT32, STRINGS, MAP = range(6)
JDBC_SQL_INFO = {
    0: STR, 1: STR, 2: STR, 3: BOOL, 4: BOOL, 5: BOOL, 8: INT32, 9: BOOL,
    500: BOOL, 501: BOOL, 502: BOOL, 503: INT32, 504: STR, 505: INT32, 506: BOOL, 507: INT32,
    508: STRINGS, 509: STRINGS, 510: STRINGS, 511: STRINGS, 512: STRINGS, 513: STR, 514: STR,
    515: BOOL, 516: BOOL, 517: MAP, 518: BOOL, 519: BOOL, 520: BOOL, 521: BOOL, 522: INT32,
    523: BOOL, 524: BOOL, 525: INT32, 526: INT32, 527: BOOL, 528: INT32, 529: STR, 530: STR,
    531: STR, 532: BOOL, 533: INT32, 534: INT32, 535: INT32, 536: BOOL, 537: BOOL, 538: INT32,
    539: BOOL, 540: INT32,
    **{code: BIGINT for code in range(541, 556)}, 556: BOOL,
    **{code: BIGINT for code in range(557, 562)},
    562: INT32, 563: BOOL, 564: INT32, 565: BOOL, 566: BOOL, 567: INT32, 572: BOOL, 573: BOOL,
    574: BOOL, 575: BOOL, 576: BOOL,
}  # fmt: skip


def test_jdbc_driver_reads_every_sql_info_code_with_its_type(srv: Running) -> None:
    for code, member in JDBC_SQL_INFO.items():  # one code per request, as the driver caches
        table = meta(srv.client, pb.CommandGetSqlInfo(info=[code]))
        assert table.column("info_name").to_pylist() == [code]
        value = table.column("value").chunk(0)
        assert value.type_codes.to_pylist() == [member], code
    everything = meta(srv.client, pb.CommandGetSqlInfo(info=list(JDBC_SQL_INFO)))
    assert sorted(everything.column("info_name").to_pylist()) == sorted(JDBC_SQL_INFO)
    values = dict(zip(everything.column("info_name").to_pylist(),
                      everything.column("value").to_pylist(), strict=True))  # fmt: skip
    assert values[564] & 1  # TRANSACTION_NONE (Metabase asks)
    assert values[526] & 1  # ANSI92 entry level (Tableau asks)
    assert values[567] == 2  # forward-only result sets
    assert {k for k, _ in values[517]} == set(range(20))
    assert_no_leak(srv, everything)


def test_sql_info_lists_are_true_of_duckdb(srv: Running) -> None:
    """SQL_SUPPORTS_CONVERT (517) holds only casts DuckDB performs, and the function lists
    (509-512) only functions DuckDB has (checked on the engine's own connection)."""
    types = {0: "BIGINT", 1: "BLOB", 2: "BOOLEAN", 3: "VARCHAR", 4: "DATE",
             5: "DECIMAL(10,2)", 6: "DOUBLE", 7: "INTEGER", 8: "INTERVAL", 9: "INTERVAL",
             10: "BLOB", 11: "VARCHAR", 12: "DECIMAL(10,2)", 13: "FLOAT", 14: "SMALLINT",
             15: "TIME", 16: "TIMESTAMP", 17: "TINYINT", 18: "BLOB", 19: "VARCHAR"}  # fmt: skip
    samples = {0: "1::BIGINT", 1: "'a'::BLOB", 2: "true", 4: "DATE '2024-01-01'",
               5: "1.5::DECIMAL(10,2)", 6: "1.5::DOUBLE", 7: "1", 8: "INTERVAL 1 DAY",
               9: "INTERVAL 1 MONTH", 10: "'a'::BLOB", 12: "1::DECIMAL(10,2)",
               13: "1.5::FLOAT", 14: "1::SMALLINT", 15: "TIME '10:00:00'",
               16: "TIMESTAMP '2024-01-01 10:00:00'", 17: "1::TINYINT",
               18: "'a'::BLOB"}  # fmt: skip
    text = {1: "'a'", 2: "'true'", 4: "'2024-01-01'", 8: "'1 day'", 9: "'1 month'",
            10: "'a'", 15: "'10:00:00'", 16: "'2024-01-01 10:00:00'", 18: "'a'"}  # fmt: skip
    casts = []
    for source, targets in _CONVERT.items():
        for target in targets:
            value = text.get(target, "'1'") if source in (3, 11, 19) else samples[source]
            casts.append(f"CAST({value} AS {types[target]}) IS NOT NULL")
    (ok,) = srv.lake.query(f"SELECT {' AND '.join(casts)} AS ok").read_all().to_pylist()
    assert ok == {"ok": True}
    con = srv.lake.engine._con.cursor()  # the engine's own connection: not client SQL
    try:
        known = {
            r[0] for r in con.execute("SELECT function_name FROM duckdb_functions()").fetchall()
        }
    finally:
        con.close()
    # answered by sqlcompat, or grammar rather than catalog functions in DuckDB
    special = {"date_bin", "current_database", "current_schema", "coalesce", "ifnull"}
    special |= {"current_timestamp"}
    for name in NUMERIC_FUNCTIONS + STRING_FUNCTIONS + SYSTEM_FUNCTIONS + DATETIME_FUNCTIONS:
        assert name.lower() in known | special, name
    (row,) = (
        srv.lake.query(
            "SELECT coalesce(NULL, 1) AS a, ifnull(NULL, 1) AS b, "
            "current_timestamp IS NOT NULL AS c"
        )
        .read_all()
        .to_pylist()
    )
    assert row == {"a": 1, "b": 1, "c": True}


def test_jdbc_connect_with_catalog_sends_session_options(srv: Running) -> None:
    """The JDBC driver with catalog=flightlake in its URL, and Power BI's GizmoSQL
    configuration, send SetSessionOptions on connect (Flight.proto SetSessionOptionsRequest);
    JDBC's getCatalog / ADBC read GetSessionOptions; closing sends CloseSession."""
    client, before = srv.client, errors_total()
    request = pb.SetSessionOptionsRequest()
    request.session_options["catalog"].string_value = "flightlake"
    request.session_options["schema"].string_value = "main"
    (raw,) = action(client, "SetSessionOptions", request.SerializeToString())
    assert dict(pb.SetSessionOptionsResult.FromString(raw).errors) == {}

    bad = pb.SetSessionOptionsRequest()
    bad.session_options["catalog"].string_value = "other"
    bad.session_options["schema"].bool_value = True
    bad.session_options["fetch_size"].int64_value = 100
    bad.session_options["catalog_unset"].CopyFrom(pb.SessionOptionValue())
    (raw,) = action(client, "SetSessionOptions", bad.SerializeToString())
    errors = {k: v.value for k, v in pb.SetSessionOptionsResult.FromString(raw).errors.items()}
    assert errors == {
        "catalog": pb.SESSION_INVALID_VALUE,
        "schema": pb.SESSION_INVALID_VALUE,
        "fetch_size": pb.SESSION_INVALID_NAME,
        "catalog_unset": pb.SESSION_INVALID_NAME,
    }

    (raw,) = action(client, "GetSessionOptions", pb.GetSessionOptionsRequest().SerializeToString())
    options = pb.GetSessionOptionsResult.FromString(raw).session_options
    assert {k: v.string_value for k, v in options.items()} == {
        "catalog": "flightlake",
        "schema": "main",
    }

    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(pb.pack(pb.CommandStatementQuery(query="SELECT 1")))
    )
    cancel = pb.CancelFlightInfoRequest(info=info.serialize())
    (raw,) = action(client, "CancelFlightInfo", cancel.SerializeToString())
    assert pb.CancelFlightInfoResult.FromString(raw).status == pb.CANCEL_STATUS_CANCELLED

    (raw,) = action(client, "CloseSession", pb.CloseSessionRequest().SerializeToString())
    assert pb.CloseSessionResult.FromString(raw).status == pb.CLOSE_SESSION_CLOSED
    assert errors_total() == before  # session actions are no errors in /metrics
    listed = {a.type for a in client.list_actions()}
    assert {"SetSessionOptions", "GetSessionOptions", "CloseSession", "CancelFlightInfo"} <= listed

    with pytest.raises(NotImplementedError, match="unknown action 'RenewFlightEndpoint'"):
        action(client, "RenewFlightEndpoint")  # any other unknown action: UNIMPLEMENTED
    with pytest.raises(pa.ArrowInvalid, match="malformed SetSessionOptionsRequest"):
        action(client, "SetSessionOptions", b"\xff\xff")


def test_adbc_session_and_clean_disconnect(srv: Running) -> None:
    """The ADBC Flight SQL driver reads the current catalog / schema with GetSessionOptions,
    sets them with SetSessionOptions and sends CloseSession when the connection closes:
    none of it counts in flightlake_errors_total (issue #12, item 14)."""
    before = errors_total()
    for _ in range(3):
        connection = dbapi.connect(srv.location, autocommit=True)
        assert connection.adbc_current_catalog == "flightlake"
        assert connection.adbc_current_db_schema == "main"
        connection.adbc_current_catalog = "flightlake"
        connection.adbc_current_db_schema = "main"
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM workers")
            assert cur.fetchall() == [(2 * ROWS,)]
        connection.close()
    assert errors_total() == before
    with (
        dbapi.connect(srv.location, autocommit=True) as connection,
        pytest.raises(dbapi.ProgrammingError, match="catalog"),
    ):
        connection.adbc_current_catalog = "other"


def test_metabase_and_dbeaver_browse(srv: Running, conn: dbapi.Connection) -> None:
    """Metabase's sql-jdbc sync (metabase.driver.sql-jdbc.sync: describe-database and
    have-select-privilege?) and DBeaver's navigator read JDBC DatabaseMetaData, which the
    Flight SQL JDBC driver answers with GetCatalogs / GetDbSchemas / GetTables; Metabase then
    probes each table with SELECT TRUE ... WHERE 1 <> 1 LIMIT 0."""
    client = srv.client
    catalogs = meta(client, pb.CommandGetCatalogs())
    schemas = meta(client, pb.CommandGetDbSchemas(catalog="flightlake"))
    tables = meta(client, pb.CommandGetTables(catalog="flightlake", db_schema_filter_pattern="%"))
    types = meta(client, pb.CommandGetTableTypes())
    assert catalogs.column("catalog_name").to_pylist() == ["flightlake"]
    assert schemas.column("db_schema_name").to_pylist() == ["main"]
    assert table_names(tables) == ["events", "workers"]
    assert types.column("table_type").to_pylist() == ["TABLE"]
    with conn.cursor() as cur:
        for name in ('"main"."workers"', '"flightlake"."main"."workers"', "events"):
            cur.execute(f'SELECT TRUE AS "_" FROM {name} WHERE 1 <> 1 LIMIT 0')
            assert cur.fetchall() == []
    assert_no_leak(srv, catalogs, schemas, tables, types)


# -- Power BI ---------------------------------------------------------------------------------
def test_power_bi_adbc_filters_on_base_table(conn: dbapi.Connection, srv: Running) -> None:
    """Power BI's ADBC Flight SQL configuration lists tables with table_types=["BASE TABLE"]."""
    for types in (["BASE TABLE"], ["base table"], ["table"]):
        objects = conn.adbc_get_objects(depth="columns", table_types_filter=types).read_all()
        (catalog,) = objects.to_pylist()
        (schema,) = catalog["catalog_db_schemas"]
        names = sorted(t["table_name"] for t in schema["db_schema_tables"])
        assert names == ["events", "workers"], types
        assert_no_leak(srv, objects)
    objects = conn.adbc_get_objects(depth="tables", table_types_filter=["VIEW"]).read_all()
    assert all(
        not s["db_schema_tables"] for c in objects.to_pylist() for s in c["catalog_db_schemas"]
    )


# -- information_schema: dbt, SQLAlchemy dialects, Metabase's DuckDB driver ----------------------
def test_dbt_duckdb_metadata_macros(conn: dbapi.Connection, srv: Running) -> None:
    """duckdb/dbt-duckdb, dbt/include/duckdb/macros/adapters.sql: list_schemas,
    check_schema_exists, list_relations_without_caching and get_columns_in_relation, as
    rendered for database 'flightlake', schema 'main'; dbt wraps them in begin / commit."""
    with conn.cursor() as cur:
        cur.execute("begin")
        cur.execute("select schema_name\n    from information_schema.schemata")
        assert cur.fetchall() == [("main",)]
        cur.execute("select count(*)\n        from information_schema.schemata\n"
                    "        where schema_name='main'")  # fmt: skip
        assert cur.fetchall() == [(1,)]
        cur.execute(
            "select\n      'flightlake' as database,\n      table_name as name,\n"
            "      table_schema as schema,\n      CASE table_type\n"
            "        WHEN 'BASE TABLE' THEN 'table'\n        WHEN 'VIEW' THEN 'view'\n"
            "        WHEN 'LOCAL TEMPORARY' THEN 'table'\n        END as type\n"
            "    from information_schema.tables\n    where table_schema = 'main'"
        )
        assert sorted(cur.fetchall()) == [
            ("flightlake", "events", "main", "table"),
            ("flightlake", "workers", "main", "table"),
        ]
        cur.execute(
            "select\n          column_name,\n          data_type,\n"
            "          character_maximum_length,\n          numeric_precision,\n"
            "          numeric_scale\n\n      from information_schema.columns\n"
            "      where table_name = 'events'\n        \n        and table_schema = 'main'\n"
            "        \n      order by ordinal_position"
        )
        assert cur.fetchall() == [
            ("ts", "TIMESTAMP WITH TIME ZONE", None, None, None),
            ("v", "BIGINT", None, 64, 0),
        ]
        cur.execute("commit")
        # the spelling dbt uses with a database qualifier, and any case
        cur.execute("SELECT table_name FROM system.information_schema.tables ORDER BY 1")
        assert cur.fetchall() == [("events",), ("workers",)]
        cur.execute('SELECT count(*) FROM FLIGHTLAKE.INFORMATION_SCHEMA."COLUMNS"')
        (count,) = cur.fetchone()
        assert count == 2 + len(srv.lake.query_schema("SELECT * FROM workers"))


def test_information_schema_with_filters_joins_and_changes(srv: Running) -> None:
    lake = srv.lake

    def rows(sql: str) -> list[dict[str, Any]]:
        return lake.query(sql).read_all().to_pylist()

    joined = rows(
        "SELECT t.table_name, count(c.column_name) AS n, min(t.table_type) AS kind, "
        "max(c.is_nullable) AS nullable "
        "FROM information_schema.tables t JOIN information_schema.columns c "
        "ON c.table_name = t.table_name AND c.table_schema = t.table_schema "
        "WHERE lower(t.table_schema) = 'main' AND t.table_catalog = current_database() "
        "GROUP BY ALL ORDER BY t.table_name"
    )
    workers_cols = len(lake.query_schema("SELECT * FROM workers"))
    assert joined == [
        {"table_name": "events", "n": 2, "kind": "BASE TABLE", "nullable": "YES"},
        {"table_name": "workers", "n": workers_cols, "kind": "BASE TABLE", "nullable": "YES"},
    ]
    ordinals = rows(
        "SELECT column_name, ordinal_position FROM information_schema.columns "
        "WHERE table_name = 'workers' ORDER BY ordinal_position"
    )
    assert [r["column_name"] for r in ordinals] == lake.query_schema("SELECT * FROM workers").names
    assert [r["ordinal_position"] for r in ordinals] == list(range(1, workers_cols + 1))
    # a new dataset shows at once, a replaced one with its new columns, a dropped one goes
    extra = pa.table({"k": [1], "label": ["x"]})
    lake.ingest_arrow("zeta", extra.schema, extra.to_batches(), "create")
    assert rows("SELECT table_name FROM information_schema.tables WHERE table_name = 'zeta'")
    renamed = pa.table({"only": [1.5]})
    lake.ingest_arrow("zeta", renamed.schema, renamed.to_batches(), "overwrite")
    zeta = rows("SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'zeta'")  # fmt: skip
    assert zeta == [{"column_name": "only", "data_type": "DOUBLE"}]
    lake.drop("zeta")
    assert not rows("SELECT * FROM information_schema.tables WHERE table_name = 'zeta'")
    everything = [
        lake.query(f"SELECT * FROM information_schema.{t}").read_all()
        for t in ("tables", "columns", "schemata")
    ]
    assert_no_leak(srv, *everything)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM information_schema.views", "is not a dataset"),
        ("SELECT sql FROM sqlite_master", "is not a dataset"),
        ("SELECT * FROM duckdb_views()", "table function duckdb_views"),
        ("SELECT * FROM information_schema.key_column_usage", "is not a dataset"),
        ("SELECT * FROM pg_catalog.pg_views", "is not a dataset"),
        ("SELECT * FROM other.information_schema.tables", "is not a dataset"),
        ("SELECT current_setting('memory_limit')", "function current_setting"),
        ("SELECT * FROM information_schema.tables, duckdb_settings()", "duckdb_settings"),
    ],
)
def test_duckdb_catalog_stays_refused(srv: Running, sql: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        srv.lake.query(sql).read_all()


# -- SQLAlchemy dialects (GizmoSQL, Superset) and session statements -----------------------------
ACCEPTED = [
    "BEGIN", "begin;", "BEGIN TRANSACTION", "START TRANSACTION", "start transaction read only",
    "COMMIT", "commit transaction;", "END", "ROLLBACK", "rollback ;", "ABORT",
    "SET application_name = 'superset'", "SET extra_float_digits = 3", "SET search_path TO main",
    "SET search_path = \"$user\", public", "SET TIME ZONE 'UTC'", "set timezone to 'Etc/UTC'",
    "SET datestyle TO 'ISO, MDY'", "SET client_encoding TO 'UTF8'", "SET NAMES 'utf8'",
    "SET SESSION statement_timeout = 0", "SET client_min_messages TO warning",
    "-- dbt\nbegin",
]  # fmt: skip


@pytest.mark.parametrize("sql", ACCEPTED)
def test_session_statements_are_no_ops(conn: dbapi.Connection, sql: str) -> None:
    """What SQLAlchemy dialects and PostgreSQL-minded clients send around every connection:
    the GizmoSQL and Superset dialects send rollback / begin / commit; PostgreSQL drivers
    SET application_name, extra_float_digits, search_path, time zone."""
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetchall() == []


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SET TIME ZONE 'Europe/Berlin'", "answers in UTC"),
        ("SET search_path TO other", "not supported"),
        ("SET memory_limit = '1GB'", "only SELECT"),
        ("SET threads TO 1", "only SELECT"),
        ("SET enable_external_access = true", "only SELECT"),
        ("RESET ALL", "only SELECT|Can only SET or RESET"),
        ("BEGIN; SELECT 1", "exactly one"),
        ("COMMIT; DROP TABLE workers", "exactly one"),
        ("SET application_name = 'x'; SET threads = 1", "exactly one"),
        ("BEGIN TRANSACTION ISOLATION LEVEL SNAPSHOT", "only SELECT|syntax"),
    ],
)
def test_other_sets_stay_refused(srv: Running, sql: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        srv.lake.query(sql).read_all()


def test_current_database_schema_and_search_path(conn: dbapi.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_catalog(), current_schema()")
        assert cur.fetchall() == [("flightlake", "flightlake", "main")]
        cur.execute("select pg_catalog.current_schemas(true) AS s, current_database() AS db "
                    "WHERE current_database() = ?", ["flightlake"])  # fmt: skip
        assert cur.fetchall() == [(["main"], "flightlake")]
        cur.execute("SHOW search_path")
        assert cur.fetchall() == [("main",)]
        cur.execute("SELECT count(*) FROM workers WHERE current_schema() = 'main'")
        assert cur.fetchall() == [(2 * ROWS,)]


def test_flightsql_dbapi_sqlalchemy_dialect(srv: Running) -> None:
    """influxdata/flightsql-dbapi (PyPI flightsql-dbapi 0.2.2, SQLAlchemy 1.4): the dialect
    reads SqlInfo on connect, lists schemas and tables with GetDbSchemas / GetTables and
    reflects columns from GetTables(include_schema) - the path Superset's Flight SQL
    connections take."""
    engine = sa.create_engine(f"datafusion://127.0.0.1:{srv.server.port}?insecure=true")
    try:
        inspector = sa.inspect(engine)
        assert inspector.get_schema_names() == ["main"]
        assert sorted(inspector.get_table_names()) == ["events", "workers"]
        columns = inspector.get_columns("workers")
        assert [c["name"] for c in columns] == srv.lake.query_schema("SELECT * FROM workers").names
        assert {c["name"]: type(c["type"]) for c in columns}["worker_id"] is sa.BIGINT
        with engine.connect() as connection:
            workers = sa.Table("workers", sa.MetaData(), autoload_with=connection)
            query = (
                sa.select(workers.c.role, sa.func.count().label("n"))
                .where(workers.c.state == "IL")
                .group_by(workers.c.role)
            )
            got = dict(connection.execute(query).fetchall())
            expected = srv.lake.query(
                "SELECT role, count(*) AS n FROM workers WHERE state = 'IL' GROUP BY role"
            ).read_all()
            assert got == dict(zip(*expected.to_pydict().values(), strict=True))
    finally:
        engine.dispose()


# -- SQL analysts write ---------------------------------------------------------------------------
def test_pivot_without_in_list(srv: Running) -> None:
    lake = srv.lake
    roles = [
        r["role"]
        for r in lake.query("SELECT DISTINCT role FROM workers ORDER BY 1").read_all().to_pylist()
    ]
    in_list = ", ".join(f"'{r}'" for r in roles)
    got = lake.query("PIVOT workers ON role USING count(*) GROUP BY state ORDER BY state")
    explicit = lake.query(
        f"PIVOT workers ON role IN ({in_list}) USING count(*) GROUP BY state ORDER BY state"
    )
    got_table = got.read_all()
    assert got_table.schema.names == ["state", *roles]
    assert got_table.equals(explicit.read_all())
    # the engine's own dynamic PIVOT gives the same table
    con = lake.engine._con.cursor()
    try:
        con.execute("USE flightlake")
        native = con.execute(
            "PIVOT workers ON role USING count(*) GROUP BY state ORDER BY state"
        ).to_arrow_table()
    finally:
        con.close()
    assert got_table.equals(native)

    odd = pa.table({"who": ["O'Brien", "a,b", None, "O'Brien"], "n": [1, 2, 3, 4]})
    lake.ingest_arrow("odd", odd.schema, odd.to_batches(), "create")
    pivot = lake.query("pivot odd on who using sum(n);").read_all()
    assert pivot.to_pylist() == [{"O'Brien": 5, "a,b": 2}]  # NULL is no column, as in DuckDB
    two = lake.query(
        "PIVOT (SELECT * FROM workers WHERE state = 'IL') ON role, active USING count(*) "
        "GROUP BY state"
    ).read_all()
    assert two.num_rows == 1
    assert two.num_columns > 2
    with pytest.raises(QueryError, match="read_parquet"):
        lake.query("PIVOT read_parquet('/etc/passwd') ON x USING count(*)").read_all()
    with pytest.raises(QueryError, match="is not a dataset"):
        lake.query("PIVOT information_schema.views ON sql USING count(*)").read_all()
    with pytest.raises(QueryError, match=r"IN \("):
        lake.query("PIVOT workers ON (role, state) USING count(*)").read_all()


def test_explain_runs_and_shows_no_path(srv: Running, conn: dbapi.Connection) -> None:
    plans = []
    with conn.cursor() as cur:
        for sql in (
            "EXPLAIN SELECT role, count(*) FROM workers WHERE state = 'IL' GROUP BY role",
            "explain select * from flightlake.main.workers w join events e on w.worker_id = e.v",
            "EXPLAIN SELECT * FROM information_schema.columns",
            "EXPLAIN SELECT date_bin(interval '1 hour', ts) FROM events",
        ):
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            assert table.column_names == ["explain_key", "explain_value"]
            assert "READ_PARQUET" in "".join(table.column("explain_value").to_pylist()) or (
                "information_schema" in sql
            )
            plans.append(table)
    assert_no_leak(srv, *plans)
    for sql, message in (
        ("EXPLAIN ANALYZE SELECT count(*) FROM workers", "EXPLAIN ANALYZE"),
        ("explain analyse select 1", "EXPLAIN ANALYZE"),
        ("EXPLAIN (FORMAT json) SELECT 1", "options"),
        ("EXPLAIN SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("EXPLAIN SELECT * FROM 'data/x.parquet'", "is not a dataset"),
        ("EXPLAIN DROP TABLE workers", "only SELECT"),
        ("EXPLAIN /* */ ANALYZE SELECT 1", "only SELECT|ANALYZE|syntax"),
    ):
        with pytest.raises(QueryError, match=message):
            srv.lake.query(sql).read_all()


def test_connecting_tools_doc_examples_run(srv: Running) -> None:
    """Every Python block of docs/connecting-tools.md runs against a server."""
    text = (Path(__file__).parent.parent / "docs" / "connecting-tools.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        exec(block.replace("8815", str(srv.server.port)), {})


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("/* Superset */ ROLLBACK", []),
        ("begin -- dbt\n", []),
        ("  Commit Work ;  ", []),
        ("SELECT 'BEGIN' AS word", [{"word": "BEGIN"}]),
        ("SELECT 'SET application_name = x' AS s", [{"s": "SET application_name = x"}]),
        ("show SEARCH_PATH;", [{"search_path": "main"}]),
        ("SHOW TIME ZONE", [{"TimeZone": "UTC"}]),
        (
            "SELECT current_database() AS db, upper(current_catalog()) AS c",
            [{"db": "flightlake", "c": "FLIGHTLAKE"}],
        ),
    ],
)
def test_session_statement_spellings(srv: Running, sql: str, rows: list[dict[str, Any]]) -> None:
    """Comments, case and semicolons around session statements; the same words inside
    string literals are data, not statements."""
    assert srv.lake.query(sql).read_all().to_pylist() == rows
