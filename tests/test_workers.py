"""`flightlake serve --workers N`: N processes behind the same Flight and HTTP ports.

A real `serve --workers 2` subprocess: both workers take connections (each client connection
lands on one worker, taken in turn), an ingest on one is seen by queries on the other within
freshness_seconds, HTTP answers on the shared port, a start-up failure is one line and a
non-zero exit, and SIGTERM stops every worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.config import Settings
from flightlake.workers import available_cores, worker_settings
from tests.helpers import free_port, wait_until
from tests.subprocess_server import (
    FLIGHTLAKE,
    ServerProcess,
    env_without_flightlake,
    flightlake_serve,
)


def worker_processes(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if p.is_running()]


def wait_exited(processes: list[psutil.Process], what: str) -> None:
    """Wait (at most 15 s) until every one of ``processes`` has exited (or is a zombie)."""
    wait_until(
        lambda: all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes),
        15,
        what=what,
    )


def test_two_workers_share_the_ports_and_see_each_others_commits(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with flightlake_serve(
        "--storage", str(lake), "--workers", "2", env=env_without_flightlake(), cwd=tmp_path
    ) as served:
        wait_until(lambda: len(worker_processes(served.proc.pid)) >= 2, 30, what="2 workers")
        table = pa.table({"id": pa.array(range(10), pa.int64())})
        with flight.FlightClient(served.flight) as client:
            writer, reader = client.do_put(flight.FlightDescriptor.for_path("t"), table.schema)
            writer.write_table(table)
            writer.done_writing()
            assert json.loads(reader.read().to_pybytes())["rows_written"] == 10
            writer.close()
        time.sleep(1.5)  # freshness_seconds (1 s): every worker sees the commit now
        # Several connections at once, so the proxy hands them to both workers.
        clients = [flight.FlightClient(served.flight) for _ in range(4)]
        try:
            counts = [
                c.do_get(flight.Ticket(b"SELECT count(*) AS n FROM t")).read_all()["n"][0].as_py()
                for c in clients
            ]
            assert counts == [10, 10, 10, 10]
            busy = [
                p
                for p in worker_processes(served.proc.pid)
                if any(c.status == psutil.CONN_ESTABLISHED for c in p.net_connections("tcp"))
            ]
            assert len(busy) == 2, "both workers hold client connections"
        finally:
            for c in clients:
                c.close()
        with urllib.request.urlopen(f"{served.http}/health", timeout=10) as response:
            assert response.status == 200
        workers = worker_processes(served.proc.pid)
    # SIGTERM to serve stopped every worker (and multiprocessing's resource tracker, which
    # exits once the supervisor is gone: give it a moment)
    wait_exited(workers, "the worker processes to exit")


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, when: str) -> None:
    """SIGKILL leaves the supervisor no chance to stop its workers; they notice and stop, so
    no orphan keeps the HTTP port answering while Flight (the supervisor's proxy) is gone.
    ``starting``: killed as soon as the worker processes exist, before they serve."""

    def two_workers(server: ServerProcess) -> bool:
        return len(worker_processes(server.proc.pid)) >= 2

    with flightlake_serve(
        "--storage", str(tmp_path / "lake"), "--workers", "2",
        env=env_without_flightlake(), cwd=tmp_path,
        **({"ready": two_workers} if when == "starting" else {}),
    ) as served:  # fmt: skip
        wait_until(lambda: two_workers(served), 30, what="2 workers")
        workers = worker_processes(served.proc.pid)  # and multiprocessing's resource tracker
        served.proc.kill()
        served.proc.wait(10)
        wait_exited(workers, "the orphaned workers to stop")


def test_workers_start_failure_is_one_line(tmp_path: Path) -> None:
    with flightlake_serve(
        "--storage", str(tmp_path / "a"), env=env_without_flightlake(), cwd=tmp_path
    ) as first:
        result = subprocess.run(
            [
                *FLIGHTLAKE,
                "serve",
                "--storage",
                str(tmp_path / "b"),
                "--workers",
                "2",
                "--flight-port",
                str(free_port()),
                "--http-port",
                str(first.http_port),  # taken by the first server
            ],
            env=env_without_flightlake(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(first.http_port) in result.stderr


@pytest.mark.parametrize("value", ["0", "-1"])
def test_workers_setting_checked(tmp_path: Path, value: str) -> None:
    result = subprocess.run(
        [*FLIGHTLAKE, "serve", "--storage", str(tmp_path), "--workers", value],
        env=env_without_flightlake(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_settings_share_the_cores_between_the_duckdb_pools() -> None:
    base = Settings()
    assert base.query_threads == 0  # the default: DuckDB takes one thread per core
    assert worker_settings(base.replace(workers=2), cores=2).query_threads == 1
    assert worker_settings(base.replace(workers=2), cores=8).query_threads == 4
    assert worker_settings(base.replace(workers=3), cores=8).query_threads == 2
    assert worker_settings(base.replace(workers=4), cores=2).query_threads == 1  # never 0
    # an explicit setting wins; the worker's Flight port is its own (the proxy has the public)
    chosen = worker_settings(base.replace(workers=2, query_threads=3, flight_port=8815), cores=2)
    assert (chosen.query_threads, chosen.flight_port) == (3, 0)
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


def _lines_until(proc: subprocess.Popen[str], wanted: int, *needles: str) -> list[str]:
    """Lines of ``proc``'s output containing any of ``needles``, until ``wanted`` (30 s).
    A thread reads the pipe (a select on the fd would miss lines already buffered)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        with contextlib.suppress(ValueError, OSError):  # the pipe closes when the test ends
            for line in stdout:
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    found: list[str] = []
    deadline = time.monotonic() + 30
    while len(found) < wanted and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if any(needle in line for needle in needles):
            found.append(line)
    return found


@pytest.mark.parametrize("query_threads", [None, 3])
def test_each_worker_starts_with_its_share_of_duckdb_threads(
    tmp_path: Path, query_threads: int | None
) -> None:
    extra = {} if query_threads is None else {"FLIGHTLAKE_QUERY_THREADS": str(query_threads)}
    expected = query_threads or max(1, available_cores() // 2)
    with flightlake_serve(
        "--storage",
        str(tmp_path / "lake"),
        "--workers",
        "2",
        env=env_without_flightlake(extra),
        cwd=tmp_path,
    ) as served:
        lines = _lines_until(served.proc, 4, "DuckDB threads", "flight serving on")
    started = [line for line in lines if "DuckDB threads" in line]  # the supervisor's lines
    assert len(started) == 2, lines
    assert all(f"DuckDB threads {expected})" in line for line in started), lines
    # each worker's own lines say which worker wrote them
    serving = [line for line in lines if "flight serving on" in line]
    tags = sorted(m.group(1) for line in serving if (m := re.search(r" (worker=\d+) \[", line)))
    assert tags == ["worker=0", "worker=1"], lines
