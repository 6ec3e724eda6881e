"""Other engines read flightlake's Delta tables: DuckDB's delta extension (loaded offline),
polars and deltalake get the same rows flightlake answers, on local disk and S3. And many
servers on one bucket: two real `flightlake serve` processes, interleaved appends."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.lake import Lake
from tests.servers import make_settings
from tests.subprocess_server import env_without_flightlake, flightlake_serve


@pytest.fixture
def lake(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Lake]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    lake = Lake(make_settings(storage_url, s3, compact_files=0))
    yield lake
    lake.close()


def sample(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "city": [["Austin", "Boston", None][i % 3] for i in range(start, start + n)],
            "km": pa.array([i * 0.5 for i in range(start, start + n)], pa.float64()),
            "day": pa.array([19000 + i % 5 for i in range(start, start + n)], pa.date32()),
        }
    )


def filled(lake: Lake) -> list[dict]:
    """Three appends, an overwrite and two more appends, then a compaction: the table log
    has adds, removes and a dataChange=false rewrite."""
    for i in range(3):
        lake.ingest_arrow("trips", sample(10).schema, sample(10, i * 10).to_batches())
    lake.ingest_arrow("trips", sample(1).schema, sample(25, 100).to_batches(), mode="overwrite")
    for i in range(2):
        lake.ingest_arrow("trips", sample(1).schema, sample(5, 200 + i * 5).to_batches())
    lake.compact("trips")
    expected = lake.query("SELECT * FROM trips ORDER BY id").read_all()
    assert expected.num_rows == 35
    return expected.to_pylist()


def storage_options(lake: Lake) -> dict[str, str]:
    """What a user passes to deltalake / polars: the AWS_* keys (endpoint, region, keys)."""
    from flightlake.delta import Tables

    return {k: v for k, v in Tables(lake.storage).options.items() if k.startswith("AWS_")}


def test_deltalake_reads_the_table(lake: Lake) -> None:
    from deltalake import DeltaTable

    expected = filled(lake)
    uri = lake.dataset("trips").location
    table = DeltaTable(uri, storage_options=storage_options(lake) or None)
    got = table.to_pyarrow_table().sort_by("id").to_pylist()
    assert got == expected
    assert table.version() == lake.dataset("trips").version


def test_polars_reads_the_table(lake: Lake) -> None:
    import polars as pl

    expected = filled(lake)
    uri = lake.dataset("trips").location
    frame = pl.scan_delta(uri, storage_options=storage_options(lake) or None).collect()
    assert frame.sort("id").to_dicts() == expected
    assert pl.read_delta(uri, storage_options=storage_options(lake) or None).height == 35


def test_duckdb_delta_extension_reads_the_table(lake: Lake) -> None:
    import duckdb
    import duckdb_extension_delta

    expected = filled(lake)
    base = os.path.dirname(duckdb_extension_delta.__file__)
    extension = glob.glob(f"{base}/extensions/v{duckdb.__version__}/delta.duckdb_extension")[0]
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        con.execute(f"LOAD '{extension}'")
        if lake.storage.is_s3:
            import duckdb_extension_httpfs  # noqa: F401 - only its file is loaded

            from flightlake.query import httpfs_extension_path

            con.execute(f"LOAD '{httpfs_extension_path()}'")
            s3 = lake.storage.duckdb_s3()
            con.execute(
                "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, "
                "URL_STYLE 'path', USE_SSL false)".replace("?", "'{}'").format(
                    s3["key_id"], s3["secret"], s3["region"], s3["endpoint"]
                )
            )
        uri = lake.dataset("trips").location
        got = con.execute(f"SELECT * FROM delta_scan('{uri}') ORDER BY id").to_arrow_table()
    finally:
        con.close()
    assert got.to_pylist() == expected


# -- many servers on one bucket ---------------------------------------------------------
def put(location: str, name: str, table: pa.Table) -> dict:
    import json

    with flight.FlightClient(location) as client:
        writer, meta = client.do_put(flight.FlightDescriptor.for_path(name), table.schema)
        with writer:
            writer.write_table(table)
            writer.done_writing()
            answer = meta.read()
    return json.loads(answer.to_pybytes())


def count(location: str, name: str) -> int:
    with flight.FlightClient(location) as client:
        sql = f"SELECT count(*) AS n FROM {name}".encode()
        return int(client.do_get(flight.Ticket(sql)).read_all().to_pylist()[0]["n"])


@pytest.mark.s3
@pytest.mark.slow
def test_lost_commit_with_two_servers_on_one_bucket(s3_env: dict[str, str], tmp_path) -> None:
    """Regression (issue 11): A appends 10 rows; B appends 10 rows five times; A appends 10
    rows again and is told it succeeded. A fresh third server counted 60 rows, not 70,
    because A's second commit reused a version whose manifest had been pruned."""
    env = env_without_flightlake(s3_env | {"FLIGHTLAKE_FRESHNESS_SECONDS": "0.5"})
    t = pa.table({"id": pa.array(range(10), pa.int64())})
    with flightlake_serve(env=env, cwd=tmp_path) as a, flightlake_serve(env=env, cwd=tmp_path) as b:
        versions = [put(a.flight, "shared", t)["version"]]
        versions += [put(b.flight, "shared", t)["version"] for _ in range(5)]
        versions.append(put(a.flight, "shared", t)["version"])
        assert versions == list(range(7))  # every commit its own version, none reused
        for i in range(6):  # interleaved appends on both
            put((a if i % 2 else b).flight, "shared", t)
        time.sleep(0.6)
        assert count(a.flight, "shared") == 130
        assert count(b.flight, "shared") == 130
        with flightlake_serve(env=env, cwd=tmp_path) as c:
            assert count(c.flight, "shared") == 130
            with flight.FlightClient(c.flight) as client:
                infos = list(client.list_flights())
            assert [(i.descriptor.path[0].decode(), i.total_records) for i in infos] == [
                ("shared", 130)
            ]


@pytest.mark.s3
@pytest.mark.slow
def test_two_servers_see_each_others_creates_and_drops(s3_env: dict[str, str], tmp_path) -> None:
    env = env_without_flightlake(s3_env | {"FLIGHTLAKE_FRESHNESS_SECONDS": "1"})
    t = pa.table({"id": pa.array(range(3), pa.int64())})
    with flightlake_serve(env=env, cwd=tmp_path) as a, flightlake_serve(env=env, cwd=tmp_path) as b:
        put(a.flight, "made_on_a", t)
        time.sleep(1.1)
        assert count(b.flight, "made_on_a") == 3
        with flight.FlightClient(b.flight) as client:
            assert [i.descriptor.path[0] for i in client.list_flights()] == [b"made_on_a"]
        with flight.FlightClient(a.flight) as client:
            list(client.do_action(flight.Action("drop", b"made_on_a")))
        time.sleep(1.1)
        with (
            pytest.raises(pa.ArrowKeyError, match="not found"),
            flight.FlightClient(b.flight) as client,
        ):
            client.do_get(flight.Ticket(b"SELECT * FROM made_on_a")).read_all()
        with flight.FlightClient(b.flight) as client:
            assert list(client.list_flights()) == []
