"""In-process servers for tests: a Lake behind a Flight server on port 0, in a `with` block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow.flight as flight

from flightlake.config import Credentials, Settings
from flightlake.flight.server import FlightServer
from flightlake.lake import Lake


def make_settings(storage_url: str, s3_server: Any = None, **overrides: Any) -> Settings:
    """Settings for a test lake at ``storage_url`` (an ``s3://`` URL needs ``s3_server``)."""
    values: dict[str, Any] = {"storage": storage_url, "flight_port": 0, "http_port": 0,
                              "gc_grace_seconds": 3600.0}
    if storage_url.startswith("s3://"):
        assert s3_server is not None, "an s3:// storage URL needs the s3_server fixture"
        values["s3_endpoint"] = s3_server.endpoint
        values["s3_region"] = s3_server.region
        values["credentials"] = Credentials(s3_server.access_key, s3_server.secret_key)
    values.update(overrides)
    return Settings(**values)


@dataclass
class Running:
    """A running in-process server and a connected client."""

    lake: Lake
    server: FlightServer
    client: flight.FlightClient

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.server.port}"


@contextmanager
def flight_server(settings: Settings, **server_kwargs: Any) -> Iterator[Running]:
    """Build the lake, serve Flight on 127.0.0.1:0, yield it with a client; stop on exit."""
    lake = Lake(settings)
    server = FlightServer(lake, "grpc://127.0.0.1:0", **server_kwargs)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    try:
        yield Running(lake, server, client)
    finally:
        client.close()
        server.shutdown()
        thread.join(timeout=10)
        lake.close()
