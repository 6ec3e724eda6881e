"""In-process servers for tests: a Lake behind a Flight server on port 0, in a `with` block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from flightlake.config import Settings
from flightlake.flight.server import FlightServer
from flightlake.lake import Lake
from flightlake.secrets import Credentials

# A client process that starts a do_put, sends some batches, then waits to be killed.
HALF_PUT_CLIENT = """
import sys, time, pyarrow as pa, pyarrow.flight as flight
client = flight.FlightClient(sys.argv[1])
table = pa.table({"id": pa.array(range(200_000), pa.int64()), "text": ["x" * 40] * 200_000})
writer, _ = client.do_put(flight.FlightDescriptor.for_path(sys.argv[2]), table.schema)
writer.write_table(table, max_chunksize=50_000)
print("sent", flush=True)
time.sleep(600)
"""


def kill_client_mid_put(location: str, name: str) -> None:
    """Run HALF_PUT_CLIENT in a subprocess and SIGKILL it once it has sent its batches."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", HALF_PUT_CLIENT, location, name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "sent"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def make_settings(storage_url: str, s3_server: Any = None, **overrides: Any) -> Settings:
    """Settings for a test lake at ``storage_url`` (an ``s3://`` URL needs ``s3_server``)."""
    values: dict[str, Any] = {
        "storage": storage_url,
        "flight_port": 0,
        "http_port": 0,
        "gc_grace_seconds": 3600.0,
        # The memory ceiling watches the resident memory of the whole process: in-process
        # test servers share it with pytest and every earlier test, so it would fire on
        # their memory. Tests of the ceiling set it themselves (test_limits).
        "max_server_memory_bytes": 1 << 40,
    }
    if storage_url.startswith("s3://"):
        assert s3_server is not None, "an s3:// storage URL needs the s3_server fixture"
        values["s3_endpoint"] = s3_server.endpoint
        values["s3_region"] = s3_server.region
        values["credentials"] = Credentials(s3_server.access_key, s3_server.secret_key)
    values.update(overrides)
    return Settings(**values)


def local_settings(folder: Path, **overrides: Any) -> Settings:
    """make_settings for a local lake in ``folder``/lake with its spool in ``folder``/spool."""
    (folder / "lake").mkdir()
    (folder / "spool").mkdir()
    return make_settings(str(folder / "lake"), spool_dir=str(folder / "spool"), **overrides)


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
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout=30)
        thread.join(timeout=10)
        lake.close()
        if stopper.is_alive():
            raise AssertionError("Flight server did not shut down in 30 s: a call is stuck")
