"""In-process HTTP servers for tests: the /v1 shim over a Lake, uvicorn on port 0 in a thread."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from flightlake.config import Settings
from flightlake.http import HttpServer, start_http
from flightlake.lake import Lake


@dataclass
class RunningHttp:
    """A running in-process HTTP shim and a connected httpx client."""

    lake: Lake
    server: HttpServer
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def http_server(
    lake: Lake, settings: Settings, ready: Callable[[], bool] | None = None
) -> Iterator[RunningHttp]:
    """Serve ``lake`` over HTTP on 127.0.0.1:0; yield it with a client; stop on exit."""
    server = start_http(lake, settings.replace(host="127.0.0.1"), ready, port=0)
    verify = ssl.create_default_context(cafile=settings.tls_cert) if settings.tls_cert else True
    client = httpx.Client(base_url=server.url, timeout=60, verify=verify)
    try:
        yield RunningHttp(lake, server, client)
    finally:
        client.close()
        server.stop()


@contextmanager
def lake_http(settings: Settings) -> Iterator[RunningHttp]:
    """A fresh Lake for ``settings`` behind an in-process HTTP shim (no Flight)."""
    lake = Lake(settings)
    try:
        with http_server(lake, settings) as running:
            yield running
    finally:
        lake.close()
