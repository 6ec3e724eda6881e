"""Retries without duplicates (idempotency keys through every front end) and idle uploads.

A repeat of an ingest whose key is already committed for the dataset commits nothing and
answers the first result (same version) marked ``"replayed": true``: through Flight and HTTP,
after a server restart, from another server over the same bucket, and as the CLI's own
automatic retry when the connection drops. An upload whose client sends nothing for
``ingest_idle_seconds`` is cancelled, leaves nothing behind and frees its slot.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.faults import DropOnceProxy
from tests.helpers import free_port, put_result, wait_until
from tests.http_helpers import http_server
from tests.servers import flight_server, make_settings
from tests.subprocess_server import FLIGHTLAKE, flightlake_serve


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64())})


def put(
    client: flight.FlightClient,
    name: str,
    data: pa.Table,
    key: str | None = None,
    fmt: str = "arrow",
) -> dict[str, Any]:
    command: dict[str, str] = {"ingest": name, "format": fmt}
    if key is not None:
        command["idempotency_key"] = key
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    if fmt == "csv":
        body = "id\n" + "".join(f"{v}\n" for v in data["id"].to_pylist())
        data = pa.table({"data": pa.array([body.encode()], pa.binary())})
    return put_result(client, descriptor, data)


def finish(writer: flight.FlightStreamWriter, data: pa.Table) -> None:
    """Send ``data``, end the upload and close the writer (which raises the call's error)."""
    with writer:
        writer.write_table(data)
        writer.done_writing()


def count(client: flight.FlightClient, name: str) -> int:
    got = client.do_get(flight.Ticket(f"SELECT count(*) AS n FROM {name}".encode())).read_all()
    return int(got.to_pylist()[0]["n"])


@pytest.mark.parametrize("fmt", ["arrow", "csv"])
def test_flight_repeat_with_a_committed_key_is_a_replay(storage_url: str, request: Any, fmt: str):
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    with flight_server(make_settings(storage_url, s3)) as running:
        first = put(running.client, "k", table(3), key="batch-0001", fmt=fmt)
        assert first == {"dataset": "k", "rows_written": 3, "version": first["version"]}
        other = put(running.client, "k", table(2, 10), key="batch-0002", fmt=fmt)
        again = put(running.client, "k", table(3), key="batch-0001", fmt=fmt)
        assert again == {**first, "replayed": True}
        assert count(running.client, "k") == 5
        assert running.lake.dataset("k").version == other["version"]
        # the key is per dataset: the same key on another dataset commits
        assert "replayed" not in put(running.client, "k2", table(1), key="batch-0001", fmt=fmt)
        # no key: every repeat commits
        put(running.client, "k", table(1))
        put(running.client, "k", table(1))
        assert count(running.client, "k") == 7


@pytest.mark.parametrize("key", ["", "x" * 129, "tab\there", "new\nline", "caf\u00e9"])
def test_flight_refuses_a_malformed_key(tmp_path: Path, key: str) -> None:
    with flight_server(make_settings(str(tmp_path / "lake"))) as running:
        with pytest.raises(pa.ArrowInvalid, match="idempotency key"):
            put(running.client, "k", table(1), key=key)
        command = json.dumps({"ingest": "k", "idempotency_key": 7}).encode()
        writer, _ = running.client.do_put(
            flight.FlightDescriptor.for_command(command), table(1).schema
        )
        with pytest.raises(pa.ArrowInvalid, match="idempotency_key"):
            finish(writer, table(1))
        assert running.lake.catalog.find("k") is None


def test_http_idempotency_key_header(tmp_path: Path) -> None:
    settings = make_settings(str(tmp_path / "lake"))
    with flight_server(settings) as running, http_server(running.lake, settings) as http:
        body = {"file": ("w.csv", b"id,name\n1,a\n2,b\n")}
        headers = {"Idempotency-Key": "upload-7f3a"}
        first = http.client.post("/v1/ingest?name=w", files=body, headers=headers)
        assert first.status_code == 200, first.text
        assert "replayed" not in first.json()
        again = http.client.post("/v1/ingest?name=w", files=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True
        assert again.json()["version"] == first.json()["version"]
        assert again.json()["rows_written"] == 2
        assert count(running.client, "w") == 2
        # the key is shared with Flight: same dataset, same key -> replay
        assert put(running.client, "w", table(2), key="upload-7f3a")["replayed"] is True
        bad = http.client.post(
            "/v1/ingest?name=w", files=body, headers={"Idempotency-Key": "x" * 129}
        )
        assert bad.status_code == 400
        assert "idempotency key" in bad.json()["error"]
        assert count(running.client, "w") == 2


def test_replay_after_a_server_restart(tmp_path: Path) -> None:
    env = {**os.environ, "FLIGHTLAKE_STORAGE": str(tmp_path / "lake")}
    with flightlake_serve(env=env, http_port=0) as served:
        first = put(flight.FlightClient(served.flight), "r", table(4), key="restart-1")
    with flightlake_serve(env=env, http_port=0) as served:
        client = flight.FlightClient(served.flight)
        again = put(client, "r", table(4), key="restart-1")
        assert again == {**first, "replayed": True}
        assert count(client, "r") == 4


@pytest.mark.s3
def test_replay_from_another_server_over_the_same_bucket(s3_server: Any, s3_bucket: str) -> None:
    settings = make_settings(f"s3://{s3_bucket}/lake", s3_server)
    with flight_server(settings) as one, flight_server(settings) as two:
        first = put(one.client, "s", table(5), key="shared-key")
        again = put(two.client, "s", table(5), key="shared-key")
        assert again == {**first, "replayed": True}
        assert count(two.client, "s") == 5
        assert count(one.client, "s") == 5


@pytest.mark.filterwarnings("ignore:Cannot disable autocommit")
def test_flight_sql_bulk_ingest_takes_a_key_in_a_call_header(tmp_path: Path) -> None:
    import adbc_driver_flightsql.dbapi as flightsql

    data = pa.table({"id": [1, 2, 3]})
    with flight_server(make_settings(str(tmp_path / "lake"))) as running:
        with flightsql.connect(running.location, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_statement.set_options(
                **{"adbc.flight.sql.rpc.call_header.idempotency-key": "adbc-1"}
            )
            assert cur.adbc_ingest("a", data, mode="create_append") == 3
            version = running.lake.dataset("a").version
            assert cur.adbc_ingest("a", data, mode="create_append") == 3  # the replay
            assert running.lake.dataset("a").version == version
            cur.adbc_statement.set_options(
                **{"adbc.flight.sql.rpc.call_header.idempotency-key": "adbc-2"}
            )
            assert cur.adbc_ingest("a", data, mode="create_append") == 3
        assert count(running.client, "a") == 6
        # the header works for a plain do_put too
        options = flight.FlightCallOptions(headers=[(b"idempotency-key", b"adbc-2")])
        writer, meta = running.client.do_put(
            flight.FlightDescriptor.for_path("a"), data.schema, options
        )
        with writer:
            writer.write_table(data)
            writer.done_writing()
            answer = meta.read()
        assert answer is not None
        assert json.loads(answer.to_pybytes())["replayed"] is True
        assert count(running.client, "a") == 6


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
def test_cli_retries_a_dropped_connection_without_duplicates(tmp_path: Path, when: str) -> None:
    """The connection drops once, near the end of the upload: before the server commits
    (the retry commits) or after it committed (the answer is lost; the retry is a replay).
    Either way the rows land exactly once."""
    csv = tmp_path / "drop.csv"
    rows = 20_000
    csv.write_text("id,name\n" + "".join(f"{i},name-{i:08d}\n" for i in range(rows)))
    size = csv.stat().st_size
    with flight_server(make_settings(str(tmp_path / "lake"))) as running:
        if when == "before-commit":
            proxy = DropOnceProxy("127.0.0.1", running.server.port, after_bytes=size // 2)
        else:
            proxy = DropOnceProxy(
                "127.0.0.1",
                running.server.port,
                after_bytes=size,
                drop_when=lambda: running.lake.catalog.find("drop") is not None,
            )
        with proxy:
            done = subprocess.run(
                [*FLIGHTLAKE, "ingest", str(csv), "--name", "drop", "--server", proxy.location],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proxy.dropped.is_set()
        assert done.returncode == 0, done.stderr
        assert "retrying" in done.stderr
        assert count(running.client, "drop") == rows
        if when == "after-commit":
            assert "already committed by an earlier attempt" in done.stdout
            version = running.lake.dataset("drop").version
            assert f"{rows} rows written (version {version})" in done.stdout


def test_cli_gives_up_after_its_retries(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("id\n1\n")
    nobody = f"grpc://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [*FLIGHTLAKE, "ingest", str(csv), "--name", "x", "--server", nobody, "--retries", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("retrying") == 1
    assert done.stderr.splitlines()[-1].startswith("error: ")
    assert "Traceback" not in done.stderr


# -- idle uploads ------------------------------------------------------------------------------
def test_idle_flight_upload_is_cancelled_and_frees_its_slot(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    settings = make_settings(str(lake_dir), ingest_idle_seconds=1.0, max_concurrent_ingests=1)
    with flight_server(settings) as running:
        writer, _ = running.client.do_put(flight.FlightDescriptor.for_path("idle"), table(1).schema)
        writer.write_table(table(1000))  # then nothing: the client stalls
        wait_until(lambda: running.lake.active_ingests == 1, timeout=30, what="the upload")
        wait_until(lambda: running.lake.active_ingests == 0, timeout=30, what="the cancel")
        with pytest.raises(flight.FlightError):
            finish(writer, table(1))
        assert running.lake.catalog.find("idle") is None
        assert not list((lake_dir / "data").glob("**/*.parquet"))
        # the one slot is free again, and a client that keeps sending is never cut
        other = flight.FlightClient(running.location)
        writer, meta = other.do_put(flight.FlightDescriptor.for_path("busy"), table(1).schema)
        with writer:
            for i in range(4):
                writer.write_table(table(10, 10 * i))
                time.sleep(0.5)
            writer.done_writing()
            assert meta.read() is not None
        assert count(other, "busy") == 40


def test_idle_http_upload_is_cancelled_with_408(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    settings = make_settings(str(lake_dir), ingest_idle_seconds=1.0, max_concurrent_ingests=1)
    with flight_server(settings) as running, http_server(running.lake, settings) as http:
        with socket.create_connection(("127.0.0.1", http.server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/ingest?name=idle HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                b"Content-Length: 100000\r\n\r\nid,name\n1,a\n"
            )
            answer = b""
            while chunk := sock.recv(65536):  # the server answers, then closes
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(body)["status"] == 408
        assert "ingest_idle_seconds" in json.loads(body)["error"]
        wait_until(lambda: running.lake.active_ingests == 0, timeout=30, what="the slot")
        assert running.lake.catalog.find("idle") is None
        assert not list((lake_dir / "data").glob("**/*.parquet"))
        ok = httpx.post(
            http.url + "/v1/ingest?name=idle", files={"file": ("i.csv", b"id\n1\n")}, timeout=30
        )
        assert ok.status_code == 200, ok.text
