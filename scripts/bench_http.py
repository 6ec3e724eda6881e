"""The HTTP shim against plain Flight: one 500k-row `SELECT *`, same server, same run.

    python -m scripts.bench_http [--rows 500000] [--runs 3] [--s3]

A flightlake server (lake + Flight + the HTTP shim, as `flightlake serve` runs them) lives in a
child process, so client and server do not share a GIL. The parent uploads the deterministic
workers CSV through ``POST /v1/ingest`` (timed, with the server's peak RSS), then, after one
warm-up of each, the clients take turns for ``--runs`` rounds reading
``SELECT * FROM workers_500k``:

- Flight: ``do_get(Ticket(sql)).read_all()`` into a ``pyarrow.Table``;
- HTTP Arrow: ``POST /v1/sql`` with ``Accept: application/vnd.apache.arrow.stream``, read into
  a ``pyarrow.Table``;
- HTTP JSON: ``POST /v1/sql``, the whole body received (and, timed apart, ``json.loads``);
- HTTP CSV: ``POST /v1/sql`` with ``Accept: text/csv``, the whole body received.

It prints medians, bytes on the wire and the ratios to Flight. A measurement, not a test.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow as pa
import pyarrow.flight as flight

from scripts.bench_standalone import run_standalone
from scripts.gen_workers import write_workers_csv

DATASET = "workers_500k"
SQL = f"SELECT * FROM {DATASET}"
ARROW = "application/vnd.apache.arrow.stream"


def _serve(settings: Any, ready: Any) -> None:
    """Child process: the lake, Flight and HTTP on free ports, as `flightlake serve` wires them."""
    from flightlake.flight.server import FlightServer
    from flightlake.http import start_http
    from flightlake.lake import Lake

    lake = Lake(settings)
    server = FlightServer(lake, "grpc://127.0.0.1:0")
    http = start_http(lake, settings, port=0)
    ready.put((server.port, http.port))
    server.serve()


@contextlib.contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, int]]:
    """Sample a process's RSS every 20 ms; yields a dict whose "peak" is filled on exit."""
    process, stop, out = psutil.Process(pid), threading.Event(), {"peak": 0}

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], process.memory_info().rss)
            stop.wait(0.02)

    out["before"] = process.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


def _timed(read: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    size = read()
    return time.perf_counter() - start, size


def run(rows: int, runs: int, storage: str, s3: Any = None) -> dict[str, Any]:
    from flightlake.config import Settings
    from flightlake.secrets import Credentials

    values: dict[str, Any] = {"storage": storage, "flight_port": 0, "http_port": 0}
    if s3 is not None:
        values.update(
            s3_endpoint=s3.endpoint,
            s3_region=s3.region,
            credentials=Credentials(s3.access_key, s3.secret_key),
        )
    settings = Settings(**values)
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    child = ctx.Process(target=_serve, args=(settings, ready), daemon=True)
    child.start()
    result: dict[str, Any] = {}
    try:
        flight_port, http_port = ready.get(timeout=120)
        base = f"http://127.0.0.1:{http_port}"
        with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp, \
                httpx.Client(base_url=base, timeout=600) as http:  # fmt: skip
            csv = write_workers_csv(Path(tmp) / f"{DATASET}.csv", rows)
            result["csv_bytes"] = csv.stat().st_size
            with peak_rss(child.pid) as mem, csv.open("rb") as fh:
                seconds, _ = _timed(lambda: http.post(
                    f"/v1/ingest?name={DATASET}&mode=overwrite", files={"file": (csv.name, fh)}
                ).raise_for_status().json()["rows_written"])  # fmt: skip
            result["ingest_s"], result["ingest_rss"] = seconds, (mem["before"], mem["peak"])

        client = flight.FlightClient(f"grpc://127.0.0.1:{flight_port}")
        http = httpx.Client(base_url=base, timeout=600)

        def read_flight() -> int:
            table = client.do_get(flight.Ticket(SQL.encode())).read_all()
            assert table.num_rows == rows
            return int(table.nbytes)

        def read_http(accept: str) -> Callable[[], int]:
            def read() -> int:
                response = http.post("/v1/sql", json={"sql": SQL}, headers={"accept": accept})
                response.raise_for_status()
                if accept == ARROW:
                    assert pa.ipc.open_stream(response.content).read_all().num_rows == rows
                return len(response.content)

            return read

        paths = {
            "Flight do_get": read_flight,
            "HTTP Arrow IPC": read_http(ARROW),
            "HTTP JSON": read_http("application/json"),
            "HTTP CSV": read_http("text/csv"),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        sizes: dict[str, int] = {}
        for name, read in paths.items():  # warm-up
            sizes[name] = read()
        with peak_rss(child.pid) as mem:
            for _ in range(runs):
                for name, read in paths.items():
                    seconds, sizes[name] = _timed(read)
                    times[name].append(seconds)
        result["query_rss"] = (mem["before"], mem["peak"])
        body = http.post("/v1/sql", json={"sql": SQL}).content
        parse_s, _ = _timed(lambda: len(json.loads(body)))
        result.update(times=times, sizes=sizes, json_parse_s=parse_s)
        client.close()
        http.close()
    finally:
        child.terminate()
        child.join(10)
    return result


def report(rows: int, runs: int, where: str, result: dict[str, Any]) -> str:
    times, sizes = result["times"], result["sizes"]
    flight_s = statistics.median(times["Flight do_get"])
    lines = [
        f"{rows:,} rows (`{SQL}`) on {where}, server in a child process, median of {runs}:",
        "",
        "| path | median | min..max | bytes | vs Flight |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median * 1000:.0f} ms | {min(values) * 1000:.0f}.."
                     f"{max(values) * 1000:.0f} ms | {sizes[name] / 1e6:.1f} MB | "
                     f"{median / flight_s:.1f}x |")  # fmt: skip
    before, peak = result["ingest_rss"]
    q_before, q_peak = result["query_rss"]
    lines += [
        "",
        f"`json.loads` of the JSON body on the client: {result['json_parse_s'] * 1000:.0f} ms",
        f"POST /v1/ingest of the {result['csv_bytes'] / 1e6:.1f} MB CSV (multipart, streamed): "
        f"{result['ingest_s']:.2f} s; server RSS {before / 1e6:.0f} MB before, "
        f"{peak / 1e6:.0f} MB at peak.",
        f"Server RSS during the query rounds: {q_before / 1e6:.0f} MB before, "
        f"{q_peak / 1e6:.0f} MB at peak.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, result, where = run_standalone("python -m scripts.bench_http", __doc__, run, argv)
    print(report(args.rows, args.runs, where, result))


if __name__ == "__main__":
    main()
