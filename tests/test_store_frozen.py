"""A frozen object store: SeaweedFS stopped with SIGSTOP accepts connections and never answers.

Every call that needs the store must fail UNAVAILABLE (HTTP 503) within the bounds the issue
asks for (ingest and query under 15 s, /health under 20 s), leave nothing half-written, and
work again once the store continues (SIGCONT), with no restart.

The freeze uses a SeaweedFS of its own (module scope): stopping the session-wide one would
stall every other test running meanwhile. Every freeze is undone in a ``finally``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.errors import StorageError
from flightlake.secrets import Principal
from tests.helpers import put_result, wait_until
from tests.http_helpers import RunningHttp, http_server
from tests.s3server import SeaweedS3
from tests.servers import Running, flight_server, make_settings

pytestmark = pytest.mark.s3

INGEST_BOUND = 15.0  # seconds: the bound for ingest and query on a frozen store
HEALTH_BOUND = 20.0  # seconds: the bound for /health


@pytest.fixture(scope="module")
def own_s3() -> Iterator[SeaweedS3]:
    """A SeaweedFS only this module freezes."""
    with SeaweedS3() as server:
        yield server


@contextmanager
def frozen(s3: SeaweedS3) -> Iterator[None]:
    s3.pause()
    try:
        yield
    finally:
        s3.resume()


@dataclass
class Both:
    flight: Running
    http: RunningHttp


@pytest.fixture
def both(own_s3: SeaweedS3) -> Iterator[Both]:
    bucket = own_s3.create_bucket()
    settings = make_settings(f"s3://{bucket}/lake", own_s3)
    try:
        with flight_server(settings) as running, http_server(running.lake, settings) as http:
            yield Both(running, http)
    finally:
        own_s3.delete_bucket(bucket)


def table(n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64()), "name": [f"n{i}" for i in range(n)]})


def put(client: flight.FlightClient, name: str, data: pa.Table, **kw: Any) -> dict[str, Any]:
    return put_result(client, flight.FlightDescriptor.for_path(name), data, **kw)


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def count(client: flight.FlightClient, name: str) -> int:
    got = client.do_get(flight.Ticket(f"SELECT count(*) AS n FROM {name}".encode())).read_all()
    return int(got.to_pylist()[0]["n"])


def bucket_keys(s3: SeaweedS3, bucket: str, prefix: str) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_frozen_store_fails_fast_everywhere_and_recovers_without_restart(
    both: Both, own_s3: SeaweedS3
) -> None:
    client, http = both.flight.client, both.http.client
    put(client, "d", table(10))
    with frozen(own_s3):
        elapsed, error = timed(lambda: put(client, "d", table(10)))
        assert isinstance(error, flight.FlightUnavailableError), error
        assert elapsed < INGEST_BOUND

        elapsed, error = timed(lambda: count(client, "d"))
        assert isinstance(error, flight.FlightUnavailableError), error
        assert elapsed < INGEST_BOUND

        start = time.monotonic()
        response = http.post("/v1/ingest?name=d", files={"file": ("d.csv", b"id,name\n7,x\n")})
        assert (response.status_code, time.monotonic() - start < INGEST_BOUND) == (503, True)
        assert response.headers["retry-after"] == "5"

        start = time.monotonic()
        response = http.post("/v1/sql", json={"sql": "SELECT sum(id) FROM d"})
        assert (response.status_code, time.monotonic() - start < INGEST_BOUND) == (503, True)

        start = time.monotonic()
        response = http.get("/health")
        assert time.monotonic() - start < HEALTH_BOUND
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "service": "flightlake"}

        elapsed, error = timed(lambda: list(client.do_action(flight.Action("health", b""))))
        assert isinstance(error, flight.FlightUnavailableError), error
        assert elapsed < HEALTH_BOUND
        # the status action answers (details included) rather than failing
        status = json.loads(next(client.do_action(flight.Action("status", b""))).body.to_pybytes())
        assert status["status"] == "unavailable"
        assert "did not answer" in status["error"]
        # listing reads the table folders: UNAVAILABLE too, never a traceback
        elapsed, error = timed(lambda: list(client.list_flights()))
        assert isinstance(error, flight.FlightUnavailableError), error
        assert elapsed < INGEST_BOUND
        assert "Traceback" not in str(error)

    # the store is back: health turns ok by itself, writes and reads work, nothing of the
    # failed ingests is visible
    wait_until(lambda: http.get("/health").status_code == 200, timeout=30, what="health ok")
    assert count(client, "d") == 10
    assert put(client, "d", table(5))["rows_written"] == 5
    assert count(client, "d") == 15
    assert both.flight.lake.dataset("d").row_count == 15


def test_objects_of_an_ingest_failed_on_a_frozen_store_are_swept_once_it_returns(
    both: Both, own_s3: SeaweedS3
) -> None:
    lake = both.flight.lake
    put(both.flight.client, "g", table(3))
    bucket = lake.storage.bucket
    big = table(400_000)

    def batches() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(big.to_batches(max_chunksize=50_000)):
            if i == 4:
                own_s3.pause()  # frozen mid-upload, after some parts went out
            yield batch

    try:
        elapsed, error = timed(lambda: lake.ingest_arrow("g", big.schema, batches()))
    finally:
        own_s3.resume()
    assert isinstance(error, StorageError), error
    # bounded: the Parquet close gives up once the store probe finds it silent (9 s here)
    assert elapsed < lake.storage.request_budget + INGEST_BOUND
    assert lake.dataset("g").row_count == 3
    wait_until(lambda: lake.health()["status"] == "ok", timeout=30, what="store back")
    referenced = {f"lake/{k}" for k in lake.dataset("g").objects}

    def swept() -> bool:
        lake.gc(grace_seconds=0)
        keys = bucket_keys(own_s3, bucket, "lake/data/")
        return {k for k in keys if "/_delta_log/" not in k} == referenced

    wait_until(swept, timeout=60, interval=1, what="the failed ingest's objects to be swept")


def test_health_shows_details_only_to_authenticated_callers(tmp_path: Any) -> None:
    token = "t0ken-for-health"
    settings = make_settings(
        str(tmp_path / "lake"), principals=(Principal("ops", "read", token=token),)
    )
    with flight_server(settings) as running, http_server(running.lake, settings) as http:
        stranger = http.client.get("/health")
        assert stranger.status_code == 200
        assert stranger.json() == {"status": "ok", "service": "flightlake"}
        wrong = http.client.get("/health", headers={"authorization": "Bearer nope"})
        assert wrong.json() == {"status": "ok", "service": "flightlake"}
        auth = {"authorization": f"Bearer {token}"}
        known = http.client.get("/health", headers=auth).json()
        assert known["storage"] == str(tmp_path / "lake")
        assert known["datasets"] == 0
        assert known["version"]
        assert http.client.get("/v1/status").status_code == 401
        assert http.client.get("/v1/status", headers=auth).json() == known
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        health = json.loads(
            next(running.client.do_action(flight.Action("health", b""), options)).body.to_pybytes()
        )
        assert health == known


def test_without_auth_health_never_shows_details_but_status_does(tmp_path: Any) -> None:
    settings = make_settings(str(tmp_path / "lake"))
    with flight_server(settings) as running, http_server(running.lake, settings) as http:
        assert http.client.get("/health").json() == {"status": "ok", "service": "flightlake"}
        assert httpx.get(http.url + "/v1/status").json()["storage"] == str(tmp_path / "lake")
        health = json.loads(
            next(running.client.do_action(flight.Action("health", b""))).body.to_pybytes()
        )
        assert health == {"status": "ok", "service": "flightlake"}
