"""Flight SQL on the Flight port, beside plain Flight, so ADBC / JDBC clients connect.

``FlightServer`` hands a request here when its descriptor, ticket or action is Flight SQL (a
``google.protobuf.Any`` of package ``arrow.flight.protocol.sql``, see ``flightsql_pb``);
everything else stays plain Flight. Like the plain handlers these only translate: decode the
command, call the lake, return a stream. Query results stream from ``Lake.query`` exactly as
plain ``do_get`` does. The spec's fixed answers (result schemas, SqlInfo, XDBC types) live in
``flightsql_meta``, the protobuf messages in ``flightsql_pb``.

Naming: one catalog ``flightlake`` holding one schema ``main``; every dataset is a table of
type ``TABLE`` there (GetTables filters also accept ``BASE TABLE`` and any case). SQL uses the
plain dataset names (``SELECT * FROM workers``, ``flightlake.main.workers`` works too).

What is served:
- ``CommandStatementQuery`` → ``TicketStatementQuery``; prepared statements (create / close
  actions, parameters bound by position through ``DoPut``, then ``GetFlightInfo`` + ``DoGet``).
  Tickets are self-contained (the SQL and, for prepared statements, the bound parameters as
  Arrow IPC), so a ticket stays valid after its statement is closed.
- ``CommandGetSqlInfo``, ``CommandGetCatalogs``, ``CommandGetDbSchemas``, ``CommandGetTables``
  (with each table's Arrow schema on request), ``CommandGetTableTypes``,
  ``CommandGetXdbcTypeInfo``; primary / imported / exported keys and cross references answer
  empty (datasets have no keys).
- ``CommandStatementIngest`` → ``Lake.ingest_arrow`` (create / append / replace).
- Flight's session actions (``SetSessionOptions`` accepting catalog ``flightlake`` / schema
  ``main``, ``GetSessionOptions``, ``CloseSession``) and ``CancelFlightInfo``: answered as
  Flight.proto says; there is no per-session state to keep.

SQL is read-only (the lake's sandbox accepts one SELECT); ``CommandStatementUpdate``,
``CommandPreparedStatementUpdate`` and write statements are refused with a message pointing
at bulk ingest. Transactions, Substrait and ``CancelQuery`` are UNIMPLEMENTED (``BEGIN`` /
``COMMIT`` SQL text is a no-op, see ``flightlake.sqlcompat``). Hence the
SqlInfo answers: read-only false (ingest writes), SQL true, bulk ingestion true,
transactions none.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import DecodeError, Message

from flightlake.errors import InvalidInput, NotFound, QueryError
from flightlake.flight import flightsql_pb as pb
from flightlake.flight.flightsql_meta import (
    CATALOG,
    CATALOGS_SCHEMA,
    DB_SCHEMA,
    DB_SCHEMAS_SCHEMA,
    FOREIGN_KEYS_SCHEMA,
    PRIMARY_KEYS_SCHEMA,
    SQL_INFO_SCHEMA,
    TABLE_TYPES_SCHEMA,
    TABLES_SCHEMA,
    TABLES_WITH_SCHEMA_SCHEMA,
    XDBC_TYPE_INFO_SCHEMA,
    XDBC_TYPES,
    sql_info_table,
)
from flightlake.flight.pending import PendingResults
from flightlake.flight.server import Counted, _arrow_batches, _log, header_key, server_places
from flightlake.flight.sessions import SESSION_ACTIONS
from flightlake.lake import Lake
from flightlake.query import quote_ident

#: A call's "is the client gone?" (``ServerCallContext.is_cancelled``).
Cancelled = Callable[[], bool]

TABLE_TYPE = "TABLE"

#: Open prepared statements kept at most; the least recently used is closed beyond this.
MAX_PREPARED = 4096
#: Parameter sets (rows) one DoPut may bind to a prepared query; each runs the query once.
MAX_PARAM_SETS = 10_000

WRITE_HINT = (
    "flightlake SQL is read-only: write data with bulk ingest (ADBC adbc_ingest, "
    "Flight SQL CommandStatementIngest) or a plain Flight do_put"
)

#: Dataset table types a GetTables filter may name (case-insensitively): the type reported,
#: ``TABLE``, and the SQL standard's ``BASE TABLE`` (Grafana, Power BI) / ``table``.
TABLE_TYPE_ALIASES = frozenset({"table", "base table"})

ACTIONS = {
    "CreatePreparedStatement": "Flight SQL: prepare a SQL query.",
    "ClosePreparedStatement": "Flight SQL: close a prepared statement.",
    "SetSessionOptions": "Flight: set session options (catalog 'flightlake', schema 'main').",
    "GetSessionOptions": "Flight: the session options (catalog and schema).",
    "CloseSession": "Flight: close the session (there is no server-side session state).",
    "CancelFlightInfo": "Flight: cancel a FlightInfo (no work runs before its DoGet).",
}

_UNSUPPORTED_ACTIONS = {
    "BeginTransaction": "transactions are not supported",
    "EndTransaction": "transactions are not supported",
    "BeginSavepoint": "transactions are not supported",
    "EndSavepoint": "transactions are not supported",
    "CreatePreparedSubstraitPlan": "Substrait plans are not supported; send SQL",
    "CancelQuery": "query cancellation is not supported; close the stream instead",
}


# -- helpers ----------------------------------------------------------------------------------
def like(pattern: str | None, value: str) -> bool:
    """SQL LIKE as the spec's filter patterns use it: ``%``, ``_``, ``\\`` escapes."""
    if pattern is None:
        return True
    regex, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            regex.append(re.escape(next(chars, "\\")))
        elif ch == "%":
            regex.append(".*")
        elif ch == "_":
            regex.append(".")
        else:
            regex.append(re.escape(ch))
    return re.fullmatch("".join(regex), value, re.DOTALL) is not None


def _optional(message: Message, name: str) -> str | None:
    return getattr(message, name) if message.HasField(name) else None


def _unsupported(what: str) -> Exception:
    error: Exception = pa.ArrowNotImplementedError(f"Flight SQL: {what}")  # → UNIMPLEMENTED
    return error


def _refuse_transaction(message: Message) -> None:
    if message.HasField("transaction_id"):
        raise _unsupported("transactions are not supported (every statement auto-commits)")


def _explain_write(exc: QueryError) -> QueryError:
    """The sandbox's refusal of a non-SELECT statement, with where writes go instead."""
    if "only SELECT" in str(exc):
        return QueryError(f"{exc}; {WRITE_HINT}")
    return exc


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _rows(params: pa.Table | None) -> list[list[Any]] | None:
    """Parameter sets as positional value lists, or None when nothing is bound."""
    if params is None or params.num_rows == 0:
        return None
    return [list(row.values()) for row in params.to_pylist()]


def statement_ticket(
    sql: str, params: pa.Table | None = None, pending: str | None = None
) -> flight.Ticket:
    """A self-contained ticket: the SQL and any bound parameters (Arrow IPC, base64), plus
    the id of a result this server already started for it (see flight.pending)."""
    doc: dict[str, str] = {"sql": sql}
    if params is not None and params.num_rows:
        doc["params"] = base64.b64encode(_ipc(params)).decode()
    if pending:
        doc["pending"] = pending
    handle = json.dumps(doc).encode()
    return flight.Ticket(pb.pack(pb.TicketStatementQuery(statement_handle=handle)))


def _read_handle(handle: bytes) -> tuple[str, pa.Table | None, str | None]:
    try:
        doc = json.loads(handle)
        params = None
        if "params" in doc:
            params = pa.ipc.open_stream(base64.b64decode(doc["params"])).read_all()
        pending = doc.get("pending")
        return str(doc["sql"]), params, pending if isinstance(pending, str) else None
    except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise InvalidInput(f"malformed Flight SQL statement ticket: {exc}") from exc


@dataclass
class Prepared:
    """One prepared statement: its SQL, its bound parameters, and the result schema resolved
    when it was prepared (valid while the lake's views are at ``generation``)."""

    sql: str
    params: pa.Table | None = None
    schema: pa.Schema | None = None
    generation: int = -1
    pending: str | None = None  # the id of the result started when it was prepared


@dataclass(frozen=True)
class Command:
    """A decoded Flight SQL request: message name, message (None if unknown), raw Any."""

    name: str
    message: Message | None
    raw: bytes


class FlightSqlHandler:
    """Serves the Flight SQL commands over one Lake."""

    def __init__(self, lake: Lake, pending: PendingResults | None = None) -> None:
        self.lake = lake
        self.pending = pending if pending is not None else PendingResults()
        self._prepared: OrderedDict[bytes, Prepared] = OrderedDict()
        self._lock = threading.Lock()

    # -- dispatch (called by FlightServer) -------------------------------------------------
    def decode(self, raw: bytes) -> Command | None:
        """The Flight SQL command in ``raw`` (a descriptor command or ticket), or None."""
        try:
            found = pb.unpack(raw)
        except DecodeError as exc:
            raise InvalidInput(f"malformed Flight SQL message: {exc}") from exc
        return None if found is None else Command(found[0], found[1], raw)

    def command(self, descriptor: flight.FlightDescriptor) -> Command | None:
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            return None
        return self.decode(descriptor.command)

    def owns_action(self, kind: str) -> bool:
        return kind in ACTIONS or kind in _UNSUPPORTED_ACTIONS

    def actions(self) -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    # -- GetFlightInfo ---------------------------------------------------------------------
    def get_flight_info(
        self,
        descriptor: flight.FlightDescriptor,
        cmd: Command,
        cancelled: Cancelled | None = None,
    ) -> flight.FlightInfo:
        msg = cmd.message
        if cmd.name == "CommandStatementQuery":
            assert msg is not None
            _refuse_transaction(msg)
            schema, key = self._start(msg.query, cancelled)
            return self._info(descriptor, schema, statement_ticket(msg.query, pending=key))
        if cmd.name == "CommandPreparedStatementQuery":
            assert msg is not None
            stmt = self._get_prepared(msg.prepared_statement_handle)
            rows = _rows(stmt.params)
            pending, stmt.pending = stmt.pending, None  # a started result serves one fetch
            if rows is None and stmt.schema is not None and stmt.generation == self.lake.generation:
                # As prepared: no view changed since. DB-API clients prepare every new
                # statement, so the query started then is the one this fetch streams.
                return self._info(
                    descriptor, stmt.schema, statement_ticket(stmt.sql, pending=pending)
                )
            self.pending.discard(pending)
            # A view changed since it was prepared (the dataset may have other columns now),
            # or bound parameters decide the types: resolve again.
            if rows is None:
                schema, key = self._start(stmt.sql, cancelled)
                return self._info(descriptor, schema, statement_ticket(stmt.sql, pending=key))
            schema = self._schema(stmt.sql, rows[0], cancelled)
            return self._info(descriptor, schema, statement_ticket(stmt.sql, stmt.params))
        schema = self._metadata_schema(cmd)
        return self._info(descriptor, schema, flight.Ticket(cmd.raw))

    def _info(
        self, descriptor: flight.FlightDescriptor, schema: pa.Schema, ticket: flight.Ticket
    ) -> flight.FlightInfo:
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def _schema(
        self, sql: str, params: list[Any] | None = None, cancelled: Cancelled | None = None
    ) -> pa.Schema:
        try:
            return self.lake.query_schema(sql, params, cancelled)
        except QueryError as exc:
            raise _explain_write(exc) from exc

    def _start(self, sql: str, cancelled: Cancelled | None = None) -> tuple[pa.Schema, str]:
        """Start ``sql`` (no parameters); return its schema and the id its reader is parked
        under for the DoGet that follows (one DuckDB execution per query, not two).
        ``cancelled`` is this call's client check while the query starts."""
        try:
            reader, key = self.pending.start(
                lambda check: self.lake.query(sql, cancelled=check), cancelled
            )
        except QueryError as exc:
            raise _explain_write(exc) from exc
        return reader.schema, key

    def _metadata_schema(self, cmd: Command) -> pa.Schema:
        schemas = {
            "CommandGetSqlInfo": SQL_INFO_SCHEMA,
            "CommandGetCatalogs": CATALOGS_SCHEMA,
            "CommandGetDbSchemas": DB_SCHEMAS_SCHEMA,
            "CommandGetTableTypes": TABLE_TYPES_SCHEMA,
            "CommandGetXdbcTypeInfo": XDBC_TYPE_INFO_SCHEMA,
            "CommandGetPrimaryKeys": PRIMARY_KEYS_SCHEMA,
            "CommandGetExportedKeys": FOREIGN_KEYS_SCHEMA,
            "CommandGetImportedKeys": FOREIGN_KEYS_SCHEMA,
            "CommandGetCrossReference": FOREIGN_KEYS_SCHEMA,
        }
        if cmd.name == "CommandGetTables":
            assert cmd.message is not None
            return TABLES_WITH_SCHEMA_SCHEMA if cmd.message.include_schema else TABLES_SCHEMA
        if cmd.name in schemas:
            return schemas[cmd.name]
        raise self._not_a_query(cmd.name)

    def _not_a_query(self, name: str) -> Exception:
        if name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate"):
            return InvalidInput(f"Flight SQL {name} is not supported: {WRITE_HINT}")
        if name == "CommandStatementIngest":
            return InvalidInput("CommandStatementIngest is a DoPut command, not GetFlightInfo")
        if name == "CommandStatementSubstraitPlan":
            return _unsupported("Substrait plans are not supported; send SQL")
        return _unsupported(f"{name} is not supported by flightlake")

    # -- DoGet -----------------------------------------------------------------------------
    def do_get(self, cmd: Command, cancelled: Cancelled | None = None) -> flight.RecordBatchStream:
        """``cancelled`` is the call's "is the client gone?" (deadline, cancel, disconnect):
        the query watchdog polls it and interrupts the query, before its first batch too."""
        msg = cmd.message
        if cmd.name == "TicketStatementQuery":
            assert msg is not None
            sql, params, pending = _read_handle(msg.statement_handle)
            return self._stream(sql, params, self.pending.claim(pending, cancelled), cancelled)
        if cmd.name == "CommandPreparedStatementQuery":
            assert msg is not None
            stmt = self._get_prepared(msg.prepared_statement_handle)
            return self._stream(stmt.sql, stmt.params, None, cancelled)
        return flight.RecordBatchStream(self._metadata(cmd))

    def _stream(
        self,
        sql: str,
        params: pa.Table | None,
        started: pa.RecordBatchReader | None = None,
        cancelled: Cancelled | None = None,
    ) -> flight.RecordBatchStream:
        rows = _rows(params)
        try:
            reader = started or self.lake.query(
                sql, params=rows[0] if rows else None, cancelled=cancelled
            )
        except QueryError as exc:
            raise _explain_write(exc) from exc
        if rows is not None and len(rows) > 1:  # every parameter set runs; results in order
            reader = pa.RecordBatchReader.from_batches(
                reader.schema, self._chain(reader, sql, rows[1:], cancelled)
            )
        fields = {"sql": json.dumps(sql[:200])}
        if rows is not None:
            fields["param_sets"] = str(len(rows))
        counted = Counted(reader, "flightsql.do_get", server_places(self.lake), **fields)
        return flight.RecordBatchStream(counted.stream())

    def _chain(
        self,
        first: pa.RecordBatchReader,
        sql: str,
        rest: list[list[Any]],
        cancelled: Cancelled | None = None,
    ) -> Iterator[pa.RecordBatch]:
        yield from first
        for row in rest:
            yield from self.lake.query(sql, params=row, cancelled=cancelled)

    def _metadata(self, cmd: Command) -> pa.Table:
        msg = cmd.message
        if cmd.name == "CommandGetSqlInfo":
            assert msg is not None
            return sql_info_table(list(msg.info))
        if cmd.name == "CommandGetCatalogs":
            return pa.Table.from_pylist([{"catalog_name": CATALOG}], CATALOGS_SCHEMA)
        if cmd.name == "CommandGetDbSchemas":
            assert msg is not None
            rows = [{"catalog_name": CATALOG, "db_schema_name": DB_SCHEMA}]
            if not self._in_catalog(_optional(msg, "catalog")) or not like(
                _optional(msg, "db_schema_filter_pattern"), DB_SCHEMA
            ):
                rows = []
            return pa.Table.from_pylist(rows, DB_SCHEMAS_SCHEMA)
        if cmd.name == "CommandGetTables":
            assert msg is not None
            return self._tables(msg)
        if cmd.name == "CommandGetTableTypes":
            return pa.Table.from_pylist([{"table_type": TABLE_TYPE}], TABLE_TYPES_SCHEMA)
        if cmd.name == "CommandGetXdbcTypeInfo":
            assert msg is not None
            code = _optional(msg, "data_type")
            rows = [t for t in XDBC_TYPES if code is None or t["data_type"] == code]
            return pa.Table.from_pylist(rows, XDBC_TYPE_INFO_SCHEMA)
        # Keys: datasets have none; answer empty with the right schema.
        return self._metadata_schema(cmd).empty_table()

    def _in_catalog(self, catalog: str | None) -> bool:
        return catalog is None or catalog == CATALOG

    def _tables(self, msg: Message) -> pa.Table:
        if (
            not self._in_catalog(_optional(msg, "catalog"))
            or not like(_optional(msg, "db_schema_filter_pattern"), DB_SCHEMA)
            or (msg.table_types and not TABLE_TYPE_ALIASES & {t.lower() for t in msg.table_types})
        ):
            manifests = []
        else:
            pattern = _optional(msg, "table_name_filter_pattern")
            manifests = [m for m in self.lake.datasets() if like(pattern, m.name)]
        rows: list[dict[str, Any]] = []
        for manifest in sorted(manifests, key=lambda m: m.name):
            row: dict[str, Any] = {
                "catalog_name": CATALOG,
                "db_schema_name": DB_SCHEMA,
                "table_name": manifest.name,
                "table_type": TABLE_TYPE,
            }
            if msg.include_schema:
                # The schema SELECT * answers with (what clients will receive), which can
                # differ from the stored Parquet types (e.g. large_string → string).
                schema = self.lake.query_schema(f"SELECT * FROM {quote_ident(manifest.name)}")
                row["table_schema"] = schema.serialize().to_pybytes()
            rows.append(row)
        schema = TABLES_WITH_SCHEMA_SCHEMA if msg.include_schema else TABLES_SCHEMA
        return pa.Table.from_pylist(rows, schema)

    # -- DoPut -----------------------------------------------------------------------------
    def do_put(
        self,
        cmd: Command,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
        context: Any = None,
    ) -> None:
        msg = cmd.message
        if cmd.name == "CommandStatementIngest":
            assert msg is not None
            self._ingest(msg, reader, writer, context)
        elif cmd.name == "CommandPreparedStatementQuery":
            assert msg is not None
            self._bind(msg.prepared_statement_handle, reader, writer)
        else:
            raise self._not_a_query(cmd.name)

    def _bind(
        self,
        handle: bytes,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        stmt = self._get_prepared(handle)
        batches, rows = [], 0
        for batch in _arrow_batches(reader, {"bytes": 0}):
            rows += batch.num_rows
            if rows > MAX_PARAM_SETS:
                raise InvalidInput(f"more than {MAX_PARAM_SETS} parameter sets in one binding")
            batches.append(batch)
        stmt.params = pa.Table.from_batches(batches, reader.schema) if rows else None
        result = pb.DoPutPreparedStatementResult(prepared_statement_handle=handle)
        writer.write(pa.py_buffer(result.SerializeToString()))

    def _ingest(
        self,
        msg: Message,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
        context: Any = None,
    ) -> None:
        start = time.perf_counter()
        _refuse_transaction(msg)
        if msg.temporary:
            raise InvalidInput("temporary tables are not supported: ingest into a dataset")
        catalog, db_schema = _optional(msg, "catalog"), _optional(msg, "schema")
        if not self._in_catalog(catalog) or db_schema not in (None, DB_SCHEMA):
            raise InvalidInput(
                f"unknown catalog/schema {catalog}.{db_schema}: flightlake has "
                f"one catalog {CATALOG!r} with one schema {DB_SCHEMA!r}"
            )
        mode = self._ingest_mode(msg.table, msg.table_definition_options)
        counter = {"bytes": 0}
        result = self.lake.ingest_arrow(
            msg.table,
            reader.schema,
            _arrow_batches(reader, counter, context),
            mode,
            idempotency_key=header_key(context),  # call header: ADBC's only way to send one
        )
        done = pb.DoPutUpdateResult(record_count=result.rows_written)
        writer.write(pa.py_buffer(done.SerializeToString()))
        _log(
            "flightsql.ingest",
            start,
            kind="ingest",
            dataset=msg.table,
            mode=mode,
            rows_in=result.rows_written,
            bytes_in=counter["bytes"],
            version=result.version,
        )

    def _ingest_mode(self, name: str, options: Message) -> str:
        """Map TableDefinitionOptions onto the lake's create / append / overwrite."""
        if_not_exist, if_exists = options.if_not_exist, options.if_exists
        if not if_not_exist or not if_exists:
            raise InvalidInput(
                "CommandStatementIngest needs table_definition_options with "
                "if_not_exist and if_exists set"
            )
        if if_exists == pb.IF_EXISTS_FAIL:
            if if_not_exist == pb.IF_NOT_EXIST_FAIL:
                raise InvalidInput("if_exists=FAIL with if_not_exist=FAIL can never succeed")
            return "create"
        mode = "append" if if_exists == pb.IF_EXISTS_APPEND else "overwrite"
        if if_not_exist == pb.IF_NOT_EXIST_FAIL:
            self.lake.dataset(name)  # NotFound when missing
        return mode

    # -- DoAction --------------------------------------------------------------------------
    def do_action(
        self, action: flight.Action, cancelled: Cancelled | None = None
    ) -> Iterator[flight.Result]:
        kind = action.type
        if kind in _UNSUPPORTED_ACTIONS:
            raise _unsupported(f"{kind}: {_UNSUPPORTED_ACTIONS[kind]}")
        body = action.body.to_pybytes() if action.body is not None else b""
        if kind in SESSION_ACTIONS:
            start = time.perf_counter()
            answer = SESSION_ACTIONS[kind](body)
            _log("do_action", start, action=kind)
            return iter([flight.Result(pa.py_buffer(answer))])
        cmd = self.decode(body)
        expected = f"Action{kind}Request"
        if cmd is None or cmd.name != expected or cmd.message is None:
            raise InvalidInput(f"{kind} needs an Any-packed {expected} as its body")
        if kind == "CreatePreparedStatement":
            return iter([self._create_prepared(cmd.message, cancelled)])
        self._close_prepared(cmd.message.prepared_statement_handle)
        return iter([])

    def _create_prepared(self, msg: Message, cancelled: Cancelled | None = None) -> flight.Result:
        _refuse_transaction(msg)
        sql = msg.query
        generation = self.lake.generation  # read before resolving: a commit racing it wins
        pending: str | None = None
        try:
            # Started now: DB-API clients prepare each new statement and execute it at once.
            schema: pa.Schema | None
            schema, pending = self._start(sql, cancelled)
        except QueryError as exc:
            if "only SELECT" in str(exc):
                raise _explain_write(exc) from exc
            # Placeholders (or a bad statement): the schema is known once parameters are
            # bound; a real error surfaces when the statement runs.
            schema = None
        except NotFound:
            schema = None
        handle = secrets.token_hex(16).encode()
        with self._lock:
            self._prepared[handle] = Prepared(sql, None, schema, generation, pending)
            while len(self._prepared) > MAX_PREPARED:
                self.pending.discard(self._prepared.popitem(last=False)[1].pending)
        result = pb.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            is_update=False,
            dataset_schema=schema.serialize().to_pybytes() if schema is not None else b"",
            # No placeholders when the schema resolved without parameters.
            parameter_schema=pa.schema([]).serialize().to_pybytes() if schema is not None else b"",
        )
        return flight.Result(pa.py_buffer(pb.pack(result)))

    def _get_prepared(self, handle: bytes) -> Prepared:
        with self._lock:
            stmt = self._prepared.get(handle)
            if stmt is None:
                raise NotFound("unknown or closed prepared statement handle")
            self._prepared.move_to_end(handle)
            return stmt

    def _close_prepared(self, handle: bytes) -> None:
        with self._lock:
            stmt = self._prepared.pop(handle, None)
        if stmt is not None:
            self.pending.discard(stmt.pending)

    @property
    def open_prepared(self) -> int:
        with self._lock:
            return len(self._prepared)
