"""`flightlake serve` start-up, through the real CLI: the hosts it binds, and the one-line
errors it stops with (issue 18)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pyarrow.flight as flight
import pytest

from tests.subprocess_server import ServerProcess, env_without_flightlake, flightlake_serve


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
