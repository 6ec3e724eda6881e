"""The lake facade on local and S3 storage: ingest, modes, catalog, query, drop, gc."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from flightlake.errors import Conflict, InvalidInput, NotFound, QueryError, Unavailable
from flightlake.lake import Lake
from tests.servers import make_settings


@pytest.fixture
def lake(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Lake]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    lake = Lake(make_settings(storage_url, s3))
    yield lake
    lake.close()


def reopen(lake: Lake) -> Lake:
    return Lake(lake.settings)


def rows(lake: Lake, sql: str) -> list[dict]:
    return lake.query(sql).read_all().to_pylist()


def data_keys(lake: Lake) -> set[str]:
    """The Parquet objects under data/ (the Delta logs left out)."""
    return {o.key for o in lake.storage.list("data") if "/_delta_log/" not in o.key}


def csv(text: str) -> list[bytes]:
    raw = text.encode()
    return [raw[i : i + 7] for i in range(0, len(raw), 7)]  # awkward chunk boundaries


def test_csv_ingest_infers_types_and_queries(lake: Lake) -> None:
    result = lake.ingest_csv(
        "people", csv("id,name,score,born,ok\n1,ann,1.5,2020-01-02,true\n2,,2.5,2021-03-04,false\n")
    )
    assert (result.rows_written, result.version) == (2, 0)  # Delta versions start at 0
    schema = lake.dataset("people").schema
    assert [str(f.type) for f in schema] == ["int64", "string", "double", "date32[day]", "bool"]
    assert rows(lake, "SELECT id, name FROM people ORDER BY id") == [
        {"id": 1, "name": "ann"},
        {"id": 2, "name": None},
    ]


def test_late_contradicting_value_widens_without_losing_rows(lake: Lake) -> None:
    body = "n,code\n" + "".join(f"{i},{i}\n" for i in range(300_000)) + "x1,2.5\n"
    result = lake.ingest_csv("late", [body.encode()])
    assert result.rows_written == 300_001
    schema = lake.dataset("late").schema
    assert str(schema.field("n").type) == "string"
    assert str(schema.field("code").type) == "double"
    assert rows(lake, "SELECT count(*) AS c, max(code) AS m FROM late") == [
        {"c": 300_001, "m": 299_999.0}
    ]
    assert rows(lake, "SELECT n FROM late WHERE n = 'x1'") == [{"n": "x1"}]
    assert len(data_keys(lake)) == len(lake.dataset("late").objects)  # no leftovers


def test_ambiguous_columns_become_strings(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    lake.ingest_csv("zips", [b"zip,empty\n01234,\n60601,\n"])
    schema = lake.dataset("zips").schema
    assert str(schema.field("zip").type) == "string"
    assert str(schema.field("empty").type) == "string"
    assert rows(lake, "SELECT zip FROM zips ORDER BY zip") == [{"zip": "01234"}, {"zip": "60601"}]
    assert "leading zeros" in caplog.text
    assert "no values in the file" in caplog.text


def test_bom_crlf_and_quoted_newlines(lake: Lake) -> None:
    body = '\ufeffid,text\r\n1,"line one\r\nline two"\r\n2,"a ""quoted"" word"\r\n'
    lake.ingest_csv("quoted", [body.encode()])
    assert lake.dataset("quoted").schema.names == ["id", "text"]
    assert rows(lake, "SELECT text FROM quoted ORDER BY id") == [
        {"text": "line one\r\nline two"},
        {"text": 'a "quoted" word'},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "CSV is empty"),
        (b"a,b\n1,2\n3,4,5\n", "line 3 has 3 fields, the header has 2"),
        (b"a,b\n1,\xff\xfe\n", "not valid UTF-8"),
        (b"a,a\n1,2\n", "duplicate column names: a"),
        (b"a,,c\n1,2,3\n", "column 2 has an empty name"),
    ],
)
def test_bad_csv_is_a_clear_error_and_leaves_nothing(lake: Lake, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        lake.ingest_csv("bad", [body])
    with pytest.raises(NotFound):
        lake.dataset("bad")
    assert data_keys(lake) == set()


def test_header_only_csv_makes_an_empty_dataset(lake: Lake) -> None:
    lake.ingest_csv("empty", [b"a,b\n"])
    assert lake.dataset("empty").row_count == 0
    assert rows(lake, "SELECT count(*) AS c FROM empty") == [{"c": 0}]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "'..'"),
        ("a/b", "'/'"),
        ("a\x00b", "NUL"),
        ("a\nb", "CR, LF or TAB"),
        ("x" * 1100, "longer than 1024"),
        ("", "empty"),
        ("has space", "invalid dataset name"),
    ],
)
def test_bad_dataset_names(lake: Lake, name: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        lake.ingest_csv(name, [b"a\n1\n"])


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "label": [f"r{i}" for i in range(start, start + n)],
        }
    )


def test_arrow_append_overwrite_create(lake: Lake) -> None:
    t = table(10)
    first = lake.ingest_arrow("t", t.schema, t.to_batches())
    second = lake.ingest_arrow("t", t.schema, table(5, 10).to_batches())
    assert (first.version, second.version) == (0, 1)
    assert first.manifest.dataset_id == second.manifest.dataset_id  # idempotent by name+schema
    assert lake.dataset("t").row_count == 15
    assert rows(lake, "SELECT count(*) AS c FROM t") == [{"c": 15}]
    lake.ingest_arrow(
        "t",
        pa.schema([("other", pa.string())]),
        pa.table({"other": ["x"]}).to_batches(),
        mode="overwrite",
    )
    assert rows(lake, "SELECT * FROM t") == [{"other": "x"}]
    with pytest.raises(Conflict, match="already exists"):
        lake.ingest_arrow("t", t.schema, t.to_batches(), mode="create")


def test_append_with_different_schema_names_the_columns(lake: Lake) -> None:
    t = table(3)
    lake.ingest_arrow("s", t.schema, t.to_batches())
    other = pa.table({"id": pa.array([1], pa.int32()), "extra": ["x"]})
    with pytest.raises(
        Conflict, match=r"missing columns: label.*new columns: extra.*id \(int64 -> int32\)"
    ):
        lake.ingest_arrow("s", other.schema, other.to_batches())
    assert lake.dataset("s").row_count == 3
    assert len(data_keys(lake)) == 1


def test_csv_append_uses_the_dataset_types(lake: Lake) -> None:
    lake.ingest_csv("c", [b"id,name\n1,a\n"])
    lake.ingest_csv("c", [b"id,name\n2,b\n"])
    assert rows(lake, "SELECT sum(id) AS s FROM c") == [{"s": 3}]
    with pytest.raises(Conflict, match=r"value 'zz'.* is not int64"):
        lake.ingest_csv("c", [b"id,name\nzz,b\n"])
    with pytest.raises(Conflict, match="missing columns: name"):
        lake.ingest_csv("c", [b"id,nom\n3,b\n"])
    assert lake.dataset("c").row_count == 2
    assert len(data_keys(lake)) == 2


def test_schema_change_mid_stream_commits_nothing(lake: Lake) -> None:
    t = table(3)
    bad = pa.record_batch({"id": pa.array([1], pa.int64()), "label": pa.array([1], pa.int64())})
    with pytest.raises(InvalidInput, match="schema changed mid-stream"):
        lake.ingest_arrow("m", t.schema, [*t.to_batches(), bad])
    with pytest.raises(NotFound):
        lake.dataset("m")
    assert data_keys(lake) == set()


def test_catalog_survives_restart(lake: Lake) -> None:
    t = table(100)
    lake.ingest_arrow("keep", t.schema, t.to_batches())
    lake.ingest_arrow("gone", t.schema, t.to_batches())
    lake.drop("gone")
    again = reopen(lake)
    try:
        assert [m.name for m in again.datasets()] == ["keep"]
        assert again.dataset("keep").dataset_id == lake.dataset("keep").dataset_id
        assert rows(again, "SELECT count(*) AS c FROM keep") == [{"c": 100}]
        with pytest.raises(NotFound):
            rows(again, "SELECT * FROM gone")
    finally:
        again.close()


def test_unreadable_table_is_skipped_not_fatal(lake: Lake) -> None:
    """A table folder whose Delta log is garbage is reported at start and skipped; the
    other datasets load and keep taking commits."""
    t = table(4)
    lake.ingest_arrow("ok", t.schema, t.to_batches())
    lake.ingest_arrow("ok", t.schema, t.to_batches())
    log = "data/torn/_delta_log/00000000000000000000.json"
    assert lake.storage.put_if_absent(log, b'{"commitInfo": {"torn')
    again = reopen(lake)
    try:
        assert len(again.load_warnings) == 1
        assert "data/torn" in again.load_warnings[0]
        assert [m.name for m in again.datasets()] == ["ok"]
        assert again.dataset("ok").version == 1
        again.ingest_arrow("ok", t.schema, t.to_batches())
        assert again.dataset("ok").version == 2
        assert again.dataset("ok").row_count == 12
        assert rows(again, "SELECT count(*) AS c FROM ok") == [{"c": 12}]
    finally:
        again.close()


def test_concurrent_appends_keep_every_row(lake: Lake) -> None:
    t = table(1000)
    errors: list[Exception] = []

    def append() -> None:
        try:
            lake.ingest_arrow("par", t.schema, t.to_batches())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert rows(lake, "SELECT count(*) AS c FROM par") == [{"c": 4000}]
    assert lake.dataset("par").version == 3


def test_two_lakes_on_one_store_do_not_lose_commits(lake: Lake) -> None:
    """A second server process on the same store: commits race, none is lost."""
    t = table(10)
    lake.ingest_arrow("shared", t.schema, t.to_batches())
    other = reopen(lake)
    try:
        other.ingest_arrow("shared", t.schema, t.to_batches())  # other is now at v2
        lake.ingest_arrow("shared", t.schema, t.to_batches())  # lake thinks head is v1
        again = reopen(lake)
        try:
            assert again.dataset("shared").row_count == 30
            assert again.dataset("shared").version == 2
        finally:
            again.close()
    finally:
        other.close()


def test_ingest_slots_refuse_at_once(lake: Lake) -> None:
    slots = [lake.ingest_slot(f"x{i}") for i in range(lake.settings.max_concurrent_ingests)]
    for slot in slots:
        slot.__enter__()
    try:
        with pytest.raises(Unavailable, match="ingest slots are busy"):
            lake.ingest_csv("blocked", [b"a\n1\n"])
    finally:
        for slot in slots:
            slot.__exit__(None, None, None)
    lake.ingest_csv("blocked", [b"a\n1\n"])


def test_sandbox_refuses_writes_files_and_multiple_statements(lake: Lake) -> None:
    lake.ingest_csv("t", [b"a\n1\n"])
    for sql, message in [
        ("COPY t TO 'x.csv'", "only SELECT"),
        ("CREATE TABLE x AS SELECT 1", "only SELECT"),
        ("ATTACH 'x.db'", "only SELECT"),
        ("SET memory_limit='10GB'", "only SELECT"),
        ("INSTALL httpfs", "only SELECT"),
        ("SELECT 1; SELECT 2", "exactly one"),
        ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
        ("", "empty"),
    ]:
        with pytest.raises(QueryError, match=message):
            rows(lake, sql)
    assert rows(lake, "SELECT a FROM t") == [{"a": 1}]


def test_overwrite_keeps_old_files_for_the_retention(lake: Lake) -> None:
    t = table(5)
    lake.ingest_arrow("o", t.schema, t.to_batches())
    old = set(lake.dataset("o").objects)
    lake.ingest_arrow("o", t.schema, table(2).to_batches(), mode="overwrite")
    assert old <= data_keys(lake)  # in-flight readers and time travel may still need them
    assert lake.gc(grace_seconds=0, retention_hours=1) == []  # within the retention
    assert rows(lake, "SELECT count(*) AS c FROM o AT (VERSION => 0)") == [{"c": 5}]
    assert set(lake.gc(grace_seconds=0, retention_hours=0)) == old
    assert data_keys(lake) == set(lake.dataset("o").objects)
    assert rows(lake, "SELECT count(*) AS c FROM o") == [{"c": 2}]
    with pytest.raises(NotFound, match="no longer available"):
        rows(lake, "SELECT count(*) AS c FROM o AT (VERSION => 0)")


def test_gc_removes_files_of_killed_writes_after_the_grace(lake: Lake) -> None:
    """Files a killed ingest left (written, never committed) are in no version: gc removes
    them once older than the grace period, in a table folder and in a folder with no table."""
    t = table(5)
    lake.ingest_arrow("k", t.schema, t.to_batches())
    live = set(lake.dataset("k").objects)
    for key in ("data/k/deadbeef-00000.parquet", "data/never/deadbeef-00000.parquet"):
        with lake.storage.open_output(key) as out:
            out.write(b"PAR1 half-written")
    assert lake.gc(grace_seconds=3600) == []
    assert set(lake.gc(grace_seconds=0)) == {
        "data/k/deadbeef-00000.parquet",
        "data/never/deadbeef-00000.parquet",
    }
    assert data_keys(lake) == live
    assert rows(lake, "SELECT count(*) AS c FROM k") == [{"c": 5}]


def test_new_commit_is_visible_to_the_next_query(lake: Lake) -> None:
    t = table(1)
    lake.ingest_arrow("v", t.schema, t.to_batches())
    reader = lake.query("SELECT count(*) AS c FROM v")
    lake.ingest_arrow("v", t.schema, t.to_batches())
    assert reader.read_all().to_pylist() == [{"c": 1}]
    assert rows(lake, "SELECT count(*) AS c FROM v") == [{"c": 2}]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM duckdb_secrets()", "table function duckdb_secrets"),
        ("SELECT * FROM duckdb_settings()", "table function duckdb_settings"),
        ("SELECT current_setting('s3_endpoint')", "function current_setting"),
        ("SELECT getenv('HOME')", "function getenv"),
        ("SELECT * FROM read_parquet('x.parquet')", "table function read_parquet"),
        ("SELECT * FROM 'data/x.parquet'", "is not a dataset"),
        ("SELECT * FROM information_schema.views", "is not a dataset"),
        ("SELECT * FROM system.information_schema.tables_x", "is not a dataset"),
        ("SELECT * FROM pg_catalog.pg_views", "is not a dataset"),
        ("SELECT * FROM t WHERE a IN (SELECT * FROM glob('*'))", "table function glob"),
        ("SELECT * FROM query('SELECT 1')", "table function query"),
        ("WITH x AS (SELECT * FROM duckdb_views()) SELECT * FROM x", "table function duckdb_views"),
        ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN ANALYZE"),
        ("EXPLAIN SELECT * FROM duckdb_settings()", "table function duckdb_settings"),
    ],
)
def test_sandbox_hides_configuration_and_files(lake: Lake, sql: str, message: str) -> None:
    lake.ingest_csv("t", [b"a\n1\n"])
    with pytest.raises(QueryError, match=message):
        rows(lake, sql)


def test_sandbox_allows_ordinary_analytics(lake: Lake) -> None:
    lake.ingest_csv("t", [b"a,b\n1,x\n2,y\n"])
    sql = (
        "WITH r AS (SELECT * FROM range(3) AS g(i)) "
        "SELECT t.b, count(*) AS n FROM t, r GROUP BY ALL ORDER BY 1"
    )
    assert rows(lake, sql) == [{"b": "x", "n": 3}, {"b": "y", "n": 3}]
    assert rows(lake, 'SELECT max(a) AS m FROM "t"') == [{"m": 2}]


def test_query_timeout_cancels(storage_url: str, request: pytest.FixtureRequest) -> None:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    lake = Lake(make_settings(storage_url, s3, query_timeout=0.5))
    try:
        with pytest.raises(QueryError, match="cancelled"):
            rows(lake, "SELECT count(*) FROM range(100000000000) a")
        assert rows(lake, "SELECT 1 AS x") == [{"x": 1}]
    finally:
        lake.close()


def test_runtime_error_after_first_batch_is_a_query_error(lake: Lake) -> None:
    """Regression: errors DuckDB raises mid-stream arrive as OSError and were not translated."""
    sql = (
        "SELECT CASE WHEN range < 140000 THEN range ELSE error('boom') END AS x FROM range(3000000)"
    )
    with pytest.raises(QueryError, match="boom"):
        lake.query(sql).read_all()


def test_csv_read_ahead_stays_bounded_for_a_slow_consumer(tmp_path, monkeypatch) -> None:
    """pyarrow's CSV reader reads ahead without a byte bound; csvread holds its reads back."""
    import time

    from flightlake import csvread

    monkeypatch.setattr(csvread, "READ_AHEAD_BYTES", 64 << 10)
    block = 16 << 10
    path = tmp_path / "big.csv"
    path.write_bytes(b"id,text\n" + b"".join(b'%d,"x\r\ny %d"\n' % (i, i) for i in range(200_000)))
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    sources: list = []
    ahead, rows_read = [], 0
    for batch in csvread._batches(path, schema, block, source_out=sources):
        rows_read += batch.num_rows
        time.sleep(0.002)  # a slow consumer (the Parquet writer on a slow store)
        ahead.append(sources[0].pos - rows_read * (path.stat().st_size / 200_000))
    assert rows_read == 200_000
    assert max(ahead) <= (64 << 10) + 3 * block


def test_large_csv_with_quoted_newlines_across_blocks(lake: Lake, monkeypatch) -> None:
    from flightlake import csvread

    monkeypatch.setattr(csvread, "BLOCK_BYTES", 4096)
    body = "id,text\n" + "".join(f'{i},"x\ny,{i}"\n' for i in range(5000))
    lake.ingest_csv("seg", [body.encode()])
    assert rows(lake, "SELECT count(*) AS n, count(DISTINCT text) AS d FROM seg") == [
        {"n": 5000, "d": 5000}
    ]
    assert rows(lake, "SELECT text FROM seg WHERE id = 4321") == [{"text": "x\ny,4321"}]


def test_ragged_row_far_into_the_file_names_its_line(lake: Lake, monkeypatch) -> None:
    from flightlake import csvread

    monkeypatch.setattr(csvread, "BLOCK_BYTES", 4096)
    lines = ["a,b"] + [f"{i},{i}" for i in range(3000)]
    lines[2500] = "1,2,3"
    with pytest.raises(InvalidInput, match="line 2501 has 3 fields"):
        lake.ingest_csv("ragged", ["\n".join(lines).encode() + b"\n"])
    assert data_keys(lake) == set()


@pytest.mark.s3
def test_query_path_uses_the_read_only_credential(s3_server, s3_bucket: str) -> None:
    from flightlake.secrets import Credentials
    from tests.s3server import READ_ACCESS_KEY, READ_SECRET_KEY

    url = f"s3://{s3_bucket}/lake"
    reader = Credentials(READ_ACCESS_KEY, READ_SECRET_KEY)
    lake = Lake(make_settings(url, s3_server, query_credentials=reader))
    try:
        t = table(50)
        lake.ingest_arrow("ro", t.schema, t.to_batches())  # ingest uses the main credential
        assert rows(lake, "SELECT count(*) AS n FROM ro") == [{"n": 50}]
    finally:
        lake.close()
    wrong = Lake(make_settings(url, s3_server, query_credentials=Credentials("nobody", "x")))
    try:
        with pytest.raises((QueryError, Unavailable)):
            rows(wrong, "SELECT count(*) AS n FROM ro")
    finally:
        wrong.close()


def test_gc_retention_counts_from_the_overwrite_not_the_write(lake: Lake) -> None:
    """Regression: objects replaced by an overwrite were swept at once when they had been
    written long ago, under queries that may still read them."""
    t = table(5)
    lake.ingest_arrow("old", t.schema, t.to_batches())
    old = set(lake.dataset("old").objects)
    time.sleep(1.2)
    lake.ingest_arrow("old", t.schema, t.to_batches(), mode="overwrite")
    assert lake.gc(grace_seconds=1) == []  # written > 1 s ago, but replaced just now
    assert old <= data_keys(lake)
    assert set(lake.gc(grace_seconds=1, retention_hours=0)) == old


def test_gc_never_sweeps_a_running_ingest(lake: Lake) -> None:
    """Regression: an ingest running longer than the grace period lost its early objects."""
    t = table(300_000)
    seen: list[list[str]] = []

    def batches():
        for i, batch in enumerate(t.to_batches(max_chunksize=100_000)):
            if i == 2:  # the first row group is written by now
                seen.append(lake.gc(grace_seconds=0))
            yield batch

    lake.ingest_arrow("long", t.schema, batches())
    assert seen == [[]]
    assert rows(lake, "SELECT count(*) AS n FROM long") == [{"n": 300_000}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sql FROM sqlite_master",
        "SELECT * FROM sqlite_schema",
        "SELECT * FROM duckdb_views",
        "SELECT * FROM duckdb_columns",
        "SELECT * FROM duckdb_databases",
        "SELECT * FROM pragma_database_list",
        "SELECT * FROM system.main.duckdb_views",
        "SELECT * FROM memory.main.t",
        "SELECT * FROM pg_tables",
    ],
)
def test_sandbox_hides_duckdb_builtin_views(lake: Lake, sql: str) -> None:
    """Regression: built-in views such as sqlite_master showed each view's SQL with the
    object paths (and so the bucket layout)."""
    lake.ingest_csv("t", [b"a\n1\n"])
    with pytest.raises(QueryError, match="not allowed"):
        rows(lake, sql)


def test_datasets_resolve_plain_and_qualified(lake: Lake) -> None:
    lake.ingest_csv("t", [b"a\n1\n"])
    for sql in (
        "SELECT a FROM t",
        "SELECT a FROM main.t",
        "SELECT a FROM flightlake.main.t",
        'SELECT a FROM "T"',
        "WITH t2 AS (SELECT * FROM t) SELECT a FROM t2",
    ):
        assert rows(lake, sql) == [{"a": 1}], sql
    with pytest.raises(NotFound, match="dataset 'nope' not found"):
        rows(lake, "SELECT * FROM nope")


def test_duckdb_writes_nothing_to_the_home_directory(
    storage_url: str, request: pytest.FixtureRequest, tmp_path
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HOME": str(tmp_path / "home"), "FLIGHTLAKE_STORAGE": storage_url}
    (tmp_path / "home").mkdir()
    if storage_url.startswith("s3://"):
        s3 = request.getfixturevalue("s3_server")
        env |= {
            "FLIGHTLAKE_S3_ENDPOINT": s3.endpoint,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        }
    script = (
        "from flightlake.config import load_settings\n"
        "from flightlake.lake import Lake\n"
        "lake = Lake(load_settings())\n"
        "lake.ingest_csv('t', [b'a\\n1\\n'])\n"
        "assert lake.query('SELECT count(*) AS n FROM t').read_all().to_pylist() == [{'n': 1}]\n"
        "lake.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, check=True, timeout=120)
    assert list((tmp_path / "home").iterdir()) == []


def test_pandas_and_polars_string_types_append_to_each_other(lake: Lake) -> None:
    """Regression: a large_string (pandas) dataset refused a string (polars) append, and
    Flight advertised a schema the dataset could not take back."""
    first = pa.table(
        {
            "s": pa.array(["a"], pa.large_string()),
            "d": pa.array(["x"]).dictionary_encode(),
            "l": pa.array([[1]], pa.large_list(pa.int64())),
        }
    )
    lake.ingest_arrow("mix", first.schema, first.to_batches())
    second = pa.table(
        {
            "s": pa.array(["b"], pa.string()),
            "d": pa.array(["y"]),
            "l": pa.array([[2]], pa.list_(pa.int64())),
        }
    )
    lake.ingest_arrow("mix", second.schema, second.to_batches())
    stored = lake.dataset("mix").schema
    assert [str(f.type) for f in stored] == ["string", "string", "list<item: int64>"]
    assert lake.read_schema(lake.dataset("mix")).names == ["s", "d", "l"]
    assert rows(lake, "SELECT s, d FROM mix ORDER BY s") == [
        {"s": "a", "d": "x"},
        {"s": "b", "d": "y"},
    ]
