"""A real `flightlake serve` (or any command) as a subprocess, in a `with` block.

    with flightlake_serve("--storage", str(lake), env=env_without_flightlake()) as served:
        client = flight.FlightClient(served.flight)

`flightlake_serve` starts the server on free ports, polls until it answers (failing at once,
with the server's output, if the process exits first) and stops it on exit: SIGTERM, up to
20 s to finish, then SIGKILL. `process` is the same start and stop around any command, for
tests that drive the raw `Popen` themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from tests.helpers import free_port, wait_until

#: The `flightlake` command, run with this interpreter.
FLIGHTLAKE = [sys.executable, "-m", "flightlake"]


def env_without_flightlake(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without FLIGHTLAKE_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTLAKE_")}
    return {**env, **(extra or {})}


@contextmanager
def process(
    cmd: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run ``cmd`` (stdout and stderr together in ``proc.stdout``) until the block ends."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield proc
    finally:
        stop(proc)
        if proc.stdout:
            proc.stdout.close()


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(
    proc: subprocess.Popen[str], ready: Callable[[], object], what: str, timeout: float = 60
) -> None:
    """Poll ``ready`` until it returns true; fail at once with the output if ``proc`` exits."""
    wait_until(lambda: proc.poll() is not None or bool(ready()), timeout, 0.2, what)
    if proc.poll() is not None:
        output = proc.stdout.read() if proc.stdout else ""
        raise AssertionError(f"server exited with code {proc.returncode}: {output}")


@dataclass
class ServerProcess:
    """A running `flightlake serve` subprocess and where it listens."""

    proc: subprocess.Popen[str]
    host: str
    flight_port: int
    http_port: int

    @property
    def flight(self) -> str:
        return f"grpc://{self.host}:{self.flight_port}"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def answers_flight(server: ServerProcess) -> bool:
    """Whether the server answers the Flight `health` action."""
    with flight.FlightClient(server.flight) as client:
        list(client.do_action(flight.Action("health", b"")))
    return True


def answers_http(server: ServerProcess) -> bool:
    """Whether the server answers GET /health with 200."""
    with urllib.request.urlopen(f"{server.http}/health", timeout=5) as response:
        return bool(response.status == 200)


@contextmanager
def flightlake_serve(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    host: str | None = None,
    flight_port: int | None = None,
    http_port: int | None = None,
    ready: Callable[[ServerProcess], object] = answers_flight,
) -> Iterator[ServerProcess]:
    """Run `flightlake serve ARGS` with exactly ``env`` until the block ends, once ``ready``.

    Ports default to free ones; ``host`` is passed as --host and is where clients connect
    (127.0.0.1 when not given). ``args`` come last, so they win over these flags.
    """
    flight_port = free_port() if flight_port is None else flight_port
    http_port = free_port() if http_port is None else http_port
    cmd = [*FLIGHTLAKE, "serve", "--flight-port", str(flight_port), "--http-port", str(http_port)]
    if host is not None:
        cmd += ["--host", host]
    with process([*cmd, *args], env, cwd) as proc:
        server = ServerProcess(proc, host or "127.0.0.1", flight_port, http_port)
        wait_ready(proc, lambda: ready(server), f"flightlake serve on {server.flight} to answer")
        yield server
