"""Faults: the object store failing mid-write, a client vanishing, the server killed with -9.
Each must leave the dataset at its previous version with nothing partial, and the server must
keep serving and recover by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.errors import StorageError, Unavailable
from scripts.gen_workers import write_workers_csv
from tests.faults import TcpProxy
from tests.helpers import free_port, wait_until
from tests.servers import Running, flight_server, kill_client_mid_put, make_settings
from tests.subprocess_server import FLIGHTLAKE, ServerProcess, flightlake_serve


@pytest.fixture
def proxy(s3_server) -> Iterator[TcpProxy]:
    parsed = urlparse(s3_server.endpoint)
    with TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 80) as p:
        yield p


@pytest.fixture
def proxied(s3_server, s3_bucket: str, proxy: TcpProxy) -> Iterator[Running]:
    settings = make_settings(f"s3://{s3_bucket}/lake", s3_server, s3_endpoint=proxy.endpoint)
    with flight_server(settings) as running:
        yield running


def big_table(n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "text": pa.array([f"row-{i:010d}-" + "x" * 40 for i in range(n)]),
        }
    )


def bucket_keys(s3_server, bucket: str, prefix: str = "lake/data/") -> set[str]:
    pages = (
        s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
    return {k for k in keys if "/_delta_log/" not in k}  # the Parquet objects


def put(client: flight.FlightClient, name: str, table: pa.Table) -> None:
    writer, meta = client.do_put(flight.FlightDescriptor.for_path(name), table.schema)
    with writer:
        writer.write_table(table, max_chunksize=50_000)
        writer.done_writing()
        meta.read()


@pytest.mark.s3
def test_store_down_mid_ingest_is_unavailable_and_recovers(
    proxied: Running, proxy: TcpProxy, s3_server, s3_bucket: str
) -> None:
    put(proxied.client, "d", big_table(1000))
    before = bucket_keys(s3_server, s3_bucket)
    failures: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        table = big_table(600_000)
        for i, batch in enumerate(table.to_batches(max_chunksize=50_000)):
            if i == 6:
                proxy.cut()  # the store goes away part-way through the write
            yield batch

    try:
        proxied.lake.ingest_arrow("d", big_table(1).schema, batches())
    except (StorageError, Unavailable) as exc:
        failures.append(exc)
    assert failures, "the ingest should have failed while the store was down"
    assert proxied.lake.dataset("d").row_count == 1000
    with pytest.raises(flight.FlightUnavailableError):
        put(proxied.client, "d", big_table(10))
    # the server keeps serving what it can, and recovers by itself when the store returns
    assert proxied.client.list_flights() is not None
    proxy.restore()
    put(proxied.client, "d", big_table(10))
    assert proxied.client.do_get(
        flight.Ticket(b"SELECT count(*) AS n FROM d")
    ).read_all().to_pylist() == [{"n": 1010}]
    # objects the failed ingest could not delete while the store was down are swept
    proxied.lake.gc(grace_seconds=0)
    referenced = {f"lake/{k}" for k in proxied.lake.dataset("d").objects}
    assert before <= referenced
    assert bucket_keys(s3_server, s3_bucket) == referenced


@pytest.mark.s3
def test_queries_fail_unavailable_while_store_is_down(proxied: Running, proxy: TcpProxy) -> None:
    put(proxied.client, "q", big_table(100))
    proxy.cut()
    try:
        with pytest.raises((flight.FlightUnavailableError, pa.ArrowInvalid)):
            proxied.client.do_get(flight.Ticket(b"SELECT sum(id) FROM q")).read_all()
    finally:
        proxy.restore()
    assert proxied.client.do_get(
        flight.Ticket(b"SELECT count(*) AS n FROM q")
    ).read_all().to_pylist() == [{"n": 100}]


@pytest.mark.s3
def test_client_killed_mid_put_leaves_no_objects(s3_server, s3_bucket: str) -> None:
    with flight_server(make_settings(f"s3://{s3_bucket}/lake", s3_server)) as running:
        kill_client_mid_put(running.location, "cut")
        wait_until(lambda: running.lake.active_ingests == 0, timeout=30, what="ingest to end")
        assert running.lake.catalog.find("cut") is None
        assert bucket_keys(s3_server, s3_bucket) == set()
        put(running.client, "cut", big_table(5))  # and the server keeps serving
        assert running.lake.dataset("cut").row_count == 5


def test_kill_9_mid_ingest_leaves_previous_version(tmp_path: Path) -> None:
    """A real server process killed with SIGKILL while writing Parquet: on restart the
    dataset is at its previous version and the start-up sweep removes the orphans."""
    lake_dir = tmp_path / "lake"
    big = write_workers_csv(tmp_path / "big.csv", 1_500_000)
    small = tmp_path / "small.csv"
    with big.open() as fh:
        small.write_text("".join(fh.readline() for _ in range(101)))  # header + 100 rows
    port = free_port()
    env = {**os.environ, "FLIGHTLAKE_STORAGE": str(lake_dir), "FLIGHTLAKE_GC_GRACE_SECONDS": "0"}
    location = f"grpc://127.0.0.1:{port}"

    def start() -> AbstractContextManager[ServerProcess]:
        return flightlake_serve(env=env, flight_port=port, http_port=0)

    with start() as server:
        subprocess.run(
            [*FLIGHTLAKE, "ingest", str(small), "--name", "w", "--server", location],
            check=True,
            capture_output=True,
            timeout=120,
        )
        ingest = subprocess.Popen(
            [*FLIGHTLAKE, "ingest", str(big), "--name", "w", "--server", location],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        data = lake_dir / "data" / "w"
        wait_until(
            lambda: len(list(data.glob("*.parquet"))) >= 2,
            timeout=120,
            interval=0.02,
            what="the second Parquet object to appear",
        )
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        ingest.wait(timeout=60)
        assert ingest.returncode != 0
        orphans = len(list(data.glob("*.parquet")))
        assert orphans >= 2
    with start():
        client = flight.FlightClient(location)
        got = client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM w")).read_all()
        assert got.to_pylist() == [{"n": 100}]
        manifests = json.loads(next(client.do_action(flight.Action("list", b""))).body.to_pybytes())
        referenced = {k for m in manifests for k in m["objects"]}
        wait_until(
            lambda: {f"data/w/{p.name}" for p in data.glob("*.parquet")} == referenced,
            timeout=30,
            what="the start-up sweep to remove the orphans",
        )
