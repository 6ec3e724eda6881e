"""The DuckDB query engine — the only module that imports duckdb.

One in-memory database holds one view per dataset (``CREATE OR REPLACE VIEW`` when a commit
lands, never per request). Every request runs on its own cursor. Client SQL is sandboxed by
DuckDB's own configuration: external access is off except for the lake's data folder
(``allowed_directories``), extensions cannot be loaded or installed, configuration is
locked, and only a single SELECT statement is accepted (checked on DuckDB's parsed statement
type, not by string matching). For S3, httpfs is loaded offline from the pinned
``duckdb-extension-httpfs`` package.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from flightlake.config import Settings
from flightlake.errors import NotFound, QueryError, StorageError, Unavailable
from flightlake.storage import Storage

log = logging.getLogger("flightlake.query")

#: Values for a statement's placeholders: positional (``?``, ``$1``) or named (``$name``).
QueryParams = Sequence[object] | Mapping[str, object]

_ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT}
# Table functions client SQL may call: generators only. Files and URLs are read through the
# dataset views, never directly; metadata functions (duckdb_secrets(), duckdb_settings(), ...)
# would show endpoints, paths and configuration.
_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Scalar functions that reveal configuration or the environment.
_DENIED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getenv",
        "which_secret",
        "current_database",
        "current_catalog",
        "current_schemas",
    }
)
_SYSTEM_PREFIXES = ("duckdb_", "sqlite_", "pragma_", "pg_", "information_schema")
CATALOG = "flightlake"  # the database the views live in: flightlake.main.<dataset>


def httpfs_extension_path() -> str:
    """The httpfs extension file shipped by the pinned duckdb-extension-httpfs package."""
    import duckdb_extension_httpfs

    base = os.path.dirname(duckdb_extension_httpfs.__file__)
    found = glob.glob(
        os.path.join(base, "extensions", f"v{duckdb.__version__}", "httpfs.duckdb_extension")
    )
    if not found:
        raise RuntimeError(
            f"httpfs for duckdb {duckdb.__version__} not found under {base}; "
            "install duckdb-extension-httpfs with the same version as duckdb"
        )
    return found[0]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class QueryEngine:
    """DuckDB over the lake's Parquet objects."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self._tmp = tempfile.TemporaryDirectory(prefix="flightlake-duckdb-")
        tmp = Path(self._tmp.name)
        config: dict[str, str | bool | int | float | list[str]] = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "extension_directory": str(tmp / "extensions"),
            "secret_directory": str(tmp / "secrets"),
            "temp_directory": str(tmp / "spill"),
            "memory_limit": settings.query_memory_limit,
            "allow_persistent_secrets": False,
        }
        if settings.query_threads > 0:
            config["threads"] = settings.query_threads
        self._con = duckdb.connect(":memory:", config=config)
        self._con.execute(f"ATTACH ':memory:' AS {CATALOG}")
        self._con.execute(f"USE {CATALOG}")
        self._ddl = threading.Lock()
        self._views: set[str] = set()
        self._schemas: dict[str, pa.Schema] = {}
        self._count_lock = threading.Lock()
        self._active = 0
        #: called with the dataset names a query reads, before they are resolved (the lake
        #: brings them up to date: freshness across servers)
        self.on_tables: Callable[[set[str]], None] | None = None
        #: resolves (dataset, "VERSION" | "TIMESTAMP", value) -> (version, file keys)
        self.time_travel: Callable[[str, str, object], tuple[int, tuple[str, ...]]] | None = None
        self._version_views: OrderedDict[str, None] = OrderedDict()
        if storage.is_s3:
            self._setup_s3()
        data_root = storage.root_url.rstrip("/") + "/data/"
        self._con.execute(f"SET allowed_directories=[{_quote_literal(data_root)}]")
        self._con.execute("SET enable_external_access=false")
        self._con.execute("SET lock_configuration=true")
        # Warm up: DuckDB's first Arrow export imports pandas (~0.3 s); pay it at start,
        # not in the first client's query.
        warm = self._cursor()
        try:
            warm.execute("SELECT 1").to_arrow_reader(1).read_all()
        finally:
            warm.close()

    def _setup_s3(self) -> None:
        self._con.execute(f"LOAD {_quote_literal(httpfs_extension_path())}")
        s3 = self.storage.duckdb_s3()
        parts = [
            "TYPE s3",
            f"REGION {_quote_literal(s3['region'])}",
            f"URL_STYLE {_quote_literal(s3['url_style'])}",
            f"USE_SSL {s3['use_ssl']}",
            f"SCOPE {_quote_literal(self.storage.root_url)}",
        ]
        if s3["endpoint"]:
            parts.append(f"ENDPOINT {_quote_literal(s3['endpoint'])}")
        if s3["key_id"]:
            parts.append(f"KEY_ID {_quote_literal(s3['key_id'])}")
            parts.append(f"SECRET {_quote_literal(s3['secret'])}")
        if s3["session_token"]:
            parts.append(f"SESSION_TOKEN {_quote_literal(s3['session_token'])}")
        self._con.execute(f"CREATE TEMPORARY SECRET flightlake_store ({', '.join(parts)})")
        for setting in ("http_timeout", "http_retries", "http_retry_wait_ms"):  # the store's bounds
            self._con.execute(f"SET GLOBAL {setting}={int(s3[setting])}")

    # -- views ---------------------------------------------------------------------------
    def set_view(self, name: str, keys: tuple[str, ...]) -> None:
        """Point the view ``name`` at exactly these Parquet objects."""
        urls = ", ".join(_quote_literal(self.storage.url(k)) for k in keys)
        sql = f"CREATE OR REPLACE VIEW {quote_ident(name)} AS SELECT * FROM read_parquet([{urls}])"
        with self._ddl:
            try:
                self._con.execute(sql)
                schema = (
                    self._con.execute(f"SELECT * FROM {quote_ident(name)} LIMIT 0")
                    .to_arrow_table()
                    .schema
                )
            except duckdb.Error as exc:  # reading Parquet metadata failed: the store
                raise StorageError(f"cannot read the objects of {name}: {exc}") from exc
            self._views.add(name)
            self._schemas[name] = schema

    def drop_view(self, name: str) -> None:
        with self._ddl:
            self._con.execute(f"DROP VIEW IF EXISTS {quote_ident(name)}")
            self._views.discard(name)
            self._schemas.pop(name, None)

    def view_schema(self, name: str) -> pa.Schema | None:
        """The schema ``SELECT * FROM name`` streams (may differ from the stored Parquet
        schema: e.g. large_string is read back as string)."""
        with self._ddl:
            return self._schemas.get(name)

    # -- queries -------------------------------------------------------------------------
    def check(self, sql: str) -> str:
        """Return ``sql`` if it is exactly one read-only statement, else raise QueryError."""
        if not sql or not sql.strip():
            raise QueryError("SQL is empty")
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {exc}") from exc
        if len(statements) != 1:
            raise QueryError(f"expected exactly one SQL statement, got {len(statements)}")
        kind = statements[0].type
        if kind not in _ALLOWED_STATEMENTS:
            raise QueryError(f"only SELECT queries are allowed here, got a {kind.name} statement")
        self._audit(sql)
        if _AT_CLAUSE.search(sql):
            return self._time_travel(sql)
        return sql

    def _audit(self, sql: str) -> None:
        """Walk DuckDB's own parse tree of ``sql``; refuse what reaches outside the lake."""
        cursor = self._con.cursor()
        try:
            row = cursor.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {exc}") from exc
        finally:
            cursor.close()
        tree = json.loads(row[0]) if row else {"error": True}
        if tree.get("error"):
            raise QueryError(f"SQL error: {tree.get('error_message', 'cannot parse')}")
        nodes = list(_walk(tree["statements"]))
        ctes = {
            str(entry.get("key", "")).lower()
            for node in nodes
            if isinstance(node.get("cte_map"), dict)
            for entry in node["cte_map"].get("map", [])
        }
        if self.on_tables is not None:
            self.on_tables(
                {
                    str(n.get("table_name", ""))
                    for n in nodes
                    if n.get("type") == "BASE_TABLE"
                    and str(n.get("table_name", "")).lower() not in ctes
                }
            )
        with self._ddl:
            views = {v.lower() for v in self._views}
        for node in nodes:
            kind = node.get("type")
            if kind == "TABLE_FUNCTION":
                name = str(node.get("function", {}).get("function_name", "")).lower()
                if name not in _TABLE_FUNCTIONS:
                    raise QueryError(
                        f"not allowed: table function {name}(); query the datasets by name"
                    )
            elif kind == "BASE_TABLE":
                self._check_table(node, views, ctes)
            elif node.get("class") == "FUNCTION":
                name = str(node.get("function_name", "")).lower()
                if name in _DENIED_FUNCTIONS or name.startswith(("duckdb_", "pragma_")):
                    raise QueryError(f"not allowed: function {name}()")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one request, looking at the flightlake catalog."""
        cursor = self._con.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    @staticmethod
    def _check_table(node: dict[str, Any], views: set[str], ctes: set[str]) -> None:
        """A table reference must name a dataset (or a CTE of the query): DuckDB's built-in
        views (sqlite_master, duckdb_views, information_schema...) would show object paths,
        and a quoted path would read a file directly."""
        table = str(node.get("table_name", ""))
        schema = str(node.get("schema_name", "")).lower()
        catalog = str(node.get("catalog_name", "")).lower()
        qualified = ".".join(p for p in (catalog, schema, table) if p)
        if catalog not in ("", CATALOG) or schema not in ("", "main"):
            raise QueryError(f"not allowed: {qualified} is not a dataset")
        if table.lower() in views or (not schema and table.lower() in ctes):
            return
        if any(c in table for c in "/:\\") or table.lower().startswith(_SYSTEM_PREFIXES):
            raise QueryError(f"not allowed: {qualified} is not a dataset")
        raise NotFound(f"dataset {table!r} not found")

    def schema(self, sql: str, params: QueryParams | None = None) -> pa.Schema:
        """The result schema of ``sql`` without running it to completion."""
        sql = self.check(sql)
        cursor = self._cursor()
        try:
            rel = cursor.sql(sql, params=params)
            return rel.limit(0).to_arrow_table().schema
        except duckdb.Error as exc:
            raise _translate(exc) from exc
        finally:
            cursor.close()

    def execute(
        self, sql: str, batch_rows: int | None = None, params: QueryParams | None = None
    ) -> pa.RecordBatchReader:
        """Run ``sql`` and return a reader streaming its result batch by batch.

        ``params`` fill the statement's ``?`` / ``$1`` (a sequence) or ``$name`` (a mapping)
        placeholders through DuckDB's own binding, never by pasting text into the SQL.

        The cursor lives as long as the reader is being consumed; the query is interrupted
        after ``query_timeout`` seconds or when the reader is closed early.
        """
        sql = self.check(sql)
        cursor = self._cursor()
        timer = threading.Timer(self.settings.query_timeout, cursor.interrupt)
        timer.daemon = True
        timer.start()
        try:
            cursor.execute(sql, params)
            reader = cursor.to_arrow_reader(batch_rows or self.settings.batch_rows)
        except duckdb.Error as exc:
            timer.cancel()
            cursor.close()
            raise _translate(exc, self.settings.query_timeout) from exc
        except BaseException:
            timer.cancel()
            cursor.close()
            raise
        with self._count_lock:
            self._active += 1
        return pa.RecordBatchReader.from_batches(
            reader.schema,
            _guarded(reader, cursor, timer, self.settings.query_timeout, self._finished),
        )

    def _finished(self) -> None:
        with self._count_lock:
            self._active -= 1

    @property
    def active_queries(self) -> int:
        """Queries whose result stream is still open."""
        with self._count_lock:
            return self._active

    def close(self) -> None:
        self._con.close()
        self._tmp.cleanup()

    # -- time travel ---------------------------------------------------------------------
    def _time_travel(self, sql: str) -> str:
        """``sql`` with each ``name AT (VERSION => n | TIMESTAMP => t)`` replaced by a view
        over exactly that version's files (resolved by ``time_travel`` from the table log;
        the client names only a dataset and a version, never a file)."""
        cursor = self._con.cursor()
        try:
            row = cursor.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
        finally:
            cursor.close()
        tree = json.loads(row[0]) if row else {}
        refs = [
            n
            for n in _walk(tree.get("statements", []))
            if n.get("type") == "BASE_TABLE" and isinstance(n.get("at_clause"), dict)
        ]
        if not refs:
            return sql
        if self.time_travel is None:
            raise QueryError("AT (...) time travel is not available here")
        raw = sql.encode()
        edits: list[tuple[int, int, bytes]] = []
        for node in refs:
            start = int(node.get("query_location", -1))
            span = _at_span(raw, start)
            if span is None:
                raise QueryError("cannot read the AT (...) clause; write name AT (VERSION => n)")
            open_paren, close_paren = span
            unit = str(node["at_clause"].get("unit", "")).upper()
            inner = raw[open_paren + 1 : close_paren].decode()
            expr = inner.split("=>", 1)[1] if "=>" in inner else ""
            value = self._evaluate(expr, unit)
            table = str(node.get("table_name", ""))
            version, keys = self.time_travel(table, unit, value)
            view = self._version_view(table, version, keys)
            alias = "" if node.get("alias") else f" AS {quote_ident(table)}"
            edits.append((start, close_paren + 1, (quote_ident(view) + alias).encode()))
        for start, end, text in sorted(edits, reverse=True):
            raw = raw[:start] + text + raw[end:]
        return raw.decode()

    def _evaluate(self, expr: str, unit: str) -> object:
        """The value of an AT clause's expression (checked like any SQL): a timestamp as
        milliseconds since the epoch (UTC), anything else as DuckDB returns it."""
        probe = (
            f"SELECT epoch_ms(({expr})::TIMESTAMPTZ)" if unit == "TIMESTAMP" else f"SELECT ({expr})"
        )
        self.check(probe)
        cursor = self._cursor()
        try:
            row = cursor.execute(probe).fetchone()
        except duckdb.Error as exc:
            raise QueryError(f"AT (...): {exc}") from exc
        finally:
            cursor.close()
        return row[0] if row else None

    def _version_view(self, table: str, version: int, keys: tuple[str, ...]) -> str:
        """A view over one version's files, kept for the last VERSION_VIEWS versions used."""
        view = f"__flightlake_{table.lower()}@{version}"
        with self._ddl:
            if view in self._version_views:
                self._version_views.move_to_end(view)
                return view
        urls = ", ".join(_quote_literal(self.storage.url(k)) for k in keys)
        with self._ddl:
            try:
                self._con.execute(
                    f"CREATE OR REPLACE VIEW {quote_ident(view)} AS "
                    f"SELECT * FROM read_parquet([{urls}])"
                )
            except duckdb.Error as exc:
                raise StorageError(f"cannot read version {version} of {table}: {exc}") from exc
            self._version_views[view] = None
            while len(self._version_views) > VERSION_VIEWS:
                old, _ = self._version_views.popitem(last=False)
                self._con.execute(f"DROP VIEW IF EXISTS {quote_ident(old)}")
        return view


VERSION_VIEWS = 64
_AT_CLAUSE = re.compile(r"\bAT\s*\(", re.IGNORECASE)


def _at_span(raw: bytes, start: int) -> tuple[int, int] | None:
    """Byte offsets of the parentheses of the AT clause following the table reference that
    starts at ``start`` (quotes inside are skipped)."""
    match = re.compile(rb"\bAT\s*\(", re.IGNORECASE).search(raw, max(start, 0))
    if match is None:
        return None
    open_paren = match.end() - 1
    depth = 0
    quote = 0
    for i in range(open_paren, len(raw)):
        c = raw[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x27, 0x22):  # ' or "
            quote = c
        elif c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return open_paren, i
    return None


def _walk(node: object) -> Iterator[dict[str, Any]]:
    """Every JSON object in a parse tree, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _guarded(
    reader: pa.RecordBatchReader,
    cursor: duckdb.DuckDBPyConnection,
    timer: threading.Timer,
    timeout: float,
    finished: Callable[[], None],
) -> Iterator[pa.RecordBatch]:
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, duckdb.Error, OSError) as exc:
                # DuckDB errors raised after the first chunk surface through Arrow's C stream
                # as plain OSError; they are still query errors.
                raise _translate(exc, timeout) from exc
            yield batch
    finally:
        timer.cancel()
        try:
            cursor.interrupt()
        finally:
            cursor.close()
            finished()


def _translate(exc: BaseException, timeout: float | None = None) -> Exception:
    text = str(exc)
    if isinstance(exc, duckdb.InterruptException) or "INTERRUPT" in text.upper():
        return QueryError(
            f"query cancelled (timeout {timeout:.0f} s or client gone)"
            if timeout
            else "query cancelled"
        )
    if isinstance(exc, duckdb.IOException) and ("HTTP" in text or "connect" in text.lower()):
        return Unavailable(f"object store unreachable while querying: {text}")
    if isinstance(exc, duckdb.CatalogException) and "does not exist" in text:
        return NotFound(text)
    if isinstance(exc, duckdb.PermissionException):
        return QueryError(f"not allowed: {text}")
    return QueryError(text)
