"""``flightlake serve --workers N``: N server processes on the same ports, over one lake.

One Python process serves Flight from one interpreter, and the GIL caps what it does with more
cores. With ``workers > 1`` the ``serve`` process becomes a supervisor that starts N worker
processes (``multiprocessing`` spawn), each building its own Lake.

- HTTP: every worker binds the public HTTP port with ``SO_REUSEPORT``; the Linux kernel spreads
  incoming connections over them.
- Flight: gRPC would do the same, but Arrow Flight's server turns ``SO_REUSEPORT`` off
  (``GRPC_ARG_ALLOW_REUSEPORT = 0`` in Arrow's grpc_server.cc, so that leftover test servers
  cannot steal requests; checked here with pyarrow 26: a second FlightServerBase on the same
  port fails with "Address already in use", and pyarrow's FlightServerBase takes no gRPC
  arguments: C++'s ``FlightServerOptions::builder_hook`` is not exposed).
  So each worker serves Flight on a private loopback port, and the supervisor listens on the
  public Flight port and hands each accepted connection to the next worker in turn, forwarding
  bytes with ``splice(2)`` through a pipe (the kernel moves them; Python only loops once per
  MiB). TLS passes through untouched: the workers terminate it.

A connection stays with one worker for its life.

Each worker's DuckDB gets ``cores // N`` threads (at least 1) unless ``query_threads`` is set:
N pools of one thread per core each would put N threads on every core (worker_settings).

The workers share nothing but the lake: a commit made by one is seen by the others' queries
that start at least ``freshness_seconds`` later (DESIGN.md, "Table format"), exactly as with
separate servers over one bucket. Each worker has its own ingest slots, query limits, metrics
and session tokens (a basic-auth session token is good on the worker that issued it).

The supervisor forwards SIGTERM / SIGINT to the workers and waits for them; a worker whose
supervisor is gone (killed with SIGKILL) stops itself within a second. A worker that dies
within ``STARTUP_SECONDS`` of its start is a start-up failure (a port, the bucket, a setting):
every worker is stopped and ``serve`` exits non-zero. A worker that dies later is restarted,
at most ``MAX_RESTARTS`` times per ``RESTART_WINDOW`` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from flightlake.config import Settings
from flightlake.errors import InvalidInput

log = logging.getLogger("flightlake.workers")

STARTUP_SECONDS = 10.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_SECONDS = 20.0
SUPERVISOR_POLL = 0.5  # seconds between a worker's checks that its supervisor still runs
SPLICE_BYTES = 1 << 20  # bytes one splice(2) moves at most (the pipe is sized to match)


def check_workers(settings: Settings) -> None:
    """Refuse worker settings that cannot work, naming why (InvalidInput)."""
    if settings.workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {settings.workers}")
    if settings.workers > 1 and (settings.flight_port == 0 or settings.http_port < 0):
        raise InvalidInput("--workers needs a fixed --flight-port (not 0): the workers share it")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, so a cpuset or ``taskset``
    counts; ``os.cpu_count()`` where affinity is unknown), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_settings(settings: Settings, cores: int | None = None) -> Settings:
    """The settings each worker runs with: Flight on a private port (0: the supervisor
    proxies the public one), and, unless ``query_threads`` is set, DuckDB threads shared
    out: ``max(1, cores // workers)`` each, so N workers' DuckDB pools together match the
    ``cores`` (default :func:`available_cores`) instead of oversubscribing them N times."""
    threads = settings.query_threads
    if threads <= 0:
        threads = max(1, (cores or available_cores()) // settings.workers)
    return settings.replace(flight_port=0, query_threads=threads)


def _worker_main(
    settings: Settings, verbose: bool, index: int, ports: Any, supervisor: int
) -> None:
    """A worker process: serve until told to stop; a start-up error is one line, exit 1.
    Its private Flight port is reported on ``ports`` as ``(index, port)``; ``supervisor`` is
    the supervisor's pid (given, not read here: it may be gone before this runs)."""
    from flightlake.app import run

    threading.Thread(
        target=_stop_without_supervisor, args=(supervisor,), name="supervisor-watch", daemon=True
    ).start()
    try:
        run(settings, verbose=verbose, worker=index, on_ready=lambda p: ports.put((index, p)))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if verbose:
            raise
        print(f"error: worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _stop_without_supervisor(supervisor: int) -> None:
    """In a worker: once the supervisor (pid ``supervisor``) is gone, stop (SIGTERM to this
    process, the same clean stop as ``serve`` gets). A supervisor killed with SIGKILL cannot
    stop its workers, and an orphan would keep answering HTTP on the shared port while its
    Flight port, behind the dead supervisor's proxy, is unreachable. The parent pid changes
    when the parent dies (the orphan is re-parented); checked every SUPERVISOR_POLL seconds."""
    while os.getppid() == supervisor:
        time.sleep(SUPERVISOR_POLL)
    log.warning("the supervisor (pid %d) is gone: this worker stops", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Starts, watches and stops the worker processes of one ``serve --workers N``."""

    def __init__(self, settings: Settings, verbose: bool = False) -> None:
        self.settings = settings
        self.verbose = verbose
        self._ctx = mp.get_context("spawn")
        self._procs: dict[int, tuple[BaseProcess, float]] = {}
        self._restarts: deque[float] = deque()
        self._stopping = threading.Event()
        self._ports = self._ctx.Queue()
        # Workers serve Flight on private loopback ports; the public port is ours (proxy).
        self._worker_settings = worker_settings(settings)
        self._proxy = FlightProxy(settings.host, settings.flight_port)

    def _start(self, index: int) -> None:
        self._proxy.remove(index)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self._worker_settings, self.verbose, index, self._ports, os.getpid()),
            name=f"flightlake-worker-{index}",
        )
        proc.start()
        self._procs[index] = (proc, time.monotonic())
        log.info(
            "worker %d started (pid %d, DuckDB threads %d)",
            index,
            proc.pid,
            self._worker_settings.query_threads,
        )

    def stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Ask every worker to stop (SIGTERM); :meth:`run` then waits for them."""
        self._stopping.set()
        self._proxy.close()
        for proc, _ in self._procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()

    def run(self) -> int:
        """Serve until stopped; return the exit code for ``serve``."""
        for index in range(self.settings.workers):
            self._start(index)
        threading.Thread(target=self._collect_ports, name="flightlake-ports", daemon=True).start()
        self._proxy.start()
        log.info(
            "%d workers serving Flight on port %d and HTTP on port %d",
            self.settings.workers,
            self.settings.flight_port,
            self.settings.http_port,
        )
        code = 0
        while not self._stopping.is_set():
            sentinels = [proc.sentinel for proc, _ in self._procs.values()]
            multiprocessing.connection.wait(sentinels, timeout=1.0)
            for index, (proc, started) in list(self._procs.items()):
                if proc.is_alive() or self._stopping.is_set():
                    continue
                now = time.monotonic()
                if now - started < STARTUP_SECONDS:
                    log.error("worker %d failed to start (exit code %s)", index, proc.exitcode)
                    code = 1
                    self.stop()
                    break
                while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
                    self._restarts.popleft()
                if len(self._restarts) >= MAX_RESTARTS:
                    log.error(
                        "worker %d exited (code %s); %d restarts in %.0f s: stopping",
                        index,
                        proc.exitcode,
                        len(self._restarts),
                        RESTART_WINDOW,
                    )
                    code = 1
                    self.stop()
                    break
                log.warning("worker %d exited (code %s); restarting", index, proc.exitcode)
                self._restarts.append(now)
                self._start(index)
        self._join()
        return code

    def _collect_ports(self) -> None:
        while not self._stopping.is_set():
            try:
                index, port = self._ports.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            self._proxy.add(index, port)

    def _join(self) -> None:
        deadline = time.monotonic() + STOP_SECONDS
        for proc, _ in self._procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker %s did not stop in %.0f s: killing it", proc.name, STOP_SECONDS)
                proc.kill()
                proc.join(5)


class FlightProxy:
    """The public Flight port: accepts TCP connections and splices each one to a worker's
    private loopback port, taking the workers in turn (round robin)."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family, backlog=512)
        except OSError as exc:
            raise OSError(
                exc.errno, f"Flight cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        self._workers: dict[int, int] = {}  # worker index -> private Flight port
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._closed = False

    def add(self, index: int, port: int) -> None:
        with self._lock:
            self._workers[index] = port
        log.info("worker %d serves Flight on 127.0.0.1:%d", index, port)

    def remove(self, index: int) -> None:
        with self._lock:
            self._workers.pop(index, None)

    def start(self) -> None:
        threading.Thread(target=self._accept, name="flightlake-proxy", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _pick(self) -> list[int]:
        """The workers' ports, starting with the next one in turn."""
        with self._lock:
            ports = [self._workers[i] for i in sorted(self._workers)]
        if not ports:
            return []
        start = next(self._turn) % len(ports)
        return ports[start:] + ports[:start]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS  # workers may still be starting
        upstream = None
        while upstream is None and time.monotonic() < deadline and not self._closed:
            for port in self._pick():
                try:
                    upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except OSError:
                    continue
            else:
                time.sleep(0.05)
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Move bytes from ``src`` to ``dst`` until ``src`` ends, with splice(2) through a pipe
    (no copy into Python); then half-close ``dst`` so the far side sees the end."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, SPLICE_BYTES)
    try:
        while True:
            moved = os.splice(src.fileno(), write_end, SPLICE_BYTES)
            if moved == 0:
                break
            while moved:
                moved -= os.splice(read_end, dst.fileno(), moved)
    except OSError:
        pass  # a side closed or reset: the other direction ends too
    finally:
        os.close(read_end)
        os.close(write_end)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def supervise(settings: Settings, verbose: bool = False) -> int:
    """Run ``settings.workers`` workers until SIGTERM / SIGINT; return the exit code."""
    check_workers(settings)
    supervisor = Supervisor(settings, verbose)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()
