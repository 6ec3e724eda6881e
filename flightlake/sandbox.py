"""What client SQL may reach, decided on DuckDB's own parse tree (``json_serialize_sql``).

No duckdb import here: query.py parses, this module reads the tree. A statement may name the
lake's datasets (one view each in the ``flightlake`` catalog), its own CTEs and flightlake's
information_schema, call the generator table functions and any scalar function except those
that reveal configuration or the environment. Everything else (files, URLs, DuckDB's catalog
views, other attached databases) is refused with QueryError naming it.

It also reads off what a statement selects (``Reads``) and, for the plain
``SELECT columns FROM dataset [WHERE ...] [LIMIT ...]`` shape, a ``RowPlan``: the statement
rewritten to select only where its rows are (Parquet file and row number), so the rows can be
gathered from the dataset's cached Arrow table instead of converted from DuckDB's vectors
(flightlake.cache).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flightlake import sqlcompat
from flightlake.errors import NotFound, QueryError

#: Values for a statement's placeholders: positional (``?``, ``$1``) or named (``$name``).
QueryParams = Sequence[object] | Mapping[str, object]

CATALOG = "flightlake"  # the database the views live in: flightlake.main.<dataset>

# Table functions client SQL may call: generators only. Files and URLs are read through the
# dataset views, never directly; metadata functions (duckdb_secrets(), duckdb_settings(), ...)
# would show endpoints, paths and configuration.
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Scalar functions that reveal configuration or the environment.
DENIED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getenv",
        "which_secret",
        "current_database",
        "current_catalog",
        "current_schemas",
    }
)
SYSTEM_PREFIXES = ("duckdb_", "sqlite_", "pragma_", "pg_", "information_schema")
#: the columns a cached dataset's position view adds: DuckDB's Parquet ``file_index`` (the
#: file's place in the view's file list) and ``file_row_number`` (the row's in its file)
POSITION_COLUMNS = ("__flightlake_file", "__flightlake_row")


@dataclass(frozen=True)
class RowPlan:
    """A statement that selects stored columns of one dataset, unchanged, from its rows in
    order (``SELECT *`` or ``SELECT a, b FROM ds [WHERE ...] [LIMIT n [OFFSET m]]``).

    ``tree`` is the statement's parse tree with the select list replaced by the row's
    position columns (``POSITION_COLUMNS``, which the cache's position view adds to the
    dataset's columns) and the table reference left for ``position_tree`` to point at that
    view; ``columns`` are the dataset columns selected, in output order (all of them for
    ``*``).
    """

    dataset: str
    tree: dict[str, Any]
    columns: tuple[str, ...]

    def position_tree(self, catalog: str, table: str) -> dict[str, Any]:
        """The positions statement over ``catalog.main.table`` (a copy; plans are shared)."""
        tree = copy.deepcopy(self.tree)
        ref = tree["statements"][0]["node"]["from_table"]
        ref.update(catalog_name=catalog, schema_name="main", table_name=table)
        return tree


@dataclass(frozen=True)
class Reads:
    """What a statement reads: its datasets, and for its output columns that select a
    column by name (``ts``, ``t.ts``, ``ts AS t2``) that column's name; ``star`` when it
    selects ``*`` (every column keeps its name); ``rows`` when it has a ``RowPlan``."""

    datasets: set[str] = field(default_factory=set)
    sources: dict[str, str] = field(default_factory=dict)
    star: bool = False
    rows: RowPlan | None = None


def ctes_of(nodes: Sequence[dict[str, Any]]) -> set[str]:
    """The CTE names (lower case) defined anywhere in the statement."""
    return {
        str(entry.get("key", "")).lower()
        for node in nodes
        if isinstance(node.get("cte_map"), dict)
        for entry in node["cte_map"].get("map", [])
    }


def base_tables(nodes: Iterable[dict[str, Any]], ctes: set[str]) -> frozenset[str]:
    """The names of the tables the statement references that are not its CTEs."""
    return frozenset(
        str(n.get("table_name", ""))
        for n in nodes
        if n.get("type") == "BASE_TABLE" and str(n.get("table_name", "")).lower() not in ctes
    )


def check_nodes(nodes: Sequence[dict[str, Any]], views: dict[str, str], ctes: set[str]) -> set[str]:
    """Refuse what reaches outside the lake; return the datasets read.

    ``views`` maps a lower-case dataset name to its name. Raises QueryError for a table
    function, scalar function or table reference outside what the module docstring allows,
    NotFound for a table that is no dataset."""
    reads: set[str] = set()
    for node in nodes:
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = str(node.get("function", {}).get("function_name", "")).lower()
            if name not in TABLE_FUNCTIONS:
                raise QueryError(
                    f"not allowed: table function {name}(); query the datasets by name"
                )
        elif kind == "BASE_TABLE":
            table = check_table(node, set(views), ctes)
            if table in views:
                reads.add(views[table])
        elif node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in DENIED_FUNCTIONS or name.startswith(("duckdb_", "pragma_")):
                raise QueryError(f"not allowed: function {name}()")
    return reads


def check_table(node: dict[str, Any], views: set[str], ctes: set[str]) -> str:
    """A table reference must name a dataset (or a CTE of the query): DuckDB's built-in
    views (sqlite_master, duckdb_views, information_schema...) would show object paths,
    and a quoted path would read a file directly. Returns the lower-case dataset name, or
    "" for a CTE or flightlake's information_schema."""
    table = str(node.get("table_name", ""))
    schema = str(node.get("schema_name", "")).lower()
    catalog = str(node.get("catalog_name", "")).lower()
    qualified = ".".join(p for p in (catalog, schema, table) if p)
    if (
        catalog == CATALOG
        and schema == sqlcompat.INFO_SCHEMA
        and table.lower() in sqlcompat.INFO_TABLES
    ):
        return ""  # flightlake's own information_schema (sqlcompat.info_schema_ddl)
    if catalog not in ("", CATALOG) or schema not in ("", "main"):
        raise QueryError(f"not allowed: {qualified} is not a dataset")
    if not schema and table.lower() in ctes:
        return ""
    if table.lower() in views:
        return table.lower()
    if any(c in table for c in "/:\\") or table.lower().startswith(SYSTEM_PREFIXES):
        raise QueryError(f"not allowed: {qualified} is not a dataset")
    raise NotFound(f"dataset {table!r} not found")


def output_sources(node: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """``Reads.sources`` and ``.star`` from the top SELECT node of a parse tree; a set
    operation (UNION, ...) or anything else has none."""
    if node.get("type") != "SELECT_NODE":
        return {}, False
    sources: dict[str, str] = {}
    star = False
    for item in node.get("select_list", []):
        if item.get("class") == "STAR":
            star = True
        elif item.get("class") == "COLUMN_REF" and item.get("column_names"):
            column = str(item["column_names"][-1])
            sources[str(item.get("alias") or column)] = column
    return sources, star


# -- row plans -------------------------------------------------------------------------
_PLAIN_STAR: dict[str, Any] = {
    "exclude_list": [],
    "replace_list": [],
    "columns": False,
    "expr": None,
    "qualified_exclude_list": [],
    "rename_list": [],
}
_EMPTY_NODE: dict[str, Any] = {
    "cte_map": {"map": []},
    "group_expressions": [],
    "group_sets": [],
    "aggregate_handling": "STANDARD_HANDLING",
    "having": None,
    "sample": None,
    "qualify": None,
}


def row_plan(tree: dict[str, Any], dataset: str, columns: Sequence[str]) -> RowPlan | None:
    """The ``RowPlan`` of a parsed statement that reads only ``dataset`` (whose columns are
    ``columns``), or None when its shape is any other.

    The shape is deliberately narrow, so that "the rows whose rowid the rewritten statement
    returns, in that order" is exactly what the statement itself returns: one SELECT node,
    no CTE, GROUP BY, HAVING, QUALIFY, DISTINCT, ORDER BY or sample; the table reference is
    the dataset itself without column aliases; every output is ``*`` (no EXCLUDE, REPLACE,
    COLUMNS) or a column named exactly as stored, without an alias, each output name once;
    LIMIT / OFFSET are kept. A dataset with a column named like a ``POSITION_COLUMNS`` never
    gets a plan, nor does a WHERE clause ``_where_ok`` refuses.
    """
    statements = tree.get("statements")
    if not isinstance(statements, list) or len(statements) != 1:
        return None
    node = statements[0].get("node", {})
    if node.get("type") != "SELECT_NODE":
        return None
    if any(node.get(k, v) != v for k, v in _EMPTY_NODE.items()):
        return None
    if any(m.get("type") != "LIMIT_MODIFIER" for m in node.get("modifiers", [])):
        return None
    ref = node.get("from_table") or {}
    if (
        ref.get("type") != "BASE_TABLE"
        or ref.get("sample") is not None
        or ref.get("at_clause") is not None
        or ref.get("column_name_alias")
        or str(ref.get("table_name", "")).lower() != dataset.lower()
        or str(ref.get("catalog_name", "")).lower() not in ("", CATALOG)
        or str(ref.get("schema_name", "")).lower() not in ("", "main")
    ):
        return None
    qualifiers = {"", str(ref.get("alias") or ref.get("table_name", "")).lower()}
    stored = set(columns)
    if any(c.lower() in POSITION_COLUMNS for c in columns) or not _where_ok(
        node.get("where_clause"), qualifiers, stored
    ):
        return None
    out: list[str] = []
    for item in node.get("select_list", []):
        if item.get("alias"):
            return None
        if item.get("class") == "STAR":
            if any(item.get(k, v) != v for k, v in _PLAIN_STAR.items()):
                return None
            if str(item.get("relation_name", "")).lower() not in qualifiers:
                return None
            out.extend(columns)
        elif item.get("class") == "COLUMN_REF":
            names = [str(n) for n in item.get("column_names", [])]
            if not names or len(names) > 2 or names[-1] not in stored:
                return None
            if len(names) == 2 and names[0].lower() not in qualifiers:
                return None
            out.append(names[-1])
        else:
            return None
    if not out or len(set(out)) != len(out):
        return None
    rewritten = copy.deepcopy(tree)
    top = rewritten["statements"][0]["node"]
    top["select_list"] = [
        {
            "class": "COLUMN_REF",
            "type": "COLUMN_REF",
            "alias": "",
            "query_location": 0,
            "column_names": [name],
        }
        for name in POSITION_COLUMNS
    ]
    # keep column references like workers.state valid once the table is renamed
    top["from_table"]["alias"] = ref.get("alias") or ref.get("table_name", "")
    return RowPlan(dataset, rewritten, tuple(out))


def _where_ok(expr: Any, qualifiers: set[str], stored: set[str], nested: bool = False) -> bool:
    """Whether a WHERE clause means the same over the position view as over the dataset:
    no column reference names a ``POSITION_COLUMNS``, qualifies its table with a schema or
    catalog (``main.t.x``: the plan renames the table) or is the table's row itself (``t``,
    a struct of every column: the view has two more); no ``*`` / ``COLUMNS(*)`` outside a
    subquery (it would expand to the position columns too)."""
    if isinstance(expr, list):
        return all(_where_ok(v, qualifiers, stored, nested) for v in expr)
    if not isinstance(expr, dict):
        return True
    kind = expr.get("class")
    if kind == "STAR" and not nested:
        return False
    if kind == "COLUMN_REF":
        names = [str(n) for n in expr.get("column_names") or [""]]
        if names[-1].lower() in POSITION_COLUMNS or len(names) > 2:
            return False
        if len(names) == 1 and names[0].lower() in qualifiers and names[0] not in stored:
            return False
    inner = nested or kind == "SUBQUERY"
    return all(_where_ok(v, qualifiers, stored, inner) for v in expr.values())


def check_params(names: set[str], params: QueryParams | None) -> None:
    """Raise QueryError naming the placeholders of a statement that ``params`` leave unset."""
    if not names:
        return
    wanted = sorted(names, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    bound = 0 if params is None else len(params)
    if isinstance(params, Mapping):
        missing = [n for n in wanted if n not in params]
    else:
        missing = [n for n in wanted if not n.isdigit() or int(n) > bound]
    if not missing:
        return
    listed = ", ".join("$" + n for n in wanted)
    plural = "s" if len(wanted) != 1 else ""
    if bound == 0:
        raise QueryError(
            f"the statement has {len(wanted)} parameter{plural} ({listed}) but none were bound"
        )
    raise QueryError(
        f"the statement has {len(wanted)} parameter{plural} ({listed}) but {bound} "
        f"{'was' if bound == 1 else 'were'} bound: {', '.join('$' + n for n in missing)} "
        f"{'is' if len(missing) == 1 else 'are'} missing"
    )
