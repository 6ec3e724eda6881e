"""Datasets as Delta Lake tables, on local and S3 storage: idempotency keys, freshness
across servers, time travel, versions, compaction, gc, and other engines reading the lake."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from flightlake.errors import Conflict, InvalidInput, NotFound
from flightlake.lake import Lake
from tests.servers import make_settings


@pytest.fixture
def lake(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Lake]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    lake = Lake(make_settings(storage_url, s3, compact_files=0))
    yield lake
    lake.close()


def other(lake: Lake, **changes: object) -> Lake:
    """A second server process's lake on the same store."""
    return Lake(lake.settings.replace(**changes))


def rows(lake: Lake, sql: str) -> list[dict]:
    return lake.query(sql).read_all().to_pylist()


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()), "v": [1.5] * n})


def put(lake: Lake, name: str, t: pa.Table, **kwargs: object) -> object:
    return lake.ingest_arrow(name, t.schema, t.to_batches(), **kwargs)  # type: ignore[arg-type]


# -- idempotency keys ------------------------------------------------------------------
def test_idempotency_key_commits_once_and_answers_the_first_result(lake: Lake) -> None:
    first = put(lake, "k", table(10), idempotency_key="job-1")
    again = put(lake, "k", table(10, 100), idempotency_key="job-1")
    assert first.to_json() == {"dataset": "k", "rows_written": 10, "version": 0}
    assert again.to_json() == {
        "dataset": "k",
        "rows_written": 10,
        "version": 0,
        "replayed": True,
    }
    assert rows(lake, "SELECT count(*) AS n, max(id) AS m FROM k") == [{"n": 10, "m": 9}]
    third = put(lake, "k", table(5), idempotency_key="job-2")
    assert (third.version, third.replayed) == (1, False)
    csv_first = lake.ingest_csv("k2", [b"a\n1\n2\n"], idempotency_key="c")
    csv_again = lake.ingest_csv("k2", [b"a\n1\n2\n"], idempotency_key="c")
    assert (csv_again.version, csv_again.rows_written, csv_again.replayed) == (
        csv_first.version,
        2,
        True,
    )
    assert rows(lake, "SELECT count(*) AS n FROM k2") == [{"n": 2}]
    # the same key on another dataset is another ingest
    assert put(lake, "k3", table(1), idempotency_key="job-1").replayed is False
    keys = {o.key for o in lake.storage.list("data") if "_delta_log" not in o.key}
    assert keys == {k for n in ("k", "k2", "k3") for k in lake.dataset(n).objects}


def test_idempotency_key_holds_across_servers_and_restarts(lake: Lake) -> None:
    put(lake, "x", table(3), idempotency_key="retry-me")
    second = other(lake)
    try:
        replay = put(second, "x", table(3), idempotency_key="retry-me")
        assert (replay.replayed, replay.version, replay.rows_written) == (True, 0, 3)
        put(second, "x", table(2))
    finally:
        second.close()
    restarted = other(lake)
    try:
        replay = put(restarted, "x", table(3), idempotency_key="retry-me", mode="overwrite")
        assert (replay.replayed, replay.version) == (True, 0)
        assert rows(restarted, "SELECT count(*) AS n FROM x") == [{"n": 5}]
    finally:
        restarted.close()


def test_racing_retries_with_one_key_commit_once(lake: Lake) -> None:
    second = other(lake)
    results: list[object] = []
    try:
        put(lake, "race", table(1))
        threads = [
            threading.Thread(
                target=lambda lk=lk: results.append(
                    put(lk, "race", table(7), idempotency_key="same")
                )
            )
            for lk in (lake, second, lake, second)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert len(results) == 4
        assert sorted(r.replayed for r in results) == [False, True, True, True]  # type: ignore[attr-defined]
        assert {r.version for r in results} == {1}  # type: ignore[attr-defined]
        assert rows(other(lake), "SELECT count(*) AS n FROM race") == [{"n": 8}]
    finally:
        second.close()


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("x" * 129, "longer than 128"),
        ("caf\u00e9", "printable ASCII"),
        ("a\nb", "printable"),
    ],
)
def test_bad_idempotency_keys(lake: Lake, key: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        put(lake, "bad", table(1), idempotency_key=key)
    with pytest.raises(NotFound):
        lake.dataset("bad")


# -- freshness across servers ----------------------------------------------------------
def test_other_servers_see_commits_creates_and_drops(lake: Lake) -> None:
    b = other(lake, freshness_seconds=0.3)
    try:
        put(lake, "f", table(10))
        time.sleep(0.35)
        assert rows(b, "SELECT count(*) AS n FROM f") == [{"n": 10}]  # created on A
        assert [m.name for m in b.datasets()] == ["f"]
        put(lake, "f", table(5))
        time.sleep(0.35)
        assert rows(b, "SELECT count(*) AS n FROM f") == [{"n": 15}]  # appended on A
        assert b.dataset("f").version == 1
        put(b, "f", table(1))
        assert rows(b, "SELECT count(*) AS n FROM f") == [{"n": 16}]  # own commit: at once
        lake.drop("f")
        time.sleep(0.35)
        with pytest.raises(NotFound):
            rows(b, "SELECT count(*) AS n FROM f")
        assert b.datasets() == []
        put(lake, "f", pa.table({"other": ["x"]}))  # a fresh table under the same name
        time.sleep(0.35)
        assert rows(b, "SELECT * FROM f") == [{"other": "x"}]
        assert b.dataset("f").version == 0
    finally:
        b.close()


def test_unchanged_datasets_cost_no_reload(lake: Lake) -> None:
    put(lake, "still", table(3))
    before = lake.dataset("still")
    time.sleep(1.1)
    assert rows(lake, "SELECT count(*) AS n FROM still") == [{"n": 3}]
    assert lake.catalog.cached("still") is before  # probed, not reloaded


# -- time travel and versions ----------------------------------------------------------
def test_time_travel_by_version_and_timestamp(lake: Lake) -> None:
    put(lake, "tt", table(3))
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    put(lake, "tt", table(4, 3))
    put(lake, "tt", pa.table({"id": pa.array([99], pa.int64()), "v": [0.5]}), mode="overwrite")
    assert rows(lake, "SELECT count(*) AS n FROM tt") == [{"n": 1}]
    assert rows(lake, "SELECT count(*) AS n FROM tt AT (VERSION => 0)") == [{"n": 3}]
    assert rows(lake, "SELECT count(*) AS n FROM tt AT (VERSION => 1)") == [{"n": 7}]
    stamp = between.strftime("%Y-%m-%d %H:%M:%S.%f")
    sql = f"SELECT max(tt.id) AS m FROM tt AT (TIMESTAMP => TIMESTAMPTZ '{stamp}+00')"
    assert rows(lake, sql) == [{"m": 2}]
    joined = (
        "SELECT a.n, b.n AS m FROM (SELECT count(*) AS n FROM tt AT (VERSION => 0)) a, "
        "(SELECT count(*) AS n FROM tt) b"
    )
    assert rows(lake, joined) == [{"n": 3, "m": 1}]
    with pytest.raises(NotFound, match="no version 7"):
        rows(lake, "SELECT * FROM tt AT (VERSION => 7)")
    with pytest.raises(NotFound, match="no version at or before"):
        rows(lake, "SELECT * FROM tt AT (TIMESTAMP => TIMESTAMPTZ '2001-01-01 00:00:00+00')")
    with pytest.raises(InvalidInput):
        rows(lake, "SELECT * FROM tt AT (VERSION => 'x')")


def test_time_travel_stays_in_the_sandbox(lake: Lake) -> None:
    put(lake, "tt", table(3))
    for sql in (
        "SELECT * FROM tt AT (VERSION => (SELECT count(*) FROM read_csv('/etc/passwd')))",
        "SELECT * FROM tt AT (TIMESTAMP => getenv('HOME'))",
    ):
        with pytest.raises(InvalidInput, match="not allowed"):
            rows(lake, sql)
    with pytest.raises(NotFound):
        rows(lake, 'SELECT * FROM "__flightlake_tt@0"')


def test_versions_list_operations_and_rows(lake: Lake) -> None:
    put(lake, "h", table(3))
    put(lake, "h", table(2))
    put(lake, "h", table(4), mode="overwrite")
    listed = lake.versions("h")
    assert [(v["version"], v["operation"], v["rows_added"], v["rows_total"]) for v in listed] == [
        (2, "WRITE", 4, 4),
        (1, "WRITE", 2, 5),
        (0, "CREATE TABLE", 3, 3),
    ]
    assert all(str(v["timestamp"]).endswith("Z") for v in listed)
    with pytest.raises(NotFound):
        lake.versions("nope")


# -- compaction ------------------------------------------------------------------------
def test_compaction_keeps_answers_and_time_travel(lake: Lake) -> None:
    for i in range(12):
        put(lake, "c", table(10, i * 10))
    sql = "SELECT count(*) AS n, sum(id) AS s, min(id) AS lo, max(id) AS hi FROM c"
    before = rows(lake, sql)
    assert len(lake.dataset("c").objects) == 12
    report = lake.compact("c")
    assert report == {"dataset": "c", "version": 12, "files_before": 12, "files_after": 1}
    assert rows(lake, sql) == before
    assert rows(lake, "SELECT count(*) AS n FROM c AT (VERSION => 11)") == [{"n": 120}]
    assert lake.versions("c")[0]["operation"] == "COMPACT"
    assert lake.dataset("c").row_count == 120
    again = lake.compact("c")
    assert (again["files_after"], again["version"]) == (1, 12)  # nothing to do


def test_compaction_never_loses_a_concurrent_append(lake: Lake) -> None:
    b = other(lake)
    try:
        for i in range(10):
            put(lake, "cc", table(10, i * 10))
        stop = threading.Event()
        appended: list[int] = []

        def append() -> None:
            n = 0
            while not stop.is_set() and n < 30:
                put(b, "cc", table(1, 1000 + n))
                appended.append(n)
                n += 1

        writer = threading.Thread(target=append)
        writer.start()
        try:
            for _ in range(3):
                lake.compact("cc")
        finally:
            stop.set()
            writer.join(120)
        expected = 100 + len(appended)
        fresh = other(lake)
        try:
            assert rows(fresh, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM cc") == [
                {"n": expected, "d": expected}
            ]
        finally:
            fresh.close()
    finally:
        b.close()


def test_background_compaction_bounds_live_files(storage_url: str, request) -> None:
    """Issue 11: 300 appends of 10 rows end as at most 16 live files within 60 s (the
    default compact_files), with every row still there once."""
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    lake = Lake(make_settings(storage_url, s3))
    try:
        for i in range(300):
            put(lake, "bg", table(10, i * 10))
        deadline = time.monotonic() + 60
        while len(lake.dataset("bg").objects) > 16 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(lake.dataset("bg").objects) <= 16
        assert rows(lake, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM bg") == [
            {"n": 3000, "d": 3000}
        ]
    finally:
        lake.close()


def test_create_conflicts_and_case_collisions(lake: Lake) -> None:
    put(lake, "Once", table(1))
    with pytest.raises(Conflict, match="already exists"):
        put(lake, "Once", table(1), mode="create")
    with pytest.raises(Conflict, match="differs only in case"):
        put(lake, "once", table(1))
