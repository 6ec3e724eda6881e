"""Cancels ``do_put`` calls whose client sends nothing for ``ingest_idle_seconds``.

pyarrow's Flight server has no read deadline, and a handler cannot cancel its own call: a
``read_chunk()`` waiting for a client that sends nothing blocks forever, holding an ingest
slot. The watchdog (one daemon thread per server) sees each upload's handler waiting in
``read_chunk`` and, past the limit, shuts down the call's TCP connection: gRPC then ends the
call (``read_chunk`` returns, ``context.is_cancelled()`` is true), the handler raises, the
ingest aborts (nothing committed, its objects deleted) and the slot is freed. The client
sees UNAVAILABLE ("Socket closed").

Measured here (pyarrow 26, Linux): shutting down the socket ends a blocked ``read_chunk``
within a tick; the server keeps serving and the same client reconnects on its next call.
The connection is found among this process's sockets by the call's peer address and the
server's port (``/proc/self/fd``, Linux only; elsewhere idle uploads are not cancelled).
Other calls multiplexed on that connection by the same client fail too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

log = logging.getLogger("flightlake.flight")

FD_DIR = "/proc/self/fd"


class IdleWatch:
    """One upload: when its handler started waiting for the client (None: not waiting)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.since: float | None = None
        self.expired = False

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Wrap each read from the client: only time spent in here counts as idle."""
        self.since = time.monotonic()
        try:
            yield
        finally:
            self.since = None


#: The upload the current handler thread reads (set by ``IdleWatchdog.watch``), so readers
#: deep in a handler (plain do_put, Flight SQL ingest) find it without passing it along.
CURRENT_WATCH: ContextVar[IdleWatch | None] = ContextVar("flightlake_idle_watch", default=None)


class IdleWatchdog:
    """Watches uploads; ``idle_seconds`` <= 0 turns it off."""

    def __init__(self, idle_seconds: float, server_port: Callable[[], int]) -> None:
        self.idle_seconds = idle_seconds
        self._server_port = server_port
        self._watches: set[IdleWatch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, peer: str) -> Iterator[IdleWatch]:
        """Register one upload (``context.peer()``) for the duration of the block."""
        watch = IdleWatch(peer)
        token = CURRENT_WATCH.set(watch)
        try:
            if self.idle_seconds <= 0:
                yield watch
            else:
                with self._watched(watch):
                    yield watch
        finally:
            CURRENT_WATCH.reset(token)

    @contextlib.contextmanager
    def _watched(self, watch: IdleWatch) -> Iterator[None]:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flightlake-idle-watchdog", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _run(self) -> None:
        tick = min(1.0, self.idle_seconds / 4)
        while True:
            time.sleep(tick)
            now = time.monotonic()
            with self._lock:
                idle = [
                    w
                    for w in self._watches
                    if not w.expired and w.since is not None and now - w.since >= self.idle_seconds
                ]
                for watch in idle:
                    watch.expired = True
            for watch in idle:
                log.warning(
                    "upload from %s sent nothing for %g s (ingest_idle_seconds): cancelling it",
                    watch.peer,
                    self.idle_seconds,
                )
                if not cut_connection(watch.peer, self._server_port()):
                    log.warning("could not find the connection of %s to cancel it", watch.peer)


def parse_peer(peer: str) -> tuple[str, int] | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` (gRPC's peer strings) -> (host, port)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def cut_connection(peer: str, server_port: int) -> bool:
    """Shut down (both ways) the socket of this process connected from ``peer`` to
    ``server_port``; True when one was found."""
    address = parse_peer(peer)
    if address is None or not os.path.isdir(FD_DIR):
        return False
    for name in os.listdir(FD_DIR):
        try:
            if not os.readlink(f"{FD_DIR}/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            remote, local = sock.getpeername(), sock.getsockname()
            if (
                local[1] == server_port
                and remote[1] == address[1]
                and str(remote[0]).removeprefix("::ffff:") == address[0]
            ):
                sock.shutdown(socket.SHUT_RDWR)  # shared by the dup: gRPC sees the close
                return True
        except (OSError, IndexError, TypeError):
            continue
        finally:
            sock.close()  # closes the dup only
    return False
