"""Small helpers shared by the test suite (ports, polling, a do_put that reads its PutResult)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

#: SeaweedFS serves gRPC on every HTTP port plus this offset.
GRPC_PORT_OFFSET = 10000


def _bind(port: int) -> socket.socket | None:
    """Bind a TCP socket to 127.0.0.1:port; return it, or None when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports_with_grpc(count: int, offset: int = GRPC_PORT_OFFSET) -> list[int]:
    """Return `count` distinct free ports P whose partner P + offset is free too.

    All candidate sockets stay bound until the choice is complete, so the ports
    (and their partners) never overlap each other.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count * 200):
            if len(ports) == count:
                break
            low = _bind(0)
            if low is None:
                continue
            held.append(low)
            port = low.getsockname()[1]
            if port + offset > 65535:
                continue
            high = _bind(port + offset)
            if high is None:
                continue
            held.append(high)
            ports.append(port)
        if len(ports) < count:
            raise RuntimeError(f"could not find {count} free port pairs (offset {offset})")
        return ports
    finally:
        for sock in held:
            sock.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Call `predicate` until it returns true; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def put_result(
    client: flight.FlightClient, descriptor: flight.FlightDescriptor, data: pa.Table, **kw: Any
) -> dict[str, Any]:
    """``do_put`` all of ``data`` under ``descriptor``; the server's PutResult JSON."""
    writer, meta = client.do_put(descriptor, data.schema, **kw)
    with writer:
        writer.write_table(data)
        writer.done_writing()
        answer = meta.read()
    assert answer is not None
    result: dict[str, Any] = json.loads(answer.to_pybytes())
    return result
