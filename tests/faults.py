"""Fault injection: TCP proxies. ``TcpProxy`` sits in front of the real S3 server and can be cut
and restored; ``DropOnceProxy`` sits in front of a Flight server and drops one connection."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every connection and refuses new
    ones (accept-and-close) until ``restore()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)

    def cut(self) -> None:
        """Break the store: close live connections, refuse new ones."""
        self._up.clear()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DropOnceProxy:
    """Forwards 127.0.0.1:<port> to a target and drops the FIRST connection once.

    On that connection, once the client has sent ``after_bytes`` bytes, nothing more goes
    back to the client; the proxy waits until ``drop_when()`` is true (at most
    ``hold_seconds``), then shuts both sides down. With ``drop_when`` saying "the server has
    committed", the client loses the answer of an upload that landed: the case an
    idempotency key exists for. Later connections are forwarded untouched.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        after_bytes: int,
        drop_when: Callable[[], bool] = lambda: True,
        hold_seconds: float = 30.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.after_bytes = after_bytes
        self.drop_when = drop_when
        self.hold_seconds = hold_seconds
        self.dropped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._first = True
        self._closed = False
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            self._socks += [client, upstream]
            first, self._first = self._first, False
            sent = {"n": 0}
            hold = threading.Event()
            threading.Thread(
                target=self._pipe,
                args=(client, upstream, sent, hold if first else None),
                daemon=True,
            ).start()
            threading.Thread(
                target=self._back, args=(upstream, client, hold if first else None), daemon=True
            ).start()

    def _pipe(
        self,
        src: socket.socket,
        dst: socket.socket,
        sent: dict[str, int],
        hold: threading.Event | None,
    ) -> None:
        """Client -> server; on the first connection, past ``after_bytes`` set ``hold``."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                sent["n"] += len(data)
                if hold is not None and sent["n"] >= self.after_bytes and not hold.is_set():
                    hold.set()
                    threading.Thread(target=self._drop, args=(src, dst), daemon=True).start()
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _back(self, src: socket.socket, dst: socket.socket, hold: threading.Event | None) -> None:
        """Server -> client; nothing is forwarded once ``hold`` is set."""
        try:
            while data := src.recv(65536):
                if hold is not None and hold.is_set():
                    continue  # the answer is lost
                dst.sendall(data)
        except OSError:
            pass

    def _drop(self, client: socket.socket, upstream: socket.socket) -> None:
        deadline = time.monotonic() + self.hold_seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.drop_when():
                    break
            time.sleep(0.05)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.dropped.set()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> DropOnceProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
