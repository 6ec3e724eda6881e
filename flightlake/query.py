"""The DuckDB query engine — the only module that imports duckdb.

One in-memory database holds one view per dataset (``CREATE OR REPLACE VIEW`` when a commit
lands, never per request). Every request runs on its own cursor. Client SQL is sandboxed by
DuckDB's own configuration: external access is off except for the lake's data folder
(``allowed_directories``), extensions cannot be loaded or installed, configuration is
locked, and only a single SELECT statement is accepted (checked on DuckDB's parsed statement
type, not by string matching). For S3, httpfs is loaded offline from the pinned
``duckdb-extension-httpfs`` package. DuckDB runs in UTC with the Gregorian calendar whatever
the host's TZ and locale; the labels it drops (zones, durations) are restored from the
stored schemas (flightlake.fidelity).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from flightlake import atclause, observe, sandbox, sqlcompat
from flightlake.admission import CLIENT_GONE, MEMORY, TIMEOUT
from flightlake.cache import DatasetCache, Entry, cache_budget, gather
from flightlake.config import Settings
from flightlake.errors import (
    NotFound,
    QueryCancelled,
    QueryError,
    ResourceExhausted,
    StorageError,
    Unavailable,
)
from flightlake.execution import Execution
from flightlake.fidelity import relabel, restore_labels, stored_labels
from flightlake.sandbox import CATALOG, QueryParams, Reads, check_params
from flightlake.storage import Storage
from flightlake.values import parse_size

log = logging.getLogger("flightlake.query")

_ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT}
AUDIT_CACHE_SIZE = 512  # SQL texts whose sandbox verdict is remembered (per generation)
CACHE_CATALOG = "flightlake_cache"  # cached tables (flightlake.cache); clients cannot name it


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
            # in bytes: DuckDB reads sizes itself but not "80%" (config.parse_size does)
            "memory_limit": f"{parse_size(settings.query_memory_limit)}B",
            "allow_persistent_secrets": False,
        }
        if settings.query_threads > 0:
            config["threads"] = settings.query_threads
        self._con = duckdb.connect(":memory:", config=config)
        # Answers never depend on the host's TZ or locale: ICU (built into the wheel) is
        # loaded at connect and takes the host zone; fix it to UTC and the Gregorian
        # calendar for every cursor (GLOBAL; lock_configuration below keeps it).
        self._con.execute("LOAD icu")
        self._con.execute("SET GLOBAL TimeZone = 'UTC'")
        self._con.execute("SET GLOBAL Calendar = 'gregorian'")
        # A Parquet object is never rewritten under its name (every commit adds new names),
        # so its footer can be kept: a query no longer reads it again (a request per file
        # per query on S3).
        self._con.execute("SET GLOBAL parquet_metadata_cache = true")
        self._con.execute(f"ATTACH ':memory:' AS {CATALOG}")
        self._con.execute(f"ATTACH ':memory:' AS {CACHE_CATALOG}")
        self._con.execute(f"USE {CATALOG}")
        self._ddl = threading.Lock()
        self._views: set[str] = set()
        self.generation = 0  # bumped whenever a view changes: cached schemas are stale then
        # SQL texts that passed the sandbox walk at a generation, with the SQL to run for them
        # (sqlcompat's rewrite). A client prepares, gets the flight info and fetches the same
        # text: it is walked once, not three times.
        self._audited: OrderedDict[str, tuple[int, tuple[str, Reads]]] = OrderedDict()
        self._schemas: dict[str, pa.Schema] = {}
        #: The stored (manifest) schema of a dataset, the source of truth for the labels
        #: DuckDB does not keep (zones, durations); set by the lake.
        self.stored_schema: Callable[[str], pa.Schema | None] = lambda name: None
        self._execution = Execution(settings, self._translate)
        self._info_built: dict[str, pa.Schema | None] | None = None  # sqlcompat.info_schema_ddl
        #: called with the dataset names a query reads, before they are resolved (the lake
        #: brings them up to date: freshness across servers)
        self.on_tables: Callable[[set[str]], None] | None = None
        self._tables_of: OrderedDict[str, frozenset[str]] = OrderedDict()  # sql -> datasets
        #: resolves (dataset, "VERSION" | "TIMESTAMP", value) -> (version, file keys)
        self.time_travel: Callable[[str, str, object], tuple[int, tuple[str, ...]]] | None = None
        self._version_views: OrderedDict[str, None] = OrderedDict()
        self._keys: dict[str, tuple[str, ...]] = {}  # dataset -> the objects its view reads
        self._cache_serial = 0
        self._cache = DatasetCache(cache_budget(settings), self._load_cached, self._unload_cached)
        observe.bind_queries(
            lambda: self.running_queries, lambda: self.queued_queries, self._cache.used
        )
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
        with self._ddl:
            if name in self._views and self._keys.get(name) == tuple(keys):
                return  # already there (a view rebuilt after a store failure, say)
        files = self._file_list(keys)
        sql = f"CREATE OR REPLACE VIEW {quote_ident(name)} AS SELECT * FROM read_parquet({files})"
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
            self._keys[name] = tuple(keys)
            self.generation += 1
        self._cache.moved(name, tuple(keys))

    def _file_list(self, keys: tuple[str, ...] | list[str]) -> str:
        """The SQL list literal of these objects' URLs: ``['s3://b/data/t/x.parquet', ...]``."""
        return "[" + ", ".join(_quote_literal(self.storage.url(k)) for k in keys) + "]"

    def drop_view(self, name: str) -> None:
        with self._ddl:
            self._con.execute(f"DROP VIEW IF EXISTS {quote_ident(name)}")
            self._views.discard(name)
            self._schemas.pop(name, None)
            self._keys.pop(name, None)
            self.generation += 1
        self._cache.moved(name, None)

    # -- the dataset cache (flightlake.cache) ----------------------------------------------
    def _load_cached(self, name: str, keys: tuple[str, ...], budget: int) -> Entry | str | None:
        """One version of a dataset as an Arrow table (DuckDB's export of exactly these
        files, so its types are what a query of the view returns), with its position view
        (sandbox.POSITION_COLUMNS); None, having kept nothing, when it would pass ``budget``
        bytes: refused before loading when the Parquet footers' uncompressed size says so,
        and stopped mid-export when the Arrow batches pass it (dictionary-encoded columns
        grow), so loading never holds more than ``budget`` plus one batch.

        Takes a query slot while it loads: filling the cache never adds to a full server."""
        with self._ddl:
            schema = self._schemas.get(name)
        taken = sorted({n.lower() for n in schema.names} & _PARQUET_VIRTUAL) if schema else []
        if taken:  # a stored column would shadow DuckDB's row positions in the position view
            return f"it has a column named {', '.join(taken)}"
        files = self._file_list(keys)
        source = f"read_parquet({files})"
        with self._ddl:
            self._cache_serial += 1
            view = f"{CACHE_CATALOG}.main.positions_{self._cache_serial}"
        file_, row = (quote_ident(c) for c in sandbox.POSITION_COLUMNS)
        self._execution.slots.acquire(None)
        cursor = self._cursor()
        try:
            size = cursor.execute(
                f"SELECT sum(total_uncompressed_size) FROM parquet_metadata({files})"
            ).fetchone()
            if size and size[0] is not None and int(size[0]) > budget:
                return None
            counts = cursor.execute(
                f"SELECT file_index, count(*) FROM {source} GROUP BY ALL ORDER BY 1"
            ).fetchall()
            reader = cursor.execute(f"SELECT * FROM {source}").to_arrow_reader(LOAD_BATCH_ROWS)
            batches: list[pa.RecordBatch] = []
            held = 0
            for batch in reader:
                held += batch.nbytes
                if held > budget:
                    return None
                batches.append(batch)
            arrow = pa.Table.from_batches(batches, reader.schema)
            cursor.execute(
                f"CREATE VIEW {view} AS SELECT *, file_index AS {file_}, "
                f"file_row_number AS {row} FROM {source}"
            )
        except duckdb.Error as exc:
            raise self._translate(exc) from exc
        finally:
            cursor.close()
            self._execution.slots.release()
        rows = [0] * len(keys)
        for index, count in counts:
            rows[int(index)] = int(count)
        starts = pa.array([sum(rows[:i]) for i in range(len(rows))], pa.int64())
        entry = Entry(name, keys, view, arrow, starts, arrow.nbytes)
        if sum(rows) != arrow.num_rows:  # the files changed under us: never serve it
            self._unload_cached(entry)
            return None
        return entry

    def _unload_cached(self, entry: Entry) -> None:
        """Forget an evicted entry's position view (its Arrow table goes with the entry)."""
        with self._ddl:
            self._con.execute(f"DROP VIEW IF EXISTS {entry.view}")

    def cached(self) -> dict[str, int]:
        """The datasets held in the cache now, with the bytes each holds."""
        return self._cache.datasets()

    @property
    def cache_stats(self) -> dict[str, int]:
        """The dataset cache now: bytes held, budget, hits and misses of row plans."""
        return {
            "bytes": self._cache.used(),
            "budget": self._cache.budget,
            "hits": self._cache.hits,
            "misses": self._cache.misses,
        }

    def view_schema(self, name: str) -> pa.Schema | None:
        """The schema ``SELECT * FROM name`` streams: the stored schema for every type that
        ingest stores today (see flightlake.fidelity)."""
        with self._ddl:
            schema = self._schemas.get(name)
        if schema is None:
            return None
        return restore_labels(schema, self._labels(Reads({name}, star=True))) or schema

    # -- queries -------------------------------------------------------------------------
    def check(self, sql: str) -> str:
        """The SQL to run for ``sql`` if it is exactly one read-only statement, else raise
        QueryError. Client conventions (session statements, information_schema, EXPLAIN,
        PIVOT without IN, ...) come back rewritten by ``sqlcompat``; run what is returned."""
        return self._check(sql)[0]

    def _check(self, sql: str, params: QueryParams | None = None) -> tuple[str, Reads]:
        """``check``, plus that ``params`` fill every placeholder; also returns what the
        statement reads (for the labels restored on its result)."""
        if not sql or not sql.strip():
            raise QueryError("SQL is empty")
        answer = sqlcompat.session_statement(sql)
        if answer is not None:
            return answer, Reads()
        explained = sqlcompat.explain_target(sql)
        if explained is not None:
            return "EXPLAIN " + self._check(explained, params)[0], Reads()
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {exc}") from exc
        if len(statements) > 1 and (plan := sqlcompat.pivot_plan(sql)) is not None:
            sql = plan.with_values(
                [self._pivot_values(plan.distinct_sql(i)) for i in range(len(plan.spans))]
            )
            statements = duckdb.extract_statements(sql)
        if len(statements) != 1:
            hint = ""
            if sql.lstrip().upper().startswith("PIVOT"):
                hint = "; for PIVOT, list the values: ON col IN ('a', 'b')"
            raise QueryError(f"expected exactly one SQL statement, got {len(statements)}{hint}")
        kind = statements[0].type
        if kind not in _ALLOWED_STATEMENTS:
            raise QueryError(f"only SELECT queries are allowed here, got a {kind.name} statement")
        check_params(statements[0].named_parameters, params)
        if atclause.mentions(sql):
            # time travel resolves versions (and times like now() - INTERVAL 1 HOUR) anew on
            # every request: never cached
            to_run, reads = self._audit(sql)
            # the rewritten text reads version views; a row plan would read the AT clause
            return self._time_travel(to_run), dataclasses.replace(reads, rows=None)
        generation = self.generation
        with self._ddl:
            cached = self._audited.get(sql)
            tables = self._tables_of.get(sql)
        if cached is not None and cached[0] == generation:
            if self.on_tables is not None and tables:
                self.on_tables(set(tables))  # freshness: other servers' commits and drops
            if self.generation == generation:  # no view moved meanwhile: the walk holds
                with self._ddl:
                    self._audited.move_to_end(sql)
                return cached[1]
        checked = self._audit(sql)
        with self._ddl:
            self._audited[sql] = (generation, checked)
            self._audited.move_to_end(sql)
            while len(self._audited) > AUDIT_CACHE_SIZE:
                self._audited.popitem(last=False)
        return checked

    def _pivot_values(self, sql: str) -> list[str]:
        """The values a PIVOT's ON expression takes, read through the sandbox."""
        table = self.execute(sql).read_all()
        return [str(v) for v in table.column(0).to_pylist()]

    def _refresh_info(self) -> None:
        """Rebuild the information_schema tables when the dataset views changed."""
        with self._ddl:
            snapshot = {name: self._schemas.get(name) for name in self._views}
            if snapshot == self._info_built:
                return
            try:
                for statement in sqlcompat.info_schema_ddl(sorted(self._views)):
                    self._con.execute(statement)
            except duckdb.Error as exc:  # binding a view reads Parquet metadata: the store
                raise _translate(exc) from exc
            self._info_built = snapshot

    def _audit(self, sql: str, rewrite_ok: bool = True) -> tuple[str, Reads]:
        """Walk DuckDB's own parse tree of ``sql``; refuse what reaches outside the lake.
        Returns ``sql``, or the SQL of the tree as ``sqlcompat.rewrite_tree`` rewrote it
        (itself parsed and audited again, so what runs is what was checked), with the
        datasets it reads and where its output columns come from."""
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
        rewrite = sqlcompat.rewrite_tree(tree) if rewrite_ok else sqlcompat.Rewrite()
        if rewrite.info_schema:
            self._refresh_info()
        nodes = list(sqlcompat.walk(tree["statements"]))
        ctes = sandbox.ctes_of(nodes)
        names = sandbox.base_tables(nodes, ctes)
        if rewrite_ok:
            with self._ddl:
                self._tables_of[sql] = names
                self._tables_of.move_to_end(sql)
                while len(self._tables_of) > AUDIT_CACHE_SIZE:
                    self._tables_of.popitem(last=False)
        if self.on_tables is not None:
            self.on_tables(set(names))
        with self._ddl:
            views = {v.lower(): v for v in self._views}
            schemas = dict(self._schemas)
        reads = sandbox.check_nodes(nodes, views, ctes)
        if not rewrite.changed:
            statements: Any = tree["statements"]
            plan = None
            if len(reads) == 1 and self._cache.enabled:
                (dataset,) = reads
                schema = schemas.get(dataset)
                if schema is not None:
                    plan = sandbox.row_plan(tree, dataset, schema.names)
            sources, star = sandbox.output_sources(statements[0].get("node", {}))
            return sql, Reads(reads, sources, star, plan)
        rewritten = self._sql_of(tree)
        statements = duckdb.extract_statements(rewritten) if rewritten else []
        if len(statements) != 1 or statements[0].type not in _ALLOWED_STATEMENTS:
            raise QueryError("SQL error: cannot rewrite this statement")
        return self._audit(rewritten, rewrite_ok=False)

    def _sql_of(self, tree: dict[str, Any]) -> str:
        """The SQL text of a parse tree (DuckDB's ``json_deserialize_sql``)."""
        cursor = self._con.cursor()
        try:
            row = cursor.execute(
                "SELECT json_deserialize_sql(?::JSON)", [json.dumps(tree)]
            ).fetchone()
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {exc}") from exc
        finally:
            cursor.close()
        return str(row[0]) if row else ""

    def _labels(self, reads: Reads) -> dict[str, pa.DataType]:
        """Output column -> the stored type of the dataset column it selects, for the
        columns whose labels DuckDB loses (zones, durations)."""
        if not reads.datasets:
            return {}
        schemas = [s for s in map(self.stored_schema, sorted(reads.datasets)) if s is not None]
        stored = stored_labels(schemas)
        labels = {n: t for n, t in stored.items() if reads.star and n not in reads.sources}
        labels.update({out: stored[src] for out, src in reads.sources.items() if src in stored})
        return labels

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one request, looking at the flightlake catalog."""
        cursor = self._con.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    def schema(
        self,
        sql: str,
        params: QueryParams | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> pa.Schema:
        """The result schema of ``sql`` without running it to completion.

        ``cancelled`` (the front end's "is my client gone?") is polled by the watchdog, which
        interrupts the binding when it turns true or after ``query_timeout`` seconds.
        """
        sql, reads = self._check(sql, params)
        cursor = self._cursor()
        watch = self._execution.watchdog.watch(
            cursor.interrupt, cancelled, self.settings.query_timeout
        )
        try:
            rel = cursor.sql(sql, params=params)
            schema = rel.limit(0).to_arrow_table().schema
            return restore_labels(schema, self._labels(reads)) or schema
        except duckdb.Error as exc:
            raise self._translate(exc, watch.reason) from exc
        finally:
            self._execution.watchdog.unwatch(watch)
            cursor.close()

    def execute(
        self,
        sql: str,
        batch_rows: int | None = None,
        params: QueryParams | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> pa.RecordBatchReader:
        """Run ``sql`` and return a reader streaming its result batch by batch.

        ``params`` fill the statement's ``?`` / ``$1`` (a sequence) or ``$name`` (a mapping)
        placeholders through DuckDB's own binding, never by pasting text into the SQL.

        The query first takes one of ``max_concurrent_queries`` slots, waiting up to
        ``query_queue_seconds`` (else ``Unavailable``). The slot and the cursor live as long
        as the reader is being consumed. The watchdog interrupts the query, before or after
        its first batch, once ``cancelled()`` (the front end's "is my client gone?") turns
        true or ``query_timeout`` seconds have passed; closing the reader early interrupts it
        too. A result batch larger than ``max_result_batch_bytes`` and DuckDB running out of
        ``query_memory_limit`` raise ``ResourceExhausted``.
        """
        sql, reads = self._check(sql, params)
        for name in reads.datasets:
            keys = self._keys.get(name)
            if keys is not None:
                self._cache.noted(name, keys)
        plan = reads.rows
        keys = self._keys.get(plan.dataset) if plan is not None else None
        entry = self._cache.pin(plan.dataset, keys) if plan is not None and keys else None
        if plan is None or entry is None:
            return self._run(sql, reads, batch_rows, params, cancelled)
        catalog, _, table = entry.view.split(".")
        try:
            positions = self._run(
                self._sql_of(plan.position_tree(catalog, table)),
                Reads(),
                batch_rows,
                params,
                cancelled,
            )
        except QueryCancelled:
            self._cache.unpin(entry)
            raise
        except (QueryError, NotFound):
            self._cache.unpin(entry)
            # the statement's own error (a column that is not there, a value that does not
            # convert) must read as the statement's, not as the position query's: run it
            return self._run(sql, reads, batch_rows, params, cancelled)
        except BaseException:
            self._cache.unpin(entry)
            raise
        arrow = entry.arrow.select(list(plan.columns))
        labelled = restore_labels(arrow.schema, self._labels(reads))
        batches = self._gathered(entry, arrow, positions, labelled)
        next(batches)  # started: dropping it unread now runs its finally (unpins the entry)
        return pa.RecordBatchReader.from_batches(labelled or arrow.schema, batches)

    def _gathered(
        self,
        entry: Entry,
        arrow: pa.Table,
        positions: pa.RecordBatchReader,
        labelled: pa.Schema | None,
    ) -> Iterator[pa.RecordBatch]:
        """The rows of ``arrow`` at the positions read, in their order (cache.gather),
        after one ``None`` that ``execute`` consumes; the entry stays pinned until the end."""
        try:
            yield None
            for where in positions:
                for batch in gather(entry, arrow, where.column(0), where.column(1)):
                    self._execution.check_batch(batch)
                    yield batch if labelled is None else relabel(batch, labelled)
        except QueryError as exc:  # past the first batch: without the position query's text
            text = re.split(r"\n+LINE \d+:", str(exc), maxsplit=1)[0]
            raise QueryError(text) from exc
        finally:
            positions.close()
            self._cache.unpin(entry)

    def _run(
        self,
        sql: str,
        reads: Reads,
        batch_rows: int | None,
        params: QueryParams | None,
        cancelled: Callable[[], bool] | None,
    ) -> pa.RecordBatchReader:
        """``execute`` of checked SQL: through flightlake.execution, on a cursor of its own."""
        return self._execution.run(
            self._cursor,
            _interrupt,
            sql,
            params,
            batch_rows or self.settings.batch_rows,
            cancelled,
            lambda schema: restore_labels(schema, self._labels(reads)),
        )

    def _translate(self, exc: BaseException, reason: str = "") -> Exception:
        """A DuckDB failure as a flightlake error; ``reason`` is why the watchdog interrupted
        the query, if it did."""
        interrupted = isinstance(exc, duckdb.InterruptException)
        if reason == MEMORY and (interrupted or "INTERRUPT" in str(exc).upper()):
            observe.RESOURCE_REFUSALS.labels("memory").inc()
            ceiling = self._execution.watchdog.memory_ceiling >> 20
            return ResourceExhausted(
                f"query interrupted to protect the server's memory: its resident memory "
                f"passed {ceiling:,} MiB (max_server_memory_bytes; by default "
                f"query_memory_limit {self.settings.query_memory_limit} + 1 GiB)"
            )
        if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(exc):
            observe.RESOURCE_REFUSALS.labels("memory").inc()
            return ResourceExhausted(
                "query ran out of memory: the queries running now need more than "
                f"query_memory_limit ({self.settings.query_memory_limit}) allows; "
                f"{str(exc).split(chr(10))[0]}"
            )
        return _translate(exc, reason, self.settings.query_timeout)

    @property
    def active_queries(self) -> int:
        """Queries whose result stream is still open (running, streaming or parked)."""
        return self._execution.active

    @property
    def running_queries(self) -> int:
        """Queries whose DuckDB work is still going (what the watchdog watches)."""
        return self._execution.watchdog.active

    @property
    def queued_queries(self) -> int:
        """Queries waiting for a slot now."""
        return self._execution.slots.waiting

    def close(self) -> None:
        self._cache.close()
        self._execution.close()
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
            for n in sqlcompat.walk(tree.get("statements", []))
            if n.get("type") == "BASE_TABLE" and isinstance(n.get("at_clause"), dict)
        ]
        if not refs:
            return sql
        if self.time_travel is None:
            raise QueryError("AT (...) time travel is not available here")
        time_travel = self.time_travel

        def view_for(table: str, unit: str, expr: str) -> str:
            version, keys = time_travel(table, unit, self._evaluate(expr, unit))
            return self._version_view(table, version, keys)

        try:
            return atclause.rewrite(sql, refs, view_for)
        except atclause.AtClauseError as exc:
            raise QueryError(str(exc)) from exc

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
        files = self._file_list(keys)
        with self._ddl:
            try:
                self._con.execute(
                    f"CREATE OR REPLACE VIEW {quote_ident(view)} AS "
                    f"SELECT * FROM read_parquet({files})"
                )
            except duckdb.Error as exc:
                raise StorageError(f"cannot read version {version} of {table}: {exc}") from exc
            self._version_views[view] = None
            while len(self._version_views) > VERSION_VIEWS:
                old, _ = self._version_views.popitem(last=False)
                self._con.execute(f"DROP VIEW IF EXISTS {quote_ident(old)}")
        return view


VERSION_VIEWS = 64
LOAD_BATCH_ROWS = 1 << 20  # rows per Arrow batch of a cached dataset
#: DuckDB's virtual columns of read_parquet that the position view reads; a stored column of
#: the same name would win over them
_PARQUET_VIRTUAL = frozenset({"file_index", "file_row_number"})


def _interrupt(cursor: duckdb.DuckDBPyConnection) -> None:
    """Interrupt the query running on ``cursor``, if any (a closed cursor is fine)."""
    with contextlib.suppress(duckdb.Error):
        cursor.interrupt()


# The objects DuckDB names in its I/O errors: local paths and URLs of the lake's Parquet.
_OBJECT_PATHS = re.compile(r"""(?:[a-z0-9+]+://|/)[^\s"']*\.parquet""", re.IGNORECASE)


def _translate(exc: BaseException, reason: str = "", timeout: float = 0.0) -> Exception:
    """A DuckDB error as the flightlake error clients read: no server path in the text."""
    text = _OBJECT_PATHS.sub("<server path>", str(exc))
    if isinstance(exc, duckdb.InterruptException) or "INTERRUPT" in text.upper():
        if reason == TIMEOUT:
            return QueryCancelled(
                f"query cancelled: it ran longer than query_timeout ({timeout:g} s)"
            )
        if reason == CLIENT_GONE:
            return QueryCancelled("query cancelled: the client went away")
        return QueryCancelled("query cancelled")
    if isinstance(exc, duckdb.IOException) and ("HTTP" in text or "connect" in text.lower()):
        return Unavailable(f"object store unreachable while querying: {text}")
    if isinstance(exc, duckdb.CatalogException) and "does not exist" in text:
        return NotFound(text)
    if isinstance(exc, duckdb.PermissionException):
        return QueryError(f"not allowed: {text}")
    return QueryError(text)
