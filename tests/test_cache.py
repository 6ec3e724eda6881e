"""The hot-dataset cache (flightlake.cache): same answers as Parquet, fresh after every
commit, bounded by cache_bytes, invisible to client SQL; on local and S3 storage."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from flightlake.cache import HOT_AFTER
from flightlake.errors import NotFound, QueryError
from flightlake.lake import Lake
from tests.helpers import wait_until
from tests.servers import make_settings

ROWS = 5_000


def table(start: int, rows: int) -> pa.Table:
    """Rows of many types, with nulls: the labels DuckDB drops (zones, durations) too."""
    ids = list(range(start, start + rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "state": pa.array(
                [None if i % 11 == 0 else "ILNYCATX"[i % 4 * 2 :][:2] for i in ids], pa.string()
            ),
            "rate": pa.array([i / 7 for i in ids], pa.float64()),
            "small": pa.array([i % 200 for i in ids], pa.uint8()),
            "ts": pa.array(
                [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i) for i in ids],
                pa.timestamp("us", tz="Europe/Paris"),
            ),
            "took": pa.array([dt.timedelta(seconds=i) for i in ids], pa.duration("ms")),
            "price": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(12, 2)),
            "tags": pa.array(
                [[str(i), "x"] if i % 3 else None for i in ids], pa.list_(pa.string())
            ),
            "day": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=i % 900) for i in ids]),
            "ok": pa.array([i % 2 == 0 for i in ids]),
        }
    )


@pytest.fixture
def lakes(storage_url: str, request: pytest.FixtureRequest) -> Iterator[tuple[Lake, Lake]]:
    """A lake with the cache and one without it, over the same storage."""
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    cached = Lake(make_settings(storage_url, s3, cache_bytes=64 << 20))
    plain = Lake(make_settings(storage_url, s3, cache_bytes=0, freshness_seconds=0))
    yield cached, plain
    cached.close()
    plain.close()


def warm(lake: Lake, name: str) -> None:
    """Query ``name`` until the cache holds it."""
    for _ in range(HOT_AFTER):
        lake.query(f"SELECT count(*) FROM {name}").read_all()
    wait_until(lambda: name in lake.engine.cached(), timeout=30, what=f"{name} cached")


def ingest(lake: Lake, name: str, data: pa.Table, mode: str = "append") -> None:
    lake.ingest_arrow(name, data.schema, data.to_batches(max_chunksize=1_000), mode=mode)


#: (SQL, parameters | "error" (both fail alike) | "unordered" (no row order to compare))
QUERIES = [
    # row plans: gathered from the cached Arrow table
    ("SELECT * FROM t", None),
    ("SELECT * FROM t WHERE state = 'IL'", None),
    ("SELECT * FROM t WHERE state IS NULL OR rate > $1", [500.0]),
    ("SELECT ts, took, price, tags FROM t WHERE id % 3 = 0", None),
    ("SELECT t.id, t.* FROM t AS x WHERE false", "error"),  # t is aliased away: an error
    ("SELECT x.id, x.state FROM t AS x WHERE x.small < 5", None),
    ("SELECT * FROM T WHERE t.ok LIMIT 17 OFFSET 3", None),
    ("SELECT took, id FROM t WHERE id IN (SELECT id FROM t WHERE small = 7)", "unordered"),
    ("SELECT * FROM t WHERE rowid < 5", "error"),  # views have no rowid: neither has the cache
    ("SELECT * FROM t WHERE __flightlake_row < 5", "error"),  # nor the position columns
    ("SELECT * FROM t WHERE file_row_number < 5", "error"),
    # the statement's own errors read the same, never naming the cache's position view
    ("SELECT * FROM t WHERE nope = 1", "error"),
    ("SELECT id FROM t x WHERE x.nope = 1 LIMIT 3", "error"),
    ("SELECT * FROM t WHERE id = 3 AND state::INTEGER > 0", "error"),
    ("SELECT * FROM t WHERE small = 'many'", "error"),
    # qualified names, as BI tools send them
    ("SELECT * FROM flightlake.main.t WHERE main.t.small = 3", None),
    ("SELECT * FROM flightlake.main.t WHERE flightlake.main.t.small = 3", None),
    ("SELECT t.* FROM main.t WHERE t.small = 4", None),
    # the table's row as a struct, star expressions: the position view has more columns
    ("SELECT * FROM t WHERE t IS NOT NULL AND small = 5", None),
    ("SELECT * FROM t AS x WHERE x::VARCHAR LIKE '%IL%' AND small < 9", None),
    ("SELECT * FROM t WHERE COLUMNS(*) IS NOT NULL", None),
    ("SELECT * FROM t x WHERE x::VARCHAR NOT LIKE '%flightlake%' AND small = 2", None),
    ("SELECT * FROM t WHERE COLUMNS('flightlake') IS NOT NULL", "error"),
    ("SELECT id FROM t WHERE COLUMNS('^s.*') IS NULL", None),
    (
        "SELECT * FROM t x WHERE EXISTS (SELECT * FROM t u WHERE u.id = x.id + 1) AND x.small = 1",
        "unordered",
    ),
    # time travel inside: the text runs over a version view, never as a row plan
    ("SELECT * FROM t WHERE id IN (SELECT id FROM t AT (VERSION => 0))", "unordered"),
    ("SELECT * FROM t AT (VERSION => 1) WHERE small = 3", None),
    # other shapes: DuckDB over the cached table
    ("SELECT state, count(*) AS n, avg(small) AS r FROM t GROUP BY state ORDER BY state", None),
    ("SELECT id, state FROM t ORDER BY rate DESC, id LIMIT 10", None),
    ("SELECT DISTINCT state FROM t ORDER BY state", None),
    ("SELECT id AS ident, ts FROM t WHERE id < 10 ORDER BY id", None),
    ("SELECT * EXCLUDE (tags) FROM t WHERE id < 10 ORDER BY id", None),
    ("SELECT id, id FROM t WHERE id < 3 ORDER BY id", None),
    ("SELECT count(*) FROM t a JOIN t b USING (id)", None),
]


def answer(lake: Lake, sql: str, params: object) -> pa.Table | str:
    try:
        got = lake.query(sql, params=params if isinstance(params, list) else None).read_all()
        # a semi join's row order is DuckDB's choice: compare those answers as sets
        return got.sort_by("id") if params == "unordered" else got
    except (QueryError, NotFound) as exc:
        return f"{type(exc).__name__}: {exc}"


def test_cached_answers_equal_parquet_answers(lakes: tuple[Lake, Lake]) -> None:
    cached, plain = lakes
    ingest(cached, "t", table(0, ROWS))
    ingest(cached, "t", table(ROWS, ROWS // 2))  # two files, two row groups
    warm(cached, "t")
    plain.refresh()
    for sql, params in QUERIES:
        got, want = answer(cached, sql, params), answer(plain, sql, params)
        if params == "error":
            assert isinstance(want, str), sql
            assert got == want, sql
            continue
        assert isinstance(want, pa.Table), (sql, want)
        assert isinstance(got, pa.Table), (sql, got)
        assert got.schema == want.schema, sql
        assert got.equals(want), sql
    stats = cached.engine.cache_stats
    assert stats["hits"] >= 6  # the row plans did read the cache
    assert stats["bytes"] > 0


def test_a_commit_is_seen_at_once_and_the_new_version_cached(lakes: tuple[Lake, Lake]) -> None:
    cached, _ = lakes
    ingest(cached, "t", table(0, ROWS))
    warm(cached, "t")
    first = cached.engine.cached()["t"]
    ingest(cached, "t", table(ROWS, 10))
    # the very next query reads the new version: the old copy is gone before it runs
    assert cached.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": ROWS + 10}]
    assert cached.query("SELECT * FROM t WHERE id >= $1", params=[ROWS]).read_all().num_rows == 10
    wait_until(lambda: "t" in cached.engine.cached(), timeout=30, what="t cached again")
    assert cached.engine.cached()["t"] > first
    assert cached.query("SELECT * FROM t").read_all().num_rows == ROWS + 10
    ingest(cached, "t", table(0, 3), mode="overwrite")
    assert cached.query("SELECT * FROM t").read_all().num_rows == 3
    cached.drop("t")
    with pytest.raises(NotFound):
        cached.query("SELECT * FROM t").read_all()
    wait_until(lambda: "t" not in cached.engine.cached(), timeout=10, what="t evicted")


def test_queried_once_is_not_cached_and_over_budget_never(
    storage_url: str, request: pytest.FixtureRequest
) -> None:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    lake = Lake(make_settings(storage_url, s3, cache_bytes=1 << 20))  # 1 MiB
    try:
        ingest(lake, "small", table(0, 500))
        ingest(lake, "big", table(0, 20_000))
        lake.query("SELECT * FROM small").read_all()
        time.sleep(0.5)
        assert lake.engine.cached() == {}
        warm(lake, "small")
        for _ in range(HOT_AFTER + 1):
            assert lake.query("SELECT * FROM big").read_all().num_rows == 20_000
        time.sleep(1.0)
        assert "big" not in lake.engine.cached()
        assert lake.engine.cache_stats["bytes"] <= 1 << 20
    finally:
        lake.close()


def test_a_dataset_that_grows_in_memory_past_the_budget_is_not_kept(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """Parquet stores 3 distinct long strings once (a dictionary); Arrow holds every copy:
    the footer's estimate passes, and the export stops once it passes the budget (rather
    than loading all of it and evicting it after)."""
    caplog.set_level(logging.INFO, logger="flightlake.cache")
    lake = Lake(make_settings(str(tmp_path), cache_bytes=1 << 20))  # 1 MiB
    try:
        long = [("abc"[i % 3] * 200) for i in range(20_000)]  # about 4 MB in Arrow
        ingest(lake, "wide", pa.table({"s": long, "i": list(range(20_000))}))
        ingest(lake, "small", table(0, 200))
        for _ in range(HOT_AFTER):
            lake.query("SELECT count(*) FROM wide").read_all()
        warm(lake, "small")  # loaded after wide by the one loader thread: wide is decided
        assert "wide" not in lake.engine.cached()
        assert "wide is larger than cache_bytes; not cached" in caplog.text
        got = lake.query("SELECT * FROM wide WHERE i % 1000 = 0").read_all()
        assert got.column("s").to_pylist() == [long[i] for i in range(0, 20_000, 1000)]
    finally:
        lake.close()


def test_least_recently_used_goes_first(tmp_path) -> None:
    data = table(0, 3_000)
    lake = Lake(make_settings(str(tmp_path), cache_bytes=1 << 30))
    try:
        for name in ("a", "b", "c"):
            ingest(lake, name, data)
        warm(lake, "a")
        size = lake.engine.cached()["a"]
    finally:
        lake.close()
    lake = Lake(make_settings(str(tmp_path), cache_bytes=int(size * 2.5)))
    try:
        warm(lake, "a")
        warm(lake, "b")
        lake.query("SELECT * FROM a").read_all()  # a is now the most recent
        warm(lake, "c")
        assert set(lake.engine.cached()) == {"a", "c"}
        for name in ("a", "b", "c"):  # b reads Parquet again, correctly
            assert (
                lake.query(f"SELECT * FROM {name}")
                .read_all()
                .equals(lake.query(f"SELECT * FROM {name} ORDER BY id").read_all())
            )
    finally:
        lake.close()


def test_a_stream_outlives_the_eviction_of_its_entry(tmp_path) -> None:
    lake = Lake(make_settings(str(tmp_path), cache_bytes=64 << 20, batch_rows=1_000))
    try:
        ingest(lake, "t", table(0, ROWS))
        warm(lake, "t")
        reader = lake.query("SELECT * FROM t WHERE small > 10")
        first = reader.read_next_batch()
        ingest(lake, "t", table(ROWS, 5))  # evicts the entry the reader is gathering from
        rest = reader.read_all()
        assert first.num_rows + rest.num_rows == sum(1 for i in range(ROWS) if i % 200 > 10)
        assert lake.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": ROWS + 5}]
        reader = lake.query("SELECT * FROM t")
        del reader  # dropped unread: the entry is unpinned, and the next commit frees it
        ingest(lake, "t", table(0, 1), mode="overwrite")
        wait_until(lambda: lake.engine.cached().get("t", 0) < 1 << 16, timeout=30, what="freed")
    finally:
        lake.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM flightlake_cache.main.positions_1",
        "SELECT * FROM flightlake_cache.positions_1",
        "SELECT * FROM positions_1",
        "SELECT __flightlake_row FROM t",
        "SELECT * FROM query_table('flightlake_cache.main.positions_1')",
        "SELECT * FROM duckdb_tables()",
    ],
)
def test_client_sql_cannot_reach_the_cached_tables(tmp_path, sql: str) -> None:
    lake = Lake(make_settings(str(tmp_path), cache_bytes=64 << 20))
    try:
        ingest(lake, "t", table(0, 100))
        warm(lake, "t")
        with pytest.raises((QueryError, NotFound)):
            lake.query(sql).read_all()
    finally:
        lake.close()


@pytest.mark.parametrize("column", ["file_row_number", "File_Index"])
def test_a_column_named_like_a_parquet_virtual_column_is_never_cached(
    tmp_path, caplog: pytest.LogCaptureFixture, column: str
) -> None:
    """The position view reads DuckDB's file_index / file_row_number: a stored column of that
    name would shadow it (rows answered from the wrong places). Found by a user trial."""
    caplog.set_level(logging.INFO, logger="flightlake.cache")
    lake = Lake(make_settings(str(tmp_path), cache_bytes=64 << 20))
    try:
        ingest(lake, "v", pa.table({"id": list(range(10)), column: [9 - i for i in range(10)]}))
        ingest(lake, "w", pa.table({"id": [1], column: [888]}))
        for _ in range(HOT_AFTER + 2):
            assert lake.query("SELECT * FROM v WHERE id = 0").read_all().to_pylist() == [
                {"id": 0, column: 9}
            ]
            assert lake.query("SELECT * FROM w").read_all().to_pylist() == [{"id": 1, column: 888}]
        ingest(lake, "t", table(0, 10))
        warm(lake, "t")  # the loader has decided v and w by now
        assert set(lake.engine.cached()) == {"t"}
        assert caplog.text.count(f"v is not cached: it has a column named {column.lower()}") == 1
    finally:
        lake.close()


def test_a_column_named_like_a_position_column_is_answered_from_the_column(tmp_path) -> None:
    lake = Lake(make_settings(str(tmp_path), cache_bytes=64 << 20))
    try:
        data = pa.table({"__flightlake_row": [10, 20, 30], "v": ["a", "b", "c"]})
        ingest(lake, "r", data)
        warm(lake, "r")
        got = lake.query("SELECT * FROM r WHERE __flightlake_row > 15").read_all()
        assert got.to_pylist() == [
            {"__flightlake_row": 20, "v": "b"},
            {"__flightlake_row": 30, "v": "c"},
        ]
    finally:
        lake.close()


def test_concurrent_queries_and_commits_agree(tmp_path) -> None:
    """Readers gathering from the cache while a writer appends: every answer is one whole
    version (a multiple of the batch appended), never a mix."""
    lake = Lake(make_settings(str(tmp_path), cache_bytes=64 << 20))
    errors: list[BaseException] = []
    stop = threading.Event()
    try:
        ingest(lake, "t", table(0, 1_000))
        warm(lake, "t")

        def read() -> None:
            while not stop.is_set():
                try:
                    got = lake.query("SELECT id FROM t WHERE id >= 0").read_all()
                    assert got.num_rows % 1_000 == 0
                    ids = got.column("id").to_pylist()
                    assert len(set(ids)) == len(ids) or got.num_rows > 1_000
                except BaseException as exc:
                    errors.append(exc)
                    return

        readers = [threading.Thread(target=read) for _ in range(3)]
        for r in readers:
            r.start()
        for i in range(1, 6):
            ingest(lake, "t", table(i * 1_000, 1_000))
            time.sleep(0.2)
        stop.set()
        for r in readers:
            r.join(timeout=30)
        assert not errors, errors[0]
        assert lake.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": 6_000}]
    finally:
        stop.set()
        lake.close()
