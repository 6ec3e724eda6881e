"""`flightlake serve` start-up, through the real CLI: the hosts it binds, and the one-line
errors it stops with (issue 18)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.cli import clean_message
from tests.helpers import free_port
from tests.s3server import SeaweedS3, new_bucket_name
from tests.subprocess_server import (
    FLIGHTLAKE,
    ServerProcess,
    env_without_flightlake,
    flightlake_serve,
)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def answers_on_ipv6(server: ServerProcess) -> bool:
    with flight.FlightClient(f"grpc://[::1]:{server.flight_port}") as client:
        list(client.do_action(flight.Action("health", b"")))
    return httpx.get(f"http://[::1]:{server.http_port}/health").status_code == 200


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_loopback_host_serves_flight_and_http(tmp_path: Path, host: str) -> None:
    """Regression: `--host ::1` failed with `Cannot parse URI: 'grpc://::1:8815'` and `[::1]`
    failed to bind; both spellings now serve Flight and HTTP on the IPv6 loopback."""
    with (
        flightlake_serve(
            "--storage",
            str(tmp_path / "lake"),
            "--host",
            host,
            env=env_without_flightlake(),
            ready=answers_on_ipv6,
        ) as server,
        flight.FlightClient(f"grpc://[::1]:{server.flight_port}") as client,
    ):
        assert list(client.list_flights()) == []
        datasets = httpx.get(f"http://[::1]:{server.http_port}/v1/datasets")
        assert datasets.json() == []


# -- one-line errors at start (issue 18) -----------------------------------------------------
def serve_cli(
    *args: str, env: dict[str, str] | None = None, verbose: bool = False
) -> subprocess.CompletedProcess[str]:
    """`flightlake [-v] serve ARGS` to completion (it is expected to refuse to start)."""
    return subprocess.run(
        [*FLIGHTLAKE, *(["-v"] if verbose else []), "serve", *args],
        env=env_without_flightlake(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal's single stderr line: exit 1, nothing else on stderr, no traceback."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@contextmanager
def listening(port: int = 0) -> Iterator[int]:
    """A plain socket listening on 127.0.0.1 (another program holding a port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_names_the_flight_port(tmp_path: Path) -> None:
    """Regression: a taken Flight port printed gRPC's own log lines, then `Unknown error:
    Server did not start properly`."""
    with listening() as port:
        result = serve_cli("--storage", str(tmp_path), "--flight-port", str(port))
    assert one_error_line(result) == (
        f"error: Flight port {port} is already in use (127.0.0.1:{port}): stop what holds it, "
        "or choose another with --flight-port (FLIGHTLAKE_FLIGHT_PORT)"
    )


def test_port_in_use_names_the_http_port(tmp_path: Path) -> None:
    with listening() as port:
        result = serve_cli(
            "--storage", str(tmp_path), "--http-port", str(port), "--flight-port", "0"
        )
    assert one_error_line(result) == (
        f"error: HTTP port {port} is already in use (127.0.0.1:{port}): stop what holds it, "
        "or choose another with --http-port (FLIGHTLAKE_HTTP_PORT)"
    )


def test_port_held_by_another_flightlake_names_the_port(tmp_path: Path) -> None:
    """gRPC binds with SO_REUSEPORT, so a second gRPC server could share the port silently:
    the check before binding refuses it."""
    with flightlake_serve("--storage", str(tmp_path / "a"), env=env_without_flightlake()) as first:
        result = serve_cli(
            "--storage", str(tmp_path / "b"), "--flight-port", str(first.flight_port)
        )
        assert f"Flight port {first.flight_port} is already in use" in one_error_line(result)


def test_same_port_for_flight_and_http_is_refused(tmp_path: Path) -> None:
    port = str(free_port())
    result = serve_cli("--storage", str(tmp_path), "--flight-port", port, "--http-port", port)
    assert one_error_line(result) == (
        f"error: flight_port and http_port are both {port}: give them different ports"
    )


def test_grpc_log_lines_are_kept_out_unless_verbose(tmp_path: Path) -> None:
    with listening() as port:
        quiet = serve_cli("--storage", str(tmp_path), "--flight-port", str(port))
        loud = serve_cli("--storage", str(tmp_path), "--flight-port", str(port), verbose=True)
    for noise in ("absl", "E0000", "Server did not start properly"):
        assert noise not in quiet.stderr
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr  # --verbose: the full detail
    assert f"Flight port {port} is already in use" in loud.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "cannot read the TLS certificate {cert!r} (tls_cert): No such file or directory"),
        ("text", "the TLS certificate {cert!r} (tls_cert) is not a PEM file"),
        ("directory", "cannot read the TLS certificate {cert!r} (tls_cert): Is a directory"),
    ],
)
def test_unreadable_tls_files_name_the_file(tmp_path: Path, make: str | None, message: str) -> None:
    cert = tmp_path / "server.pem"
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    if make == "text":
        cert.write_text("not a certificate\n")
    elif make == "directory":
        cert.mkdir()
    result = serve_cli(
        "--storage", str(tmp_path / "lake"), "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert one_error_line(result) == "error: " + message.format(cert=str(cert))
    assert not (tmp_path / "lake").exists()  # refused before anything was built


def test_unreadable_tls_key_names_the_key(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    key = tmp_path / "missing.key"
    result = serve_cli("--storage", str(tmp_path), "--tls-cert", str(cert), "--tls-key", str(key))
    assert one_error_line(result) == (
        f"error: cannot read the TLS private key {str(key)!r} (tls_key): No such file or directory"
    )


def test_bad_memory_limit_names_the_setting(tmp_path: Path) -> None:
    """Regression: a bad FLIGHTLAKE_QUERY_MEMORY_LIMIT printed a DuckDB traceback."""
    result = serve_cli(
        "--storage", str(tmp_path), env={"FLIGHTLAKE_QUERY_MEMORY_LIMIT": "2 parsecs"}
    )
    line = one_error_line(result)
    assert line.startswith(
        "error: FLIGHTLAKE_QUERY_MEMORY_LIMIT='2 parsecs': query_memory_limit must be a size"
    )
    assert "duckdb" not in line.lower()


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (
            '[[tokens]]\nname = "dash"\nrole = "read"\n',
            "[[tokens]] entry 1 ('dash') has no 'token'",
        ),
        (
            '[[tokens]]\nname = "a"\ntoken = "t1"\n[[tokens]]\ntoken = ""\n',
            "[[tokens]] entry 2 has an empty or non-text 'token'",
        ),
        (
            '[[users]]\nusername = "etl"\nrole = "write"\n',
            "[[users]] entry 1 ('etl') has no 'password'",
        ),
        ('[[users]]\npassword = "pw"\n', "[[users]] entry 1 has no 'username'"),
    ],
)
def test_token_entry_without_token_names_the_entry_and_field(
    tmp_path: Path, secrets: str, message: str
) -> None:
    """Regression: a `[[tokens]]` entry without `token` printed only `error: token`."""
    path = tmp_path / "secrets.toml"
    path.write_text(secrets)
    result = serve_cli("--storage", str(tmp_path), env={"FLIGHTLAKE_SECRETS_FILE": str(path)})
    line = one_error_line(result)
    assert line == f"error: secrets file {path}: {message}"
    assert "t1" not in line  # never a secret
    assert "pw" not in line


def test_clean_message_keeps_the_closing_quote(tmp_path: Path) -> None:
    """Regression: clean_message stripped a trailing quote: `unknown setting 'flight_prot`."""
    conf = tmp_path / "c.toml"
    conf.write_text("flight_prot = 1\n")
    result = serve_cli("--config", str(conf))
    assert one_error_line(result) == f"error: config file {conf}: unknown setting 'flight_prot'"
    assert clean_message(KeyError("dataset 'x' not found")) == "dataset 'x' not found"
    assert clean_message(ValueError("name 'x'")) == "name 'x'"
    assert clean_message(pa.ArrowKeyError("dataset 'x' not found. Detail: Python exception")) == (
        "dataset 'x' not found"
    )


def test_verbose_shows_the_full_detail(tmp_path: Path) -> None:
    result = serve_cli(
        "--storage", str(tmp_path), env={"FLIGHTLAKE_LOG_LEVEL": "LOUD"}, verbose=True
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "InvalidInput: FLIGHTLAKE_LOG_LEVEL='LOUD': log_level must be one of" in result.stderr


@pytest.mark.s3
def test_missing_bucket_names_the_bucket(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """Regression: with a missing bucket the server started and only /health said why."""
    bucket = new_bucket_name()
    env = {
        "FLIGHTLAKE_STORAGE": f"s3://{bucket}/lake",
        "FLIGHTLAKE_S3_ENDPOINT": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    result = serve_cli(env=env)
    assert one_error_line(result) == (
        f"error: bucket {bucket!r} does not exist at {s3_server.endpoint}: create it (for MinIO: "
        f"mc mb ALIAS/{bucket}), or start with --create-bucket (FLIGHTLAKE_S3_CREATE_BUCKET=1) "
        "to have it created"
    )
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert bucket not in names
    # Created on purpose: by the flag, then (once deleted) by the environment variable.
    for args, extra in ((("--create-bucket",), {}), ((), {"FLIGHTLAKE_S3_CREATE_BUCKET": "1"})):
        try:
            with (
                flightlake_serve(*args, env=env_without_flightlake({**env, **extra})) as server,
                flight.FlightClient(server.flight) as client,
            ):
                assert list(client.list_flights()) == []
            names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
            assert bucket in names
        finally:
            s3_server.delete_bucket(bucket)
