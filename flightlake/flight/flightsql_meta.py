"""Flight SQL's fixed answers: the spec's result schemas, SqlInfo values, XDBC types.

The schemas follow ``FlightSql.proto`` field for field (names, types, nullability), since
clients such as the ADBC driver compare them exactly. The values describe flightlake: DuckDB's
SQL, read-only statements, bulk ingest, no transactions.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from flightlake import __version__
from flightlake.catalog import MAX_NAME_CHARS

CATALOG = "flightlake"
DB_SCHEMA = "main"

# -- result schemas (FlightSql.proto) --------------------------------------------------------
_INFO_VALUE = pa.dense_union(
    [
        pa.field("string_value", pa.string(), nullable=False),
        pa.field("bool_value", pa.bool_(), nullable=False),
        pa.field("bigint_value", pa.int64(), nullable=False),
        pa.field("int32_bitmask", pa.int32(), nullable=False),
        pa.field("string_list", pa.list_(pa.string()), nullable=False),
        pa.field(
            "int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), nullable=False
        ),
    ]
)
SQL_INFO_SCHEMA = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", _INFO_VALUE, nullable=False),
    ]
)
CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.string(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema(
    [pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string(), nullable=False)]
)
TABLES_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", pa.string()),
        pa.field("db_schema_name", pa.string()),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("table_type", pa.string(), nullable=False),
    ]
)
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(
    pa.field("table_schema", pa.binary(), nullable=False)
)
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.string(), nullable=False)])
PRIMARY_KEYS_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", pa.string()),
        pa.field("db_schema_name", pa.string()),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("column_name", pa.string(), nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("key_name", pa.string()),
    ]
)
FOREIGN_KEYS_SCHEMA = pa.schema(
    [
        pa.field("pk_catalog_name", pa.string()),
        pa.field("pk_db_schema_name", pa.string()),
        pa.field("pk_table_name", pa.string(), nullable=False),
        pa.field("pk_column_name", pa.string(), nullable=False),
        pa.field("fk_catalog_name", pa.string()),
        pa.field("fk_db_schema_name", pa.string()),
        pa.field("fk_table_name", pa.string(), nullable=False),
        pa.field("fk_column_name", pa.string(), nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("fk_key_name", pa.string()),
        pa.field("pk_key_name", pa.string()),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)
XDBC_TYPE_INFO_SCHEMA = pa.schema(
    [
        pa.field("type_name", pa.string(), nullable=False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32()),
        pa.field("literal_prefix", pa.string()),
        pa.field("literal_suffix", pa.string()),
        pa.field("create_params", pa.list_(pa.field("item", pa.string(), nullable=False))),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", pa.string()),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)

# -- SqlInfo ----------------------------------------------------------------------------------
_STR, _BOOL, _BIGINT, _INT32, _STRINGS, _MAP = range(6)  # dense-union type codes of `value`

# SqlSupportsConvert codes (FlightSql.proto) and what DuckDB's CAST turns each into.
_BIGINT_C, _BINARY, _BIT, _CHAR, _DATE, _DECIMAL, _FLOAT, _INTEGER = range(8)
_INTERVAL_DT, _INTERVAL_YM, _LONGVARBINARY, _LONGVARCHAR, _NUMERIC, _REAL = range(8, 14)
_SMALLINT, _TIME, _TIMESTAMP, _TINYINT, _VARBINARY, _VARCHAR = range(14, 20)
_TEXT = [_CHAR, _LONGVARCHAR, _VARCHAR]
_NUMBERS = [_BIGINT_C, _BIT, _DECIMAL, _FLOAT, _INTEGER, _NUMERIC, _REAL, _SMALLINT, _TINYINT]
_BYTES = [_BINARY, _LONGVARBINARY, _VARBINARY]
_CONVERT: dict[int, list[int]] = {
    **{t: sorted(_NUMBERS + _TEXT) for t in _NUMBERS},
    **{t: list(range(20)) for t in _TEXT},  # text casts to every type
    **{t: sorted(_BYTES + _TEXT) for t in _BYTES},
    _DATE: sorted([_DATE, _TIMESTAMP, *_TEXT]),
    _TIME: sorted([_TIME, *_TEXT]),
    _TIMESTAMP: sorted([_DATE, _TIME, _TIMESTAMP, *_TEXT]),
    _INTERVAL_DT: sorted([_INTERVAL_DT, _INTERVAL_YM, *_TEXT]),
    _INTERVAL_YM: sorted([_INTERVAL_DT, _INTERVAL_YM, *_TEXT]),
}

#: Function names by SqlInfo list (508-512): DuckDB functions of the ODBC/JDBC escape sets
#: that DuckDB has under the same name (checked against duckdb_functions() in the tests).
SQL_KEYWORDS = [
    "ANTI", "ASOF", "COLUMNS", "DESCRIBE", "EXCLUDE", "ILIKE", "LAMBDA", "PIVOT", "PIVOT_LONGER",
    "PIVOT_WIDER", "POSITIONAL", "QUALIFY", "SEMI", "SHOW", "SUMMARIZE", "UNPIVOT",
]  # fmt: skip
NUMERIC_FUNCTIONS = [
    "ABS", "ACOS", "ASIN", "ATAN", "ATAN2", "CEILING", "COS", "COT", "DEGREES", "EXP", "FLOOR",
    "LOG", "LOG10", "PI", "POWER", "RADIANS", "RANDOM", "ROUND", "SIGN", "SIN", "SQRT", "TAN",
    "TRUNC",
]  # fmt: skip
STRING_FUNCTIONS = [
    "ASCII", "CHR", "CONCAT", "LCASE", "LEFT", "LENGTH", "LOWER", "LPAD", "LTRIM", "POSITION",
    "REPEAT", "REPLACE", "REVERSE", "RIGHT", "RPAD", "RTRIM", "SPLIT_PART", "STRPOS",
    "SUBSTRING", "TRIM", "UCASE", "UPPER",
]  # fmt: skip
SYSTEM_FUNCTIONS = ["COALESCE", "CURRENT_DATABASE", "CURRENT_SCHEMA", "IFNULL", "NULLIF"]
DATETIME_FUNCTIONS = [
    "CURRENT_DATE", "CURRENT_TIMESTAMP", "DATE_ADD", "DATE_BIN", "DATE_DIFF", "DATE_PART",
    "DATE_TRUNC", "DAYNAME", "DAYOFMONTH", "DAYOFWEEK", "DAYOFYEAR", "HOUR", "MINUTE", "MONTH",
    "MONTHNAME", "NOW", "QUARTER", "SECOND", "STRFTIME", "STRPTIME", "TIME_BUCKET", "WEEK",
    "YEAR",
]  # fmt: skip

#: info code → (union type code, value). Codes are FlightSql.proto's SqlInfo enum.
SQL_INFO: dict[int, tuple[int, Any]] = {
    0: (_STR, "flightlake"),  # FLIGHT_SQL_SERVER_NAME
    1: (_STR, __version__),  # FLIGHT_SQL_SERVER_VERSION
    2: (_STR, pa.__version__),  # FLIGHT_SQL_SERVER_ARROW_VERSION
    3: (_BOOL, False),  # FLIGHT_SQL_SERVER_READ_ONLY: bulk ingest writes; SQL itself reads
    4: (_BOOL, True),  # FLIGHT_SQL_SERVER_SQL
    5: (_BOOL, False),  # FLIGHT_SQL_SERVER_SUBSTRAIT
    8: (_INT32, 0),  # FLIGHT_SQL_SERVER_TRANSACTION: SQL_SUPPORTED_TRANSACTION_NONE
    9: (_BOOL, False),  # FLIGHT_SQL_SERVER_CANCEL
    10: (_BOOL, True),  # FLIGHT_SQL_SERVER_BULK_INGESTION
    11: (_BOOL, False),  # FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED
    100: (_INT32, 0),  # FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: none (LRU-bounded instead)
    101: (_INT32, 0),  # FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT
    500: (_BOOL, False),  # SQL_DDL_CATALOG
    501: (_BOOL, False),  # SQL_DDL_SCHEMA
    502: (_BOOL, False),  # SQL_DDL_TABLE: tables are made by ingest, not CREATE TABLE
    503: (_INT32, 1),  # SQL_IDENTIFIER_CASE: case-insensitive (DuckDB)
    504: (_STR, '"'),  # SQL_IDENTIFIER_QUOTE_CHAR
    505: (_INT32, 1),  # SQL_QUOTED_IDENTIFIER_CASE: case-insensitive (DuckDB)
    506: (_BOOL, True),  # SQL_ALL_TABLES_ARE_SELECTABLE
    507: (_INT32, 3),  # SQL_NULL_ORDERING: nulls sorted at end (DuckDB's NULLS LAST)
    513: (_STR, "\\"),  # SQL_SEARCH_STRING_ESCAPE (in catalog filter patterns)
    515: (_BOOL, True),  # SQL_SUPPORTS_COLUMN_ALIASING
    516: (_BOOL, True),  # SQL_NULL_PLUS_NULL_IS_NULL
    520: (_BOOL, True),  # SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY
    521: (_BOOL, True),  # SQL_SUPPORTS_ORDER_BY_UNRELATED
    522: (_INT32, 0b11),  # SQL_SUPPORTED_GROUP_BY: unrelated, beyond select
    523: (_BOOL, True),  # SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE
    528: (_INT32, 2),  # SQL_OUTER_JOINS_SUPPORT_LEVEL: full
    529: (_STR, "schema"),  # SQL_SCHEMA_TERM
    531: (_STR, "catalog"),  # SQL_CATALOG_TERM
    532: (_BOOL, True),  # SQL_CATALOG_AT_START
    536: (_BOOL, False),  # SQL_SELECT_FOR_UPDATE_SUPPORTED
    537: (_BOOL, False),  # SQL_STORED_PROCEDURES_SUPPORTED
    538: (_INT32, 0b1111),  # SQL_SUPPORTED_SUBQUERIES: comparisons, exists, in, quantified
    539: (_BOOL, True),  # SQL_CORRELATED_SUBQUERIES_SUPPORTED
    540: (_INT32, 0b11),  # SQL_SUPPORTED_UNIONS: UNION, UNION ALL
    562: (_INT32, 0),  # SQL_DEFAULT_TRANSACTION_ISOLATION: none
    563: (_BOOL, False),  # SQL_TRANSACTIONS_SUPPORTED
    572: (_BOOL, False),  # SQL_BATCH_UPDATES_SUPPORTED
    573: (_BOOL, False),  # SQL_SAVEPOINTS_SUPPORTED
    # -- read by the Flight SQL JDBC driver (ArrowDatabaseMetadata) up to 18.3 ---------------
    508: (_STRINGS, SQL_KEYWORDS),  # SQL_KEYWORDS: DuckDB's beyond SQL:2003
    509: (_STRINGS, NUMERIC_FUNCTIONS),  # SQL_NUMERIC_FUNCTIONS
    510: (_STRINGS, STRING_FUNCTIONS),  # SQL_STRING_FUNCTIONS
    511: (_STRINGS, SYSTEM_FUNCTIONS),  # SQL_SYSTEM_FUNCTIONS
    512: (_STRINGS, DATETIME_FUNCTIONS),  # SQL_DATETIME_FUNCTIONS
    514: (_STR, ""),  # SQL_EXTRA_NAME_CHARACTERS: letters, digits and _ only
    517: (_MAP, _CONVERT),  # SQL_SUPPORTS_CONVERT: SqlSupportsConvert -> what CAST reaches
    518: (_BOOL, True),  # SQL_SUPPORTS_TABLE_CORRELATION_NAMES (FROM workers AS w)
    519: (_BOOL, False),  # SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: not restricted
    524: (_BOOL, False),  # SQL_SUPPORTS_NON_NULLABLE_COLUMNS: no DDL; ingest defines columns
    525: (_INT32, 0b11),  # SQL_SUPPORTED_GRAMMAR: minimum + core (queries; writes are ingest)
    526: (_INT32, 0b11),  # SQL_ANSI92_SUPPORTED_LEVEL: entry + intermediate (queries)
    527: (_BOOL, False),  # SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: no constraints
    530: (_STR, "procedure"),  # SQL_PROCEDURE_TERM (there are none)
    533: (_INT32, 0),  # SQL_SCHEMAS_SUPPORTED_ACTIONS: no procedures, indexes, privileges
    534: (_INT32, 0),  # SQL_CATALOGS_SUPPORTED_ACTIONS: likewise
    535: (_INT32, 0),  # SQL_SUPPORTED_POSITIONED_COMMANDS: read-only SQL, no cursors
    # 541-561: maximum lengths and counts; 0 means no limit or not known (FlightSql.proto).
    541: (_BIGINT, 0),  # SQL_MAX_BINARY_LITERAL_LENGTH
    542: (_BIGINT, 0),  # SQL_MAX_CHAR_LITERAL_LENGTH
    543: (_BIGINT, 0),  # SQL_MAX_COLUMN_NAME_LENGTH
    544: (_BIGINT, 0),  # SQL_MAX_COLUMNS_IN_GROUP_BY
    545: (_BIGINT, 0),  # SQL_MAX_COLUMNS_IN_INDEX (no indexes)
    546: (_BIGINT, 0),  # SQL_MAX_COLUMNS_IN_ORDER_BY
    547: (_BIGINT, 0),  # SQL_MAX_COLUMNS_IN_SELECT
    548: (_BIGINT, 0),  # SQL_MAX_COLUMNS_IN_TABLE
    549: (_BIGINT, 0),  # SQL_MAX_CONNECTIONS
    550: (_BIGINT, 0),  # SQL_MAX_CURSOR_NAME_LENGTH
    551: (_BIGINT, 0),  # SQL_MAX_INDEX_LENGTH
    552: (_BIGINT, len(DB_SCHEMA)),  # SQL_DB_SCHEMA_NAME_LENGTH: the one schema, main
    553: (_BIGINT, 0),  # SQL_MAX_PROCEDURE_NAME_LENGTH
    554: (_BIGINT, len(CATALOG)),  # SQL_MAX_CATALOG_NAME_LENGTH: the one catalog
    555: (_BIGINT, 0),  # SQL_MAX_ROW_SIZE
    556: (_BOOL, False),  # SQL_MAX_ROW_SIZE_INCLUDES_BLOBS
    557: (_BIGINT, 0),  # SQL_MAX_STATEMENT_LENGTH
    558: (_BIGINT, 0),  # SQL_MAX_STATEMENTS (prepared statements are LRU-bounded, not refused)
    559: (_BIGINT, MAX_NAME_CHARS),  # SQL_MAX_TABLE_NAME_LENGTH: a dataset name
    560: (_BIGINT, 0),  # SQL_MAX_TABLES_IN_SELECT
    561: (_BIGINT, 0),  # SQL_MAX_USERNAME_LENGTH
    564: (_INT32, 1 << 0),  # SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS: TRANSACTION_NONE
    565: (_BOOL, False),  # SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT
    566: (_BOOL, False),  # SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED
    567: (_INT32, 1 << 1),  # SQL_SUPPORTED_RESULT_SET_TYPES: FORWARD_ONLY (a stream)
    568: (_INT32, 1 << 1),  # SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_UNSPECIFIED: READ_ONLY
    569: (_INT32, 1 << 1),  # ..._FORWARD_ONLY: READ_ONLY
    570: (_INT32, 0),  # ..._SCROLL_SENSITIVE: not supported
    571: (_INT32, 0),  # ..._SCROLL_INSENSITIVE: not supported
    574: (_BOOL, False),  # SQL_NAMED_PARAMETERS_SUPPORTED (in callable statements: none)
    575: (_BOOL, False),  # SQL_LOCATORS_UPDATE_COPY
    576: (_BOOL, False),  # SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED
}


def sql_info_table(codes: list[int]) -> pa.Table:
    """The SqlInfo rows for ``codes`` (all known codes when empty), unknown codes skipped."""
    wanted = [c for c in codes if c in SQL_INFO] if codes else sorted(SQL_INFO)
    children: list[list[Any]] = [[] for _ in range(6)]
    type_ids, offsets = [], []
    for code in wanted:
        kind, value = SQL_INFO[code]
        type_ids.append(kind)
        offsets.append(len(children[kind]))
        children[kind].append(value)
    children[_MAP] = [list(m.items()) for m in children[_MAP]]
    arrays = [pa.array(children[i], _INFO_VALUE.field(i).type) for i in range(6)]
    value = pa.Array.from_buffers(
        _INFO_VALUE,
        len(wanted),
        [
            None,
            pa.array(type_ids, pa.int8()).buffers()[1],
            pa.array(offsets, pa.int32()).buffers()[1],
        ],
        children=arrays,
    )
    return pa.Table.from_arrays([pa.array(wanted, pa.uint32()), value], schema=SQL_INFO_SCHEMA)


# -- XDBC type info ---------------------------------------------------------------------------
def _xdbc(
    name: str,
    code: int,
    size: int | None,
    *,
    prefix: str | None = None,
    suffix: str | None = None,
    params: list[str] | None = None,
    case: bool = False,
    searchable: int = 2,
    numeric: bool = False,
    scale: tuple[int, int] | None = None,
    sql_type: int | None = None,
    subcode: int | None = None,
    radix: int | None = None,
) -> dict[str, Any]:
    return {
        "type_name": name,
        "data_type": code,
        "column_size": size,
        "literal_prefix": prefix,
        "literal_suffix": suffix,
        "create_params": params,
        "nullable": 1,  # NULLABILITY_NULLABLE
        "case_sensitive": case,
        "searchable": searchable,
        "unsigned_attribute": False if numeric else None,
        "fixed_prec_scale": False,
        "auto_increment": False if numeric else None,
        "local_type_name": name,
        "minimum_scale": scale[0] if scale else None,
        "maximum_scale": scale[1] if scale else None,
        "sql_data_type": code if sql_type is None else sql_type,
        "datetime_subcode": subcode,
        "num_prec_radix": radix,
        "interval_precision": None,
    }


#: DuckDB's types as XDBC sees them, ordered by data_type then type_name (as the spec asks).
#: searchable: 2 = SEARCHABLE_BASIC (no LIKE), 3 = SEARCHABLE_FULL. Datetimes use the generic
#: sql_data_type 9 (XDBC_DATETIME) with a subcode: 1 date, 2 time, 3 timestamp.
XDBC_TYPES = [
    _xdbc("BOOLEAN", -7, 1),
    _xdbc("TINYINT", -6, 3, numeric=True, scale=(0, 0), radix=10),
    _xdbc("BIGINT", -5, 19, numeric=True, scale=(0, 0), radix=10),
    _xdbc("BLOB", -3, None, prefix="'", suffix="'::BLOB"),
    _xdbc("DECIMAL", 3, 38, params=["precision", "scale"], numeric=True, scale=(0, 38), radix=10),
    _xdbc("INTEGER", 4, 10, numeric=True, scale=(0, 0), radix=10),
    _xdbc("SMALLINT", 5, 5, numeric=True, scale=(0, 0), radix=10),
    _xdbc("FLOAT", 7, 24, numeric=True, radix=2),
    _xdbc("DOUBLE", 8, 53, numeric=True, radix=2),
    _xdbc("VARCHAR", 12, None, prefix="'", suffix="'", case=True, searchable=3),
    _xdbc("DATE", 91, 10, prefix="DATE '", suffix="'", sql_type=9, subcode=1),
    _xdbc("TIME", 92, 15, prefix="TIME '", suffix="'", sql_type=9, subcode=2),
    _xdbc("TIMESTAMP", 93, 26, prefix="TIMESTAMP '", suffix="'", sql_type=9, subcode=3),
]
