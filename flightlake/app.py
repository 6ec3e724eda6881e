"""Process wiring for ``flightlake serve``: logging, the lake, and the front ends.

The lake is built completely (catalog loaded, DuckDB views ready) before any port opens,
because ``FlightServerBase.__init__`` starts serving at once.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import pyarrow as pa

from flightlake import memory
from flightlake.auth import Authenticator, check_exposure
from flightlake.config import Settings
from flightlake.errors import InvalidInput, StorageError
from flightlake.flight.server import FlightServer
from flightlake.http import start_http
from flightlake.lake import Lake
from flightlake.observe import setup_logging
from flightlake.storage import Storage
from flightlake.values import url_host

log = logging.getLogger("flightlake")


def flight_location(settings: Settings, port: int | None = None) -> str:
    """The Flight URI for ``settings`` (``grpc://[::1]:8815`` for IPv6), on ``port`` if given."""
    scheme = "grpc+tls" if settings.tls_cert else "grpc"
    port = settings.flight_port if port is None else port
    return f"{scheme}://{url_host(settings.host)}:{port}"


def tls_kwargs(settings: Settings) -> dict[str, object]:
    """The Flight server's TLS arguments; InvalidInput naming the file when one is missing,
    unreadable or not PEM."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise InvalidInput("TLS needs both --tls-cert and --tls-key")
    if not settings.tls_cert:
        return {}
    cert = _read_pem(settings.tls_cert, "tls_cert", "certificate")
    key = _read_pem(settings.tls_key, "tls_key", "private key")
    return {"tls_certificates": [(cert, key)]}


def _read_pem(path: str, setting: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidInput(f"cannot read the TLS {what} {path!r} ({setting}): {reason}") from exc
    if b"-----BEGIN " not in data:
        raise InvalidInput(f"the TLS {what} {path!r} ({setting}) is not a PEM file")
    return data


#: (setting, what it serves, its flag) for each port serve opens
PORTS = (("flight_port", "Flight", "--flight-port"), ("http_port", "HTTP", "--http-port"))


def check_ports(settings: Settings) -> None:
    """Raise InvalidInput naming the port when a port serve needs is taken or cannot be
    bound, before anything is built: gRPC would only say "Server did not start properly".

    The probe binds with SO_REUSEADDR (so a port in TIME_WAIT after a restart is free) but not
    SO_REUSEPORT, so it also fails when another gRPC server (which sets SO_REUSEPORT) listens.
    """
    wanted = [(getattr(settings, name), what, flag, name) for name, what, flag in PORTS]
    wanted = [w for w in wanted if w[0]]  # 0: Flight picks a free port, HTTP is off
    if len({port for port, *_ in wanted}) < len(wanted):
        raise InvalidInput(
            f"flight_port and http_port are both {wanted[0][0]}: give them different ports"
        )
    for port, what, flag, name in wanted:
        try:
            infos = socket.getaddrinfo(
                settings.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise InvalidInput(f"cannot listen on host {settings.host!r}: {exc.strerror}") from exc
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                where = f"{url_host(settings.host)}:{port}"
                if exc.errno == errno.EADDRINUSE:
                    raise InvalidInput(
                        f"{what} port {port} is already in use ({where}): stop what holds it, "
                        f"or choose another with {flag} (FLIGHTLAKE_{name.upper()})"
                    ) from exc
                raise InvalidInput(
                    f"{what} cannot listen on {where}: {exc.strerror or exc}"
                ) from exc


def check_bucket(settings: Settings) -> None:
    """For s3:// storage: raise InvalidInput naming the bucket when it does not exist, or
    create it when ``s3_create_bucket`` says so. An unreachable store is not an error here
    (the server starts and /health reports it until the store answers)."""
    if not settings.is_s3:
        return
    storage = Storage(settings)
    try:
        exists = storage.bucket_exists()
    except StorageError:
        return
    if exists:
        return
    where = settings.s3_endpoint or f"AWS ({settings.s3_region})"
    if not settings.s3_create_bucket:
        raise InvalidInput(
            f"bucket {storage.bucket!r} does not exist at {where}: create it (for MinIO: "
            f"mc mb ALIAS/{storage.bucket}), or start with --create-bucket "
            "(FLIGHTLAKE_S3_CREATE_BUCKET=1) to have it created"
        )
    storage.create_bucket()
    log.info("created bucket %r at %s (s3_create_bucket)", storage.bucket, where)


def build_flight_server(
    lake: Lake, settings: Settings, auth: Authenticator | None = None
) -> FlightServer:
    """The Flight server, serving at once; InvalidInput naming the port if it cannot bind."""
    try:
        return FlightServer(lake, flight_location(settings), auth, **tls_kwargs(settings))
    except (pa.ArrowException, OSError) as exc:  # gRPC: "Server did not start properly"
        raise InvalidInput(
            f"Flight cannot listen on {url_host(settings.host)}:{settings.flight_port} "
            "(is the port in use?)"
        ) from exc


def run(
    settings: Settings,
    verbose: bool = False,
    worker: int | None = None,
    on_ready: Callable[[int], object] | None = None,
) -> None:
    """Serve until SIGINT / SIGTERM. With ``settings.workers > 1`` this process supervises
    that many worker processes (flightlake.workers), each of which calls ``run`` with its
    ``worker`` index."""
    setup_logging(settings.log_level, settings.log_format, verbose, worker)
    exposure = check_exposure(settings)  # refuses before anything is built or bound
    if exposure and worker is None:
        log.warning(exposure)
    if worker is None:  # once per serve: the workers share what the supervisor checked
        tls_kwargs(settings)  # names an unreadable TLS file before anything is built
        check_ports(settings)
        check_bucket(settings)
    if worker is None and settings.workers != 1:
        from flightlake.workers import supervise

        code = supervise(settings, verbose)
        if code:
            raise SystemExit(code)
        return
    auth = Authenticator.from_settings(settings)  # one for both ports: sessions work on both
    memory.configure(settings)  # after the start-up checks: their error is the only line
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
        "flight serving on %s%s (storage %s, %s)",
        flight_location(flight_settings, server.port),
        "" if worker is None else ", a private port behind serve's Flight proxy",
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
