"""Run one documented server-start line, check that it serves, and stop it (for test_docs).

    python tests/doc_serve.py 'FLIGHTLAKE_FLIGHT_PORT=9815 flightlake serve --storage lake2'

A doc line such as ``make serve`` or ``flightlake serve ...`` runs in the foreground until
interrupted, so tests/test_docs.py hands it here instead of to the shell. It starts the line
as written, except for what a shared test machine needs and prints each change:

- every port (``--flight-port``, ``--http-port``, ``FLIGHTLAKE_*_PORT``, or the defaults) is
  replaced by a free one, so it never collides with another server;
- ``--host 0.0.0.0`` (or ``FLIGHTLAKE_HOST``) binds 127.0.0.1: tests bind loopback only;
- ``make serve`` runs its serve step, ``.venv/bin/flightlake serve``; the venv is the one
  ``make test`` built.

It waits (at most 120 s) until the server logs ``flight serving on``, asks its Flight
``health`` action, sends SIGTERM, and exits 0 only when the server exited 0. If the server
exits first, its output is printed and this exits 1.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

READY_SECONDS = 120
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def rewrite(line: str) -> tuple[list[str], dict[str, str], int, list[str]]:
    """(argv, environment additions, Flight port, notes) for a documented serve line."""
    words = shlex.split(line, comments=True)
    assigned: dict[str, str] = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, value = words.pop(0).split("=", 1)
        assigned[key] = value
    notes: list[str] = []
    if words[:2] == ["make", "serve"]:
        words = [".venv/bin/flightlake", "serve", *words[2:]]
        notes.append("make serve -> .venv/bin/flightlake serve")
    ports = {"--flight-port": free_port(), "--http-port": free_port()}
    env = {
        "FLIGHTLAKE_FLIGHT_PORT": str(ports["--flight-port"]),
        "FLIGHTLAKE_HTTP_PORT": str(ports["--http-port"]),
    }
    for i, word in enumerate(words[:-1]):
        if word in ports and words[i + 1] != "0":
            notes.append(f"{word} {words[i + 1]} -> {ports[word]}")
            words[i + 1] = str(ports[word])
        if word == "--host" and words[i + 1] not in (LOOPBACK, "localhost", "::1"):
            notes.append(f"--host {words[i + 1]} -> {LOOPBACK}")
            words[i + 1] = LOOPBACK
    for key in ("FLIGHTLAKE_FLIGHT_PORT", "FLIGHTLAKE_HTTP_PORT"):
        if key in assigned and assigned[key] != "0":
            notes.append(f"{key}={assigned[key]} -> {env[key]}")
            assigned[key] = env[key]
    if assigned.get("FLIGHTLAKE_HOST", LOOPBACK) not in (LOOPBACK, "localhost", "::1"):
        notes.append(f"FLIGHTLAKE_HOST={assigned['FLIGHTLAKE_HOST']} -> {LOOPBACK}")
        assigned["FLIGHTLAKE_HOST"] = LOOPBACK
    env.update(assigned)
    return words, env, int(env["FLIGHTLAKE_FLIGHT_PORT"]), notes


def answers_health(location: str) -> None:
    import pyarrow.flight as flight

    kwargs = {"disable_server_verification": True} if location.startswith("grpc+tls") else {}
    # Unauthenticated means it serves, and asks for the credentials its secrets file configures
    with (
        flight.FlightClient(location, **kwargs) as client,
        contextlib.suppress(flight.FlightUnauthenticatedError),
    ):
        list(client.do_action(flight.Action("health", b"")))


def main(line: str) -> int:
    argv, extra, _port, notes = rewrite(line)
    for note in notes:
        print(f"doc-test: {note}")
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + READY_SECONDS
    location = None
    while location is None and proc.poll() is None and time.monotonic() < deadline:
        for text in list(output):
            found = re.search(r"flight serving on ([^\s,]+)", text)
            if found:
                location = found.group(1)
        time.sleep(0.2)
    try:
        if location is None:
            why = f"did not serve within {READY_SECONDS} s"
            if proc.poll() is not None:
                why = f"exited with code {proc.returncode} before it served"
            reader.join(5)
            sys.stdout.write("".join(output))
            print(f"doc-test: `{line}` {why}", file=sys.stderr)
            return 1
        answers_health(location.replace("0.0.0.0", LOOPBACK))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    reader.join(5)
    if proc.returncode != 0:
        sys.stdout.write("".join(output))
        print(f"doc-test: `{line}` exited with code {proc.returncode} on SIGTERM", file=sys.stderr)
        return 1
    print(f"doc-test: `{line}` served on {location} and stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
