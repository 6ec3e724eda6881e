"""The HTTP server thread: uvicorn serving an ASGI app (plain or TLS) from a thread of the
process that serves Flight, so both front ends share one Lake."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from flightlake.values import url_host


class HttpServer:
    """uvicorn serving ``app`` from a thread of this process; ``start`` binds or raises."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        tls_cert: str = "",
        tls_key: str = "",
        reuse_port: bool = False,
    ) -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            # reuse_port: `serve --workers N` binds N processes to one port (SO_REUSEPORT)
            self._socket = socket.create_server((host, port), family=family, reuse_port=reuse_port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"HTTP cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,  # observe.record writes one line per request
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=5,
            ssl_certfile=tls_cert or None,
            ssl_keyfile=tls_key or None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="flightlake-http", daemon=True
        )
        self.scheme = "https" if tls_cert else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{url_host(self.host)}:{self.port}"

    def start(self, timeout: float = 10.0) -> HttpServer:
        self._thread.start()
        for _ in range(int(timeout / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise OSError(f"HTTP server did not start on {self.url} (see the log)")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()
