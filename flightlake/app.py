"""Process wiring for ``flightlake serve``: logging, the lake, and the front ends.

The lake is built completely (catalog loaded, DuckDB views ready) before any port opens,
because ``FlightServerBase.__init__`` starts serving at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from flightlake.auth import Authenticator, check_exposure
from flightlake.config import Settings
from flightlake.errors import InvalidInput
from flightlake.flight.server import FlightServer
from flightlake.http import start_http
from flightlake.lake import Lake
from flightlake.observe import setup_logging

log = logging.getLogger("flightlake")


def flight_location(settings: Settings) -> str:
    scheme = "grpc+tls" if settings.tls_cert else "grpc"
    return f"{scheme}://{settings.host}:{settings.flight_port}"


def tls_kwargs(settings: Settings) -> dict[str, object]:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise InvalidInput("TLS needs both --tls-cert and --tls-key")
    if not settings.tls_cert:
        return {}
    with open(settings.tls_cert, "rb") as cert, open(settings.tls_key, "rb") as key:
        return {"tls_certificates": [(cert.read(), key.read())]}


def build_flight_server(
    lake: Lake, settings: Settings, auth: Authenticator | None = None
) -> FlightServer:
    return FlightServer(lake, flight_location(settings), auth, **tls_kwargs(settings))


def run(
    settings: Settings,
    verbose: bool = False,
    worker: int | None = None,
    on_ready: Callable[[int], object] | None = None,
) -> None:
    """Serve until SIGINT / SIGTERM. With ``settings.workers > 1`` this process supervises
    that many worker processes (flightlake.workers), each of which calls ``run`` with its
    ``worker`` index."""
    setup_logging(settings.log_level, settings.log_format, verbose)
    exposure = check_exposure(settings)  # refuses before anything is built or bound
    if exposure and worker is None:
        log.warning(exposure)
    if worker is None and settings.workers != 1:
        from flightlake.workers import supervise

        code = supervise(settings, verbose)
        if code:
            raise SystemExit(code)
        return
    auth = Authenticator.from_settings(settings)  # one for both ports: sessions work on both
    lake = Lake(settings)
    for warning in lake.load_warnings:
        log.warning(warning)
    # A worker's Flight port is private (its supervisor proxies the public one): loopback.
    flight_settings = settings if worker is None else settings.replace(host="127.0.0.1")
    server = build_flight_server(lake, flight_settings, auth)
    if not worker:  # one sweeper per lake, not one per worker
        lake.start_sweeper(settings.gc_interval_seconds)
    stopping = threading.Event()
    ready = threading.Event()  # /health answers 200 only while set: lake built, Flight serving
    try:
        http = start_http(lake, settings, ready.is_set, auth=auth) if settings.http_port else None
    except BaseException:
        server.shutdown()
        lake.close()
        raise
    ready.set()
    if on_ready is not None:
        on_ready(server.port)  # a worker tells its supervisor where its Flight port is

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            ready.clear()
            log.info("signal %d: shutting down", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "flight serving on %s (storage %s, %s)",
        flight_location(settings).replace(f":{settings.flight_port}", f":{server.port}"),
        lake.storage.describe(),
        f"{len(auth.principals)} principals" if auth.enabled else "no authentication",
    )
    if http is not None:
        log.info("http serving on %s", http.url)
    try:
        server.serve()
    finally:
        ready.clear()
        if http is not None:
            http.stop()
        lake.close()
        log.info("stopped")
