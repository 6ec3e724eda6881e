"""The HTTP /v1 shim, end to end: real requests (httpx, raw sockets, curl) to running servers.

Most tests serve a fresh lake in-process (tests/http_helpers.py). Tests whose answer depends on
the store run over local and S3 storage. One test starts `flightlake serve` and runs every curl
line of docs/http.md and the README against it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from flightlake.auth import Authenticator
from flightlake.config import Settings
from flightlake.console import console_routes
from flightlake.http import (
    DRAIN_SECONDS,
    OPENAPI,
    UPLOAD_FORMATS,
    create_app,
    start_http,
)
from flightlake.lake import Lake
from flightlake.secrets import Principal
from scripts.gen_workers import il_role_counts, write_workers_csv
from tests.helpers import free_port, wait_until
from tests.http_helpers import RunningHttp, http_server, lake_http
from tests.servers import flight_server, local_settings, make_settings

ROOT = Path(__file__).resolve().parent.parent
CSV = b"id,name,score\n1,ann,1.5\n2,bob,2.5\n3,cy,\n"


# -- fixtures and helpers ----------------------------------------------------------------------
@pytest.fixture
def settings(storage_url: str, request: pytest.FixtureRequest) -> Settings:
    """Settings over local or S3 storage (the `storage_url` parametrisation)."""
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    return make_settings(storage_url, s3, spool_dir=str(spool(request)))


def spool(request: pytest.FixtureRequest) -> Path:
    folder: Path = request.getfixturevalue("tmp_path") / "spool"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    return local_settings(tmp_path)


@pytest.fixture
def http(local: Settings) -> Iterator[RunningHttp]:
    with lake_http(local) as running:
        yield running


def stored_keys(settings: Settings, request: pytest.FixtureRequest) -> list[str]:
    """Every object under the lake's root (a local folder, or the S3 bucket's prefix)."""
    if not settings.is_s3:
        root = Path(settings.storage)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    bucket, _, prefix = settings.storage.removeprefix("s3://").partition("/")
    client = request.getfixturevalue("s3_server").client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def sql(client: httpx.Client, text: str, **headers: str) -> httpx.Response:
    return client.post("/v1/sql", json={"sql": text}, headers=headers)


def rows(client: httpx.Client, text: str) -> Any:
    response = sql(client, text)
    assert response.status_code == 200, response.text
    return response.json()


def ingest(client: httpx.Client, name: str, data: bytes = CSV, **params: str) -> httpx.Response:
    query = "&".join(f"{k}={v}" for k, v in {"name": name, **params}.items())
    return client.post(f"/v1/ingest?{query}", files={"file": (f"{name}.csv", data)})


def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, str]:
    """Send a hand-made request (headers, maybe part of a body); return status and reply."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    text = reply.decode("utf-8", "replace")
    return int(text.split(" ", 2)[1]), text


def assert_error(response: httpx.Response, status: int) -> str:
    """The pinned error shape: exactly {"error": str, "status": N}, as JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "status"}
    assert body["status"] == status
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


# -- health, errors, OpenAPI -------------------------------------------------------------------
def test_health_answers_ok(http: RunningHttp) -> None:
    response = http.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["service"] == "flightlake"


def test_health_is_503_with_retry_after_until_ready(local: Settings) -> None:
    ready = threading.Event()
    lake = Lake(local)
    try:
        with http_server(lake, local, ready.is_set) as running:
            response = running.client.get("/health")
            assert response.status_code == 503
            assert response.json() == {"status": "unavailable", "service": "flightlake"}
            assert response.headers["retry-after"] == "5"
            ready.set()
            assert running.client.get("/health").status_code == 200
    finally:
        lake.close()


def test_a_busy_http_port_fails_with_a_clear_error(http: RunningHttp, local: Settings) -> None:
    with pytest.raises(OSError, match=f"HTTP cannot listen on 127.0.0.1:{http.server.port}"):
        start_http(http.lake, local.replace(host="127.0.0.1"), port=http.server.port)


def test_error_body_shape_is_pinned(http: RunningHttp) -> None:
    response = http.client.get("/v1/datasets/nope")
    assert response.json() == {"error": "dataset 'nope' not found", "status": 404}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/no/such/endpoint", None, 404),
        ("GET", "/v1/datasets/nope", None, 404),
        ("DELETE", "/v1/datasets/nope", None, 404),
        ("POST", "/v1/sql", {"sql": "SELECT * FROM nope"}, 404),
        ("POST", "/health", None, 405),
        ("PUT", "/v1/sql", None, 405),
        ("GET", "/v1/ingest", None, 405),
        ("POST", "/v1/sql", {"sql": "SELEC 1"}, 400),
        ("POST", "/v1/sql", {"sql": "CREATE TABLE t (x INT)"}, 400),
        ("POST", "/v1/sql", {"sql": "SELECT 1; SELECT 2"}, 400),
        ("POST", "/v1/sql", {"query": "SELECT 1"}, 400),
        ("POST", "/v1/sql", b"SELECT 1", 400),
        ("POST", "/v1/sql", {"sql": "x" * (2 << 20)}, 413),
        ("POST", "/v1/ingest", None, 400),
    ],
)
def test_every_error_has_the_json_shape(
    http: RunningHttp, method: str, path: str, body: Any, status: int
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = http.client.request(method, path, **kwargs)
    message = assert_error(response, status)
    if status == 405:
        assert "allow" in response.headers
        assert method in message


def test_openapi_describes_every_endpoint(http: RunningHttp, local: Settings) -> None:
    document = http.client.get("/openapi.json").json()
    assert document == json.loads(json.dumps(OPENAPI))
    assert document["openapi"].startswith("3.")
    described = {(path, m.upper()) for path, ops in document["paths"].items() for m in ops}
    app = create_app(http.lake, local)
    # the web console's HTML pages (flightlake/console) are not part of the JSON API
    pages = {r.path for r in console_routes(http.lake, local, Authenticator())}
    routed = {
        (r.path, m)
        for r in app.routes
        if r.path not in pages  # type: ignore[attr-defined]
        for m in r.methods - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert described == routed
    assert pages >= {"/", "/sql", "/upload", "/login", "/static"}
    ingest_params = {p["name"]: p for p in document["paths"]["/v1/ingest"]["post"]["parameters"]}
    assert tuple(ingest_params["format"]["schema"]["enum"]) == UPLOAD_FORMATS
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"], path
            for status, answer in op["responses"].items():
                if status == "200":
                    continue
                schema = answer["content"]["application/json"]["schema"]
                if path in ("/health", "/v1/status") and status == "503":
                    assert schema["required"] == ["status", "service"]  # the health shape
                else:
                    assert schema == {"$ref": "#/components/schemas/Error"}


# -- ingest ------------------------------------------------------------------------------------
def test_ingest_query_list_drop_through_the_same_lake_as_flight(
    settings: Settings, request: pytest.FixtureRequest
) -> None:
    with flight_server(settings) as fl, http_server(fl.lake, settings) as running:
        client = running.client
        response = ingest(client, "people")
        assert response.status_code == 200, response.text
        manifest = response.json()
        assert manifest["name"] == manifest["dataset"] == "people"
        assert manifest["rows_written"] == manifest["row_count"] == 3
        assert manifest["version"] == 0
        assert [c["name"] for c in manifest["columns"]] == ["id", "name", "score"]
        assert manifest["objects"]
        assert all(k.startswith("data/people/") for k in manifest["objects"])

        assert rows(client, "SELECT count(*) FROM people") == [{"count_star()": 3}]
        table = fl.client.do_get(flight.Ticket(b"SELECT sum(id) AS s FROM people")).read_all()
        assert table.to_pylist() == [{"s": 6}]  # Flight sees the HTTP ingest at once

        listed = client.get("/v1/datasets").json()
        assert [m["name"] for m in listed] == ["people"]
        assert client.get("/v1/datasets/people").json()["dataset_id"] == manifest["dataset_id"]

        dropped = client.delete("/v1/datasets/people")
        assert dropped.json() == {"dropped": "people", "version": 0}
        assert_error(client.get("/v1/datasets/people"), 404)
        assert_error(sql(client, "SELECT * FROM people"), 404)
        assert client.get("/v1/datasets").json() == []
        assert not [k for k in stored_keys(settings, request) if k.startswith("data/")]


def test_ingest_modes_and_schema_conflicts(http: RunningHttp) -> None:
    client = http.client
    assert ingest(client, "t", mode="create").status_code == 200
    assert "exists" in assert_error(ingest(client, "t", mode="create"), 409)
    message = assert_error(ingest(client, "t", b"id,other\n1,x\n"), 409)
    assert "other" in message
    assert "score" in message
    assert ingest(client, "t").json()["row_count"] == 6
    overwritten = ingest(client, "t", b"a\n1\n", mode="overwrite").json()
    assert (overwritten["row_count"], overwritten["version"]) == (1, 2)
    assert rows(client, "SELECT * FROM t") == [{"a": 1}]


def multipart(*parts: tuple[str, str, bytes], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


MULTIPART = {"content-type": "multipart/form-data; boundary=b0undary"}


@pytest.mark.parametrize(
    ("query", "body", "headers", "says"),
    [
        ("", multipart(("file", "a.csv", CSV)), MULTIPART, "name"),
        ("name=a%20b", multipart(("file", "a.csv", CSV)), MULTIPART, "name"),
        ("name=t&mode=upsert", multipart(("file", "a.csv", CSV)), MULTIPART, "mode"),
        ("name=t&format=xlsx", multipart(("file", "a.csv", CSV)), MULTIPART, "format"),
        ("name=t", multipart(("other", "a.csv", CSV)), MULTIPART, "file"),
        (
            "name=t",
            multipart(("file", "a.csv", CSV), ("file", "b.csv", CSV)),
            MULTIPART,
            "more than one",
        ),
        ("name=t", multipart(("file", "a.csv", CSV))[:-20], MULTIPART, "ended"),
        ("name=t", b"x", {"content-type": "multipart/form-data"}, "boundary"),
        ("name=t", multipart(("file", "a.csv", b"")), MULTIPART, "empty"),
        ("name=t", multipart(("file", "a.parquet", CSV)), MULTIPART, "parquet"),
        ("name=t", CSV, {"content-type": "application/vnd.apache.arrow.stream"}, "arrow"),
    ],
)
def test_bad_uploads_are_400_and_leave_nothing(
    http: RunningHttp,
    local: Settings,
    query: str,
    body: bytes,
    headers: dict[str, str],
    says: str,
) -> None:
    response = http.client.post(f"/v1/ingest?{query}", content=body, headers=headers)
    assert says in assert_error(response, 400).lower()
    assert response.headers.get("connection") != "close"  # small bodies are drained, not reset
    assert http.client.get("/v1/datasets").json() == []
    assert not list(Path(local.spool_dir).iterdir())


def test_raw_csv_body_ingests(http: RunningHttp) -> None:
    response = http.client.post(
        "/v1/ingest?name=raw", content=CSV, headers={"content-type": "text/csv"}
    )
    assert response.json()["row_count"] == 3


def test_parquet_and_arrow_uploads(http: RunningHttp, tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "price": pa.array([Decimal("1.10"), None], pa.decimal128(10, 2)),
            "day": pa.array([dt.date(2024, 1, 31), dt.date(2024, 2, 1)]),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    with (tmp_path / "t.parquet").open("rb") as fh:
        response = http.client.post("/v1/ingest?name=pq", files={"file": ("t.parquet", fh)})
    assert response.json()["row_count"] == 2
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    response = http.client.post(
        "/v1/ingest?name=ipc",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert response.json()["row_count"] == 2
    expected = [
        {"id": 1, "price": 1.1, "day": "2024-01-31"},
        {"id": 2, "price": None, "day": "2024-02-01"},
    ]
    assert rows(http.client, "SELECT * FROM pq ORDER BY id") == expected
    assert rows(http.client, "SELECT * FROM ipc ORDER BY id") == expected


# -- limits: 413 and 503 -----------------------------------------------------------------------
def test_content_length_over_the_cap_is_413_before_the_body_is_read(local: Settings) -> None:
    capped = local.replace(max_upload_bytes=1000)
    with lake_http(capped) as running:
        head = (
            "POST /v1/ingest?name=big HTTP/1.1\nHost: x\nContent-Type: text/csv\n"
            "Content-Length: 1001\n"
        )
        started = time.monotonic()  # curl-like: waits on Expect, the body is never asked for
        status, reply = raw_request(running.url, head + "Expect: 100-continue\n")
        assert status == 413
        assert time.monotonic() - started < DRAIN_SECONDS
        assert "100 continue" not in reply.lower()
        assert "connection: close" in reply.lower()
        assert '"status":413' in reply
        assert "1000-byte cap" in reply
        status, reply = raw_request(running.url, head, b"x" * 1001)  # browser-like: sent whole
        assert status == 413
        assert "1000-byte cap" in reply
        response = ingest(running.client, "big", CSV * 200)  # curl-like: the body goes too
        assert_error(response, 413)
        assert running.client.get("/v1/datasets").json() == []


def csv_stream(rows_per_chunk: int, chunks: int) -> Iterator[bytes]:
    yield b"id,name\n"
    for i in range(chunks):
        yield b"".join(
            b"%d,name-%d\n" % (n, n) for n in range(i * rows_per_chunk, (i + 1) * rows_per_chunk)
        )


@pytest.mark.parametrize("wrapping", ["raw", "multipart"])
def test_chunked_body_past_the_cap_is_413_and_commits_nothing(
    settings: Settings, request: pytest.FixtureRequest, wrapping: str
) -> None:
    capped = settings.replace(max_upload_bytes=200_000)
    body: Iterator[bytes] = csv_stream(5_000, 20)  # about 1.2 MB, no Content-Length
    headers = {"content-type": "text/csv"}
    if wrapping == "multipart":
        preamble = (
            b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        )
        body = iter([preamble, *body])  # the part never ends: the cap stops it first
        headers = MULTIPART
    with lake_http(capped) as running:
        response = running.client.post("/v1/ingest?name=big", content=body, headers=headers)
        assert "cap" in assert_error(response, 413)
        assert response.headers["connection"] == "close"
        assert running.client.get("/v1/datasets").json() == []
        assert stored_keys(capped, request) == []
        assert not list(Path(capped.spool_dir).iterdir())
        assert ingest(running.client, "small").status_code == 200  # and the server is fine


def test_all_ingest_slots_busy_is_503_at_once(local: Settings) -> None:
    settings = local.replace(max_concurrent_ingests=2)
    with lake_http(settings) as running:
        with running.lake.ingest_slot("a"), running.lake.ingest_slot("b"):
            response = ingest(running.client, "t")
            assert "slots" in assert_error(response, 503)
            assert response.headers["retry-after"] == "5"
            head = (
                "POST /v1/ingest?name=t HTTP/1.1\nHost: x\nContent-Type: text/csv\n"
                "Content-Length: 100000\n"
            )
            # No body follows: a small body is read before the answer (so that the
            # connection can be reused), and the server waits up to DRAIN_IDLE_SECONDS for
            # it, then answers; the client must outwait that, not race it.
            status, reply = raw_request(running.url, head, timeout=DRAIN_SECONDS + 10)
            assert status == 503
            assert "retry-after: 5" in reply.lower()
            assert sql(running.client, "SELECT 1").status_code == 200  # queries still run
        assert ingest(running.client, "t").status_code == 200


def test_a_streaming_upload_holds_its_slot(local: Settings) -> None:
    settings = local.replace(max_concurrent_ingests=1)
    go = threading.Event()
    answer: dict[str, httpx.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield b"id,name\n1,a\n"
        go.wait(30)
        yield b"2,b\n"

    with lake_http(settings) as running:

        def upload() -> None:
            answer["slow"] = running.client.post(
                "/v1/ingest?name=slow", content=slow_body(), headers={"content-type": "text/csv"}
            )

        thread = threading.Thread(target=upload)
        thread.start()
        try:
            wait_until(lambda: running.lake.active_ingests == 1, timeout=10, what="the slot")
            started = time.monotonic()
            assert_error(ingest(running.client, "other"), 503)
            assert time.monotonic() - started < 2
        finally:
            go.set()
            thread.join(30)
        assert answer["slow"].json()["row_count"] == 2


# -- SQL results -------------------------------------------------------------------------------
TYPES_SQL = """
SELECT 42 AS i, 170141183460469231731687303715884105727::HUGEINT AS huge,
       1.5::DOUBLE AS f, 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, '-inf'::FLOAT AS ninf,
       12.30::DECIMAL(10, 2) AS d, 12345678901234567890.12::DECIMAL(38, 2) AS bigd,
       -0.005::DECIMAL(18, 3) AS negd, true AS b,
       'quote " backslash \\ newline
 tab	 é ✓' AS s, 'plain' AS p,
       DATE '2024-01-31' AS day, TIME '13:45:00' AS t,
       TIMESTAMP '2024-01-31 13:45:00.123456' AS ts,
       TIMESTAMPTZ '2024-01-31 13:45:00+01' AS tz,
       NULL AS n, NULL::INTEGER AS ni, NULL::VARCHAR AS ns, NULL::DATE AS nd,
       [1, NULL, 3] AS l, {'a': 1, 'b': 'x'} AS st, '\\x00\\xFF'::BLOB AS blob
"""


def test_json_types_serialise_the_way_a_json_user_expects(http: RunningHttp) -> None:
    response = sql(http.client, TYPES_SQL)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "12.30" in response.text  # the decimal's exact digits, as a number
    [row] = json.loads(response.text, parse_float=Decimal)
    assert row == {
        "i": 42,
        "huge": 170141183460469231731687303715884105727,
        "f": Decimal("1.5"),
        "nan": None,
        "inf": None,
        "ninf": None,
        "d": Decimal("12.30"),
        "bigd": Decimal("12345678901234567890.12"),
        "negd": Decimal("-0.005"),
        "b": True,
        "s": 'quote " backslash \\ newline\n tab\t é ✓',
        "p": "plain",
        "day": "2024-01-31",
        "t": "13:45:00.000000",
        "ts": "2024-01-31T13:45:00.123456",
        "tz": "2024-01-31T12:45:00.000000Z",
        "n": None,
        "ni": None,
        "ns": None,
        "nd": None,
        "l": [1, None, 3],
        "st": {"a": 1, "b": "x"},
        "blob": base64.b64encode(b"\x00\xff").decode(),
    }


def test_json_nulls_mixed_with_values_and_empty_results(http: RunningHttp) -> None:
    assert rows(
        http.client, "SELECT * FROM (VALUES (1, 'a', 1.5), (NULL, NULL, NULL)) t(x, y, z)"
    ) == [{"x": 1, "y": "a", "z": 1.5}, {"x": None, "y": None, "z": None}]
    response = sql(http.client, "SELECT 1 AS x WHERE false")
    assert response.text == "[]\n"


def test_sql_as_arrow_stream(http: RunningHttp) -> None:
    response = sql(
        http.client,
        "SELECT 12.30::DECIMAL(10, 2) AS d, DATE '2024-01-31' AS day",
        accept="application/vnd.apache.arrow.stream",
    )
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.schema.field("d").type == pa.decimal128(10, 2)
    assert table.to_pylist() == [{"d": Decimal("12.30"), "day": dt.date(2024, 1, 31)}]
    empty = sql(
        http.client, "SELECT 1 AS x WHERE false", accept="application/vnd.apache.arrow.stream"
    )
    assert pa.ipc.open_stream(empty.content).read_all().num_rows == 0


def test_sql_as_csv(http: RunningHttp) -> None:
    response = sql(
        http.client,
        "SELECT * FROM (VALUES (1, 'a,b'), (NULL, 'c')) t(x, y)",
        accept="text/csv, application/json",
    )
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text.splitlines() == ['"x","y"', '1,"a,b"', ',"c"']
    assert "csv" in assert_error(sql(http.client, "SELECT [1] AS l", accept="text/csv"), 400)
    assert sql(http.client, "SELECT 1 AS x", accept="*/*").json() == [{"x": 1}]


def test_large_results_stream_in_chunks(http: RunningHttp) -> None:
    pieces = 0
    with http.client.stream(
        "POST", "/v1/sql", json={"sql": "SELECT range AS n FROM range(300000)"}
    ) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        text = b""
        for piece in r.iter_raw():
            pieces += 1
            text += piece
    assert pieces > 1
    result = json.loads(text)
    assert len(result) == 300_000
    assert result[-1] == {"n": 299_999}


def test_a_failure_mid_stream_cuts_the_response(http: RunningHttp) -> None:
    query = (
        "SELECT CASE WHEN range < 1000000 THEN range ELSE error('boom') END AS n "
        "FROM range(2000000)"
    )
    with http.client.stream("POST", "/v1/sql", json={"sql": query}) as r:
        assert r.status_code == 200  # the first batches were fine
        pieces = r.iter_raw()
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
            for _ in pieces:
                pass
    assert rows(http.client, "SELECT 1 AS ok") == [{"ok": 1}]  # the server is fine


# -- auth and TLS ------------------------------------------------------------------------------
def test_bearer_tokens_and_roles(local: Settings) -> None:
    settings = local.replace(
        principals=(
            Principal("dash", "read", token="r-token"),
            Principal("etl", "write", token="w-token"),
            Principal("bob", "write", password="pw"),
        )
    )
    with lake_http(settings) as running:
        client = running.client
        assert client.get("/health").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        missing = client.get("/v1/datasets")
        assert_error(missing, 401)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_error(client.get("/v1/datasets", headers={"authorization": "Bearer nope"}), 401)
        read = {"authorization": "Bearer r-token"}
        assert client.get("/v1/datasets", headers=read).json() == []
        assert sql(client, "SELECT 1 AS x", **read).json() == [{"x": 1}]
        upload = client.post("/v1/ingest?name=t", content=CSV, headers=read)
        assert "write" in assert_error(upload, 403)
        assert_error(client.delete("/v1/datasets/t", headers=read), 403)
        write = {"authorization": "Bearer w-token"}
        assert client.post("/v1/ingest?name=t", content=CSV, headers=write).status_code == 200
        assert client.get("/v1/datasets/t", auth=("bob", "pw")).status_code == 200
        assert_error(client.get("/v1/datasets/t", auth=("bob", "wrong")), 401)


def test_https_with_the_tls_certificate(local: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    settings = local.replace(tls_cert=str(cert), tls_key=str(key))
    with lake_http(settings) as running:
        assert running.url.startswith("https://")
        assert running.client.get("/health").json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):
            httpx.get(running.url + "/health")  # not trusted without the certificate


# -- the G0 gate over HTTP, and the real `flightlake serve` --------------------------------------
@pytest.mark.slow
def test_ingest_500k_workers_over_http_then_query(
    settings: Settings, workers_csv_500k: Path
) -> None:
    with lake_http(settings) as running, workers_csv_500k.open("rb") as fh:
        response = running.client.post(
            "/v1/ingest?name=workers_500k", files={"file": ("workers_500k.csv", fh)}
        )
        assert response.status_code == 200, response.text
        assert response.json()["rows_written"] == 500_000
        assert rows(running.client, "SELECT count(*) FROM workers_500k") == [
            {"count_star()": 500_000}
        ]
        counts = rows(
            running.client,
            "SELECT role, count(*) AS n FROM workers_500k "
            "WHERE state='IL' GROUP BY role ORDER BY role",
        )
        assert {r["role"]: r["n"] for r in counts} == il_role_counts(workers_csv_500k)


def documented_curl_lines() -> list[str]:
    """Every curl command in the ```sh blocks of docs/http.md and the README, in order."""
    commands: list[str] = []
    for doc in (ROOT / "docs" / "http.md", ROOT / "README.md"):
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip().startswith("curl "):
                    commands.append(line.strip())
    return commands


def test_docs_links_resolve() -> None:
    doc = ROOT / "docs" / "http.md"
    text = doc.read_text()
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", text):
        assert (doc.parent / target).exists() if target else anchor in anchors, target or anchor


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")
def test_serve_subprocess_answers_every_documented_curl_line(tmp_path: Path) -> None:
    write_workers_csv(tmp_path / "workers.csv", 2_000)
    flight_port, http_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTLAKE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flightlake",
            "serve",
            "--storage",
            str(tmp_path / "lake"),
            "--flight-port",
            str(flight_port),
            "--http-port",
            str(http_port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: proc.poll() is not None or httpx.get(base + "/health").is_success,
            timeout=60,
            interval=0.2,
            what="flightlake serve /health",
        )
        assert proc.poll() is None, proc.communicate()[0].decode()
        commands = documented_curl_lines()
        assert len(commands) >= 10
        outputs = {}
        for command in commands:
            args = shlex.split(command.replace("http://127.0.0.1:3110", base), comments=True)
            done = subprocess.run(
                [args[0], "-sS", "--fail-with-body", *args[1:]],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
            outputs[command] = done.stdout
        counts = [json.loads(out) for cmd, out in outputs.items() if "count(*) FROM" in cmd]
        assert [{"count_star()": 2_000}] in counts
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            log = proc.communicate(timeout=20)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0].decode()
    assert proc.returncode == 0, log
    assert "http serving on" in log


def test_refused_small_uploads_never_reset_the_connection(http: RunningHttp) -> None:
    """Regression: a 409 answered before the body was read closed the socket with unread
    data, and the client sometimes got a connection reset instead of the answer."""
    assert ingest(http.client, "r", mode="create").status_code == 200
    body = b"id,name,score\n" + b"".join(b"%d,n,1.5\n" % i for i in range(20_000))
    for _ in range(20):
        assert_error(ingest(http.client, "r", body, mode="create"), 409)


def test_time_travel_and_versions_over_http(tmp_path: Path) -> None:
    """AT (VERSION => N) through /v1/sql; the manifest carries location and version."""
    with lake_http(make_settings(str(tmp_path / "lake"))) as running:
        lake = running.lake
        lake.ingest_csv("tt", [b"a\n1\n2\n"])
        lake.ingest_csv("tt", [b"a\n3\n"])
        manifest = running.client.get("/v1/datasets/tt").json()
        assert manifest["version"] == 1
        assert manifest["location"].endswith("/data/tt")
        answer = running.client.post(
            "/v1/sql", json={"sql": "SELECT count(*) AS n FROM tt AT (VERSION => 0)"}
        )
        assert answer.json() == [{"n": 2}]
        gone = running.client.post("/v1/sql", json={"sql": "SELECT * FROM tt AT (VERSION => 5)"})
        assert gone.status_code == 404
        assert "no version 5" in gone.json()["error"]


def test_curl_chunked_upload_past_the_cap_reads_the_413(local: Settings, tmp_path: Path) -> None:
    """Regression (issue 18): curl sending a chunked upload past the cap reported
    'Connection reset by peer' and never saw the JSON 413; the rest of the body is now
    drained (for at most DRAIN_SECONDS) before the connection closes."""
    big = tmp_path / "big.csv"
    with big.open("wb") as fh:
        fh.write(b"id,name\n")
        for start in range(0, 300_000, 10_000):
            fh.write(b"".join(b"%d,name-%d\n" % (n, n) for n in range(start, start + 10_000)))
    capped = local.replace(max_upload_bytes=1_000_000)  # the file is about 4 MB
    with lake_http(capped) as running:
        for extra in ([], ["-F", f"file=@{big}"]):
            data = [] if extra else ["--data-binary", f"@{big}", "-H", "Content-Type: text/csv"]
            result = subprocess.run(
                [
                    "curl", "-sS", "-H", "Transfer-Encoding: chunked", *data, *extra,
                    "-w", "\\n%{http_code}", f"{running.url}/v1/ingest?name=big",
                ],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            body, status = result.stdout.rsplit("\n", 1)
            assert status == "413"
            assert "cap" in json.loads(body)["error"]
        assert running.client.get("/v1/datasets").json() == []
