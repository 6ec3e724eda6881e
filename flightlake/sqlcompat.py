"""What SQL clients and BI tools send, made to work inside the query sandbox.

Dashboards, SQL IDEs and SQLAlchemy dialects open a connection with statements that are no
query of the lake: ``BEGIN`` / ``COMMIT`` / ``ROLLBACK``, ``SET application_name = ...``,
``SELECT current_database()``, ``information_schema.tables``. This module recognises them on
the SQL text and on DuckDB's JSON parse tree (``json_serialize_sql``) and turns each into a
plain SELECT that the sandbox in ``query.py`` then checks as usual. It never imports duckdb:
``query.py`` parses, runs and hands trees and values here.

What is answered (sources: the PostgreSQL and SQL standard names tools expect):

- session statements: ``BEGIN``, ``START TRANSACTION``, ``COMMIT``, ``END``, ``ROLLBACK``,
  ``ABORT`` (any case, optional ``TRANSACTION`` / ``WORK`` and trailing ``;``) are no-ops with
  an empty result; ``SHOW search_path`` answers ``main``; a short list of client ``SET``\\s
  (``SESSION_SETS`` below) is accepted and ignored. Nothing here ever reaches DuckDB's ``SET``.
- ``information_schema.tables`` / ``.columns`` / ``.schemata`` (also ``system.`` and
  ``flightlake.`` qualified, any case) read flightlake's own tables in schema
  ``INFO_SCHEMA``, built from the dataset views only (``info_schema_ddl``). DuckDB's own
  ``information_schema`` views (which show ``read_parquet('<path>')``) stay refused.
- ``current_database()`` / ``current_catalog()`` → ``'flightlake'``, ``current_schema()`` →
  ``'main'``, ``current_schemas(b)`` → ``['main']``.
- ``date_bin(stride, ts[, origin])`` (PostgreSQL 14, DataFusion; Grafana's ``$__dateBin``) →
  DuckDB's ``time_bucket(stride, ts, origin)``: same argument order and the same floor to the
  grid ``origin + k * stride``; the origin defaults to the Unix epoch as in DataFusion.
- ``EXPLAIN <select>`` (``explain_target``); ``EXPLAIN ANALYZE`` and options are refused.
- ``PIVOT src ON col USING agg`` without ``IN (...)`` (``PivotPlan``): DuckDB would first run
  a ``CREATE TYPE ... AS ENUM`` of the column's distinct values; instead the values are read
  with a sandboxed ``SELECT DISTINCT`` and written into an explicit ``IN`` list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flightlake.errors import QueryError

CATALOG = "flightlake"
SCHEMA = "main"
#: The schema (in catalog ``flightlake``) holding flightlake's information_schema tables.
INFO_SCHEMA = "flightlake_information_schema"
INFO_TABLES = ("tables", "columns", "schemata")

#: What a no-op session statement answers: one column, no rows.
NOOP_SQL = "SELECT 'ok' AS status WHERE false"

#: Most values a PIVOT without an IN list may resolve to (DuckDB's own pivot_limit is 100000;
#: a dashboard with more columns than this is a mistake).
MAX_PIVOT_VALUES = 10_000

# -- session statements ----------------------------------------------------------------
_TRANSACTION = re.compile(
    r"(?:BEGIN|START|COMMIT|END|ROLLBACK|ABORT)"
    r"(?:\s+(?:TRANSACTION|WORK))?"
    r"(?:\s+(?:READ\s+ONLY|READ\s+WRITE|ISOLATION\s+LEVEL\s+"
    r"(?:READ\s+COMMITTED|READ\s+UNCOMMITTED|REPEATABLE\s+READ|SERIALIZABLE)))*",
    re.IGNORECASE,
)
_VALUE = r"(?:'(?:[^']|'')*'|\"[^\"]*\"|[A-Za-z0-9_.$+-]+)"
_SET = re.compile(
    rf"SET\s+(?:SESSION\s+|LOCAL\s+)?(?P<name>TIME\s+ZONE|[A-Za-z_]+)"
    rf"\s*(?:=|\s+TO\s+|\s+)\s*(?P<value>{_VALUE}(?:\s*,\s*{_VALUE})*)",
    re.IGNORECASE,
)
_SHOW = re.compile(r"SHOW\s+(?P<name>search_path|TIME\s+ZONE|timezone)", re.IGNORECASE)

_UTC = {"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "+00:00", "0", "local"}
_SEARCH_PATH = {"main", "flightlake.main", "public", "$user"}


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("''", "'")
    return value


def _values(text: str) -> list[str]:
    return [_unquote(v) for v in re.findall(_VALUE, text)]


def _time_zone(value: str) -> bool:
    return all(v.lower() in _UTC for v in _values(value))


def _search_path(value: str) -> bool:
    return all(v.lower() in _SEARCH_PATH for v in _values(value))


#: Client SETs accepted and ignored: name → test of the value (True: any value). Each is a
#: connection setting of PostgreSQL drivers and SQLAlchemy dialects with no effect on what
#: flightlake answers; a value that would change answers (another time zone) is refused.
SESSION_SETS: dict[str, Callable[[str], bool]] = {
    "application_name": lambda v: True,
    "extra_float_digits": lambda v: True,
    "client_min_messages": lambda v: True,
    "statement_timeout": lambda v: True,
    "lock_timeout": lambda v: True,
    "idle_in_transaction_session_timeout": lambda v: True,
    "datestyle": lambda v: all(
        x.lower() in ("iso", "mdy", "dmy", "ymd", "")
        for value in _values(v)
        for x in re.split(r"[\s,]+", value)
    ),
    "intervalstyle": lambda v: True,
    "client_encoding": lambda v: _unquote(v).lower().replace("-", "") in ("utf8", "unicode"),
    "names": lambda v: _unquote(v).lower().replace("-", "") in ("utf8", "utf8mb4", "unicode"),
    "standard_conforming_strings": lambda v: _unquote(v).lower() in ("on", "true", "1"),
    "bytea_output": lambda v: True,
    "search_path": _search_path,
    "schema": _search_path,
    "time zone": _time_zone,
    "timezone": _time_zone,
}


def _statement_text(sql: str, trailing_comments: bool = True) -> str:
    """``sql`` without surrounding blanks, leading ``--`` / ``/* */`` comments and trailing
    semicolons; also without a trailing ``--`` comment if ``trailing_comments`` (only for
    statements that hold no string literal with ``--`` in it)."""
    text = sql.strip()
    tail = r"(?:;|\s|--[^\n]*$)+$" if trailing_comments else r"(?:;|\s)+$"
    while True:
        before = text
        text = re.sub(r"^(?:--[^\n]*\n|/\*.*?\*/)\s*", "", text, flags=re.DOTALL)
        text = re.sub(tail, "", text)
        if text == before:
            return text


def session_statement(sql: str) -> str | None:
    """The SELECT that answers ``sql`` if it is a harmless session statement, else None.

    Raises QueryError for a ``SET`` of a known client setting to a value flightlake cannot
    honour (e.g. ``SET TIME ZONE 'Europe/Berlin'``: answers are always UTC).
    """
    text = _statement_text(sql)
    if _TRANSACTION.fullmatch(text):
        return NOOP_SQL
    show = _SHOW.fullmatch(text)
    if show:
        name = show["name"].lower()
        if name == "search_path":
            return "SELECT 'main' AS search_path"
        return "SELECT 'UTC' AS \"TimeZone\""
    match = _SET.fullmatch(text)
    if match:
        name = re.sub(r"\s+", " ", match["name"]).lower()
        check = SESSION_SETS.get(name)
        if check is None:
            return None  # any other SET: refused by the sandbox as before
        if not check(match["value"]):
            raise QueryError(
                f"SET {name} to {match['value']} is not supported: flightlake answers in UTC "
                f"with one schema {SCHEMA!r} of catalog {CATALOG!r}"
            )
        return NOOP_SQL
    return None


# -- EXPLAIN ----------------------------------------------------------------
_EXPLAIN = re.compile(r"EXPLAIN\b(?P<rest>.*)", re.IGNORECASE | re.DOTALL)


def explain_target(sql: str) -> str | None:
    """The statement ``EXPLAIN <statement>`` explains, or None if ``sql`` is no EXPLAIN.

    Raises QueryError for ``EXPLAIN ANALYZE`` (its profile lists the files read) and for
    EXPLAIN options such as ``(FORMAT json)``.
    """
    match = _EXPLAIN.fullmatch(_statement_text(sql, trailing_comments=False))
    if match is None:
        return None
    rest = match["rest"].strip()
    if re.match(r"ANALY[SZ]E\b", rest, re.IGNORECASE):
        raise QueryError("not allowed: EXPLAIN ANALYZE (its profile shows storage paths)")
    if rest.startswith("("):
        raise QueryError("not allowed: EXPLAIN options; send plain EXPLAIN SELECT ...")
    return rest


# -- the parse tree ----------------------------------------------------------------
def walk(node: object) -> Iterator[dict[str, Any]]:
    """Every JSON object in a parse tree, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _constant(value: str, alias: str, location: Any) -> dict[str, Any]:
    return {
        "class": "CONSTANT",
        "type": "VALUE_CONSTANT",
        "alias": alias,
        "query_location": location,
        "value": {"type": {"id": "VARCHAR", "type_info": None}, "is_null": False, "value": value},
    }


def _function(name: str, children: list[Any], like: dict[str, Any]) -> dict[str, Any]:
    node = dict(like)
    node.update(function_name=name, children=children, schema="", catalog="")
    return node


_NAMED_CONSTANTS = {
    "current_database": CATALOG,
    "current_catalog": CATALOG,
    "current_schema": SCHEMA,
}
_EPOCH = {
    "class": "CAST",
    "type": "OPERATOR_CAST",
    "alias": "",
    "query_location": 18446744073709551615,
    "child": _constant("1970-01-01 00:00:00", "", 18446744073709551615),
    "cast_type": {"id": "TIMESTAMP", "type_info": None},
    "try_cast": False,
}


@dataclass
class Rewrite:
    """What ``rewrite_tree`` changed: any node at all, and whether information_schema is read."""

    changed: bool = False
    info_schema: bool = False
    notes: list[str] = field(default_factory=list)


def rewrite_tree(tree: dict[str, Any]) -> Rewrite:
    """Rewrite ``tree`` (``json_serialize_sql`` output) in place; see the module docstring."""
    done = Rewrite()
    for node in list(walk(tree.get("statements", []))):
        if node.get("type") == "BASE_TABLE":
            schema = str(node.get("schema_name", "")).lower()
            catalog = str(node.get("catalog_name", "")).lower()
            table = str(node.get("table_name", "")).lower()
            if (
                schema == "information_schema"
                and catalog in ("", "system", CATALOG)
                and table in INFO_TABLES
            ):
                node.update(catalog_name=CATALOG, schema_name=INFO_SCHEMA, table_name=table)
                done.changed = done.info_schema = True
        elif node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if str(node.get("schema", "")).lower() not in ("", "pg_catalog", SCHEMA):
                continue
            children = node.get("children") or []
            if name in _NAMED_CONSTANTS and not children:
                alias = str(node.get("alias") or f"{name}()")
                value = _constant(_NAMED_CONSTANTS[name], alias, node.get("query_location"))
                node.clear()
                node.update(value)
                done.changed = True
            elif name == "current_schemas" and len(children) == 1:
                alias = str(node.get("alias") or "current_schemas")
                main = _constant(SCHEMA, "", node.get("query_location"))
                replaced = _function("list_value", [main], node)
                replaced["alias"] = alias
                node.clear()
                node.update(replaced)
                done.changed = True
            elif name == "date_bin" and len(children) in (2, 3):
                args = list(children) if len(children) == 3 else [*children, dict(_EPOCH)]
                node.update(function_name="time_bucket", children=args)
                done.changed = True
    return done


def info_schema_ddl(views: Sequence[str]) -> list[str]:
    """The statements that (re)build flightlake's information_schema tables for ``views``.

    They run on the server's own connection (not through the sandbox) and copy only names
    and types from DuckDB's catalog, for the dataset views only: never a view definition.
    Dataset views are reported as ``BASE TABLE`` (they are tables to clients).
    """
    names = ", ".join(_literal(v) for v in views) or "NULL"
    where = (
        f"table_catalog = {_literal(CATALOG)} AND table_schema = {_literal(SCHEMA)} "
        f"AND table_name IN ({names})"
    )
    target = f"{CATALOG}.{INFO_SCHEMA}"
    null = "NULL::VARCHAR"
    return [
        f"CREATE SCHEMA IF NOT EXISTS {target}",
        f"""CREATE OR REPLACE TABLE {target}.tables AS
            SELECT table_catalog, table_schema, table_name, 'BASE TABLE' AS table_type,
                   {null} AS self_referencing_column_name, {null} AS reference_generation,
                   {null} AS user_defined_type_catalog, {null} AS user_defined_type_schema,
                   {null} AS user_defined_type_name, 'NO' AS is_insertable_into,
                   'NO' AS is_typed, {null} AS commit_action, {null} AS table_comment
            FROM information_schema.tables WHERE {where}
            ORDER BY table_name""",
        f"""CREATE OR REPLACE TABLE {target}.columns AS
            SELECT table_catalog, table_schema, table_name, column_name, ordinal_position,
                   {null} AS column_default, is_nullable, data_type,
                   character_maximum_length, character_octet_length, numeric_precision,
                   numeric_precision_radix, numeric_scale, datetime_precision,
                   interval_type, interval_precision,
                   {null} AS character_set_catalog, {null} AS character_set_schema,
                   {null} AS character_set_name, {null} AS collation_catalog,
                   {null} AS collation_schema, {null} AS collation_name,
                   {null} AS domain_catalog, {null} AS domain_schema, {null} AS domain_name,
                   {null} AS udt_catalog, {null} AS udt_schema, data_type AS udt_name,
                   'NO' AS is_identity, 'NEVER' AS is_generated,
                   {null} AS generation_expression, 'NO' AS is_updatable,
                   {null} AS column_comment
            FROM information_schema.columns WHERE {where}
            ORDER BY table_name, ordinal_position""",
        f"""CREATE OR REPLACE TABLE {target}.schemata AS
            SELECT {_literal(CATALOG)} AS catalog_name, {_literal(SCHEMA)} AS schema_name,
                   {_literal(CATALOG)} AS schema_owner,
                   {null} AS default_character_set_catalog,
                   {null} AS default_character_set_schema,
                   'UTF8' AS default_character_set_name, {null} AS sql_path""",
    ]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# -- PIVOT without IN ----------------------------------------------------------------
_TOKEN = re.compile(
    r"""(?P<ws>\s+|--[^\n]*|/\*.*?\*/)
      |(?P<str>'(?:[^']|'')*')
      |(?P<ident>"(?:[^"]|"")*")
      |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_ON_END = {"USING", "GROUP", "ORDER", "LIMIT", "OFFSET"}


@dataclass
class _Tok:
    kind: str
    text: str
    start: int
    depth: int


def _tokens(sql: str) -> list[_Tok]:
    out, depth = [], 0
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "other"
        if kind == "ws":
            continue
        text = m.group()
        if text == ")":
            depth -= 1
        out.append(_Tok(kind, text, m.start(), depth))
        if text == "(":
            depth += 1
    return out


@dataclass
class PivotPlan:
    """A ``PIVOT src ON e1, e2 ... USING ...`` statement whose ON expressions lack ``IN``."""

    sql: str
    source: str
    #: (start, end) offsets in ``sql`` of each ON expression without an IN list
    spans: list[tuple[int, int]]

    def distinct_sql(self, index: int) -> str:
        """The query that lists the values of ON expression ``index`` (as text, sorted)."""
        start, end = self.spans[index]
        expr = self.sql[start:end]
        return (
            f"SELECT DISTINCT CAST({expr} AS VARCHAR) AS v FROM {self.source} "
            f"WHERE ({expr}) IS NOT NULL ORDER BY 1 LIMIT {MAX_PIVOT_VALUES + 1}"
        )

    def with_values(self, values: Sequence[Sequence[str]]) -> str:
        """The statement with an explicit ``IN (...)`` after each expression."""
        out, last = [], 0
        for (start, end), vals in zip(self.spans, values, strict=True):
            if len(vals) > MAX_PIVOT_VALUES:
                raise QueryError(
                    f"PIVOT ON {self.sql[start:end]} has more than {MAX_PIVOT_VALUES} values; "
                    "name the ones you want with IN (...)"
                )
            if not vals:
                raise QueryError(
                    f"PIVOT ON {self.sql[start:end]} has no values; name them with IN (...)"
                )
            out.append(self.sql[last:end])
            out.append(" IN (" + ", ".join(_literal(v) for v in vals) + ")")
            last = end
        out.append(self.sql[last:])
        return "".join(out)


def pivot_plan(sql: str) -> PivotPlan | None:
    """The plan for ``sql`` if it is a PIVOT statement with an ON expression lacking ``IN``.

    Only the statement form ``PIVOT <source> ON <exprs> [USING ...] [GROUP BY ...] ...`` is
    handled; the source and expressions are text the caller then runs through the sandbox.
    """
    text = _statement_text(sql, trailing_comments=False)
    toks = _tokens(text)
    if not toks or toks[0].kind != "word" or toks[0].text.upper() not in ("PIVOT", "PIVOT_WIDER"):
        return None
    on = next(
        (
            i
            for i, t in enumerate(toks)
            if t.depth == 0 and t.kind == "word" and t.text.upper() == "ON"
        ),
        None,
    )
    if on is None or on < 2:
        return None
    source = text[toks[1].start : toks[on].start].strip()
    end = next(
        (
            i
            for i in range(on + 1, len(toks))
            if toks[i].depth == 0
            and (
                toks[i].text == ";" or (toks[i].kind == "word" and toks[i].text.upper() in _ON_END)
            )
        ),
        len(toks),
    )
    # split the ON clause at depth-0 commas; keep expressions with no depth-0 IN
    spans: list[tuple[int, int]] = []
    group: list[_Tok] = []
    for tok in [*toks[on + 1 : end], None]:
        if tok is None or (tok.depth == 0 and tok.text == ","):
            if not group:
                return None
            has_in = any(
                t.depth == 0 and t.kind == "word" and t.text.upper() == "IN" for t in group
            )
            if group[0].text == "(" and any(t.depth == 1 and t.text == "," for t in group):
                return None  # a column group ON (a, b): leave it to the IN-list advice
            if not has_in:
                last = group[-1]
                spans.append((group[0].start, last.start + len(last.text)))
            group = []
        else:
            group.append(tok)
    if not spans:
        return None
    return PivotPlan(text, source, spans)
