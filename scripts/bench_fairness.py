"""Small queries behind heavy ones: a point query's latency, idle and with heavy queries running.

    python -m scripts.bench_fairness [--heavy 3] [--runs 40] [--threads 0,1]

For each DuckDB thread setting (``FLIGHTLAKE_QUERY_THREADS``; 0 = one per core) a
`flightlake serve` subprocess on a local lake gets a 500,000-row workers dataset. Then:

1. idle: ``--runs`` point queries (``SELECT ... WHERE worker_id = ?`` over the 500k rows, one row
   back) over Flight, one after another; the median is the idle latency;
2. loaded: ``--heavy`` client threads keep one heavy query each running (a group-by over a
   cross join of the dataset with range(), sent with a 20 s deadline
   so the server stops it when the client gives up), and the same point queries run again.

It prints the medians and p90s against the issue's target (loaded median ≤ 3 x idle
+ 10 ms), and the median of 7 runs of a group-by over the 500k rows with the server to itself
(what fewer DuckDB threads cost a query alone). A measurement, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.flight as flight

from scripts.bench_env import Server, Store, cli_ingest, percentile, workers_csv

# A typical analytical query alone: what fewer DuckDB threads cost a query with the box to itself.
SCAN_SQL = "SELECT role, state, count(*) AS n, avg(hourly_rate) AS r FROM workers_500k GROUP BY ALL"
HEAVY_SQL = (
    "SELECT w.role, count(*) AS n, sum(r.range) AS s "
    "FROM workers_500k w, range(400) r GROUP BY w.role"
)


def point_sql(i: int) -> bytes:
    return f"SELECT * FROM workers_500k WHERE worker_id = {1 + (i * 7919) % 500_000}".encode()


def point_latencies(client: flight.FlightClient, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        start = time.perf_counter()
        table = client.do_get(flight.Ticket(point_sql(i))).read_all()
        out.append(time.perf_counter() - start)
        assert table.num_rows == 1
    return out


def measure(threads: int, heavy: int, runs: int, csv: Path, workdir: Path) -> dict[str, float]:
    store = Store("local", tempfile.mkdtemp(prefix=f"lake-{threads}-", dir=workdir))
    with Server(store, workdir, f"fair-{threads}", query_threads=str(threads)) as server:
        cli_ingest(server, csv, "workers_500k")
        client = flight.FlightClient(server.location)
        point_latencies(client, 5)  # warm-up
        idle = point_latencies(client, runs)
        scans = []
        for _ in range(7):
            start = time.perf_counter()
            client.do_get(flight.Ticket(SCAN_SQL.encode())).read_all()
            scans.append(time.perf_counter() - start)
        stop = threading.Event()

        def hammer() -> None:
            own = flight.FlightClient(server.location)
            options = flight.FlightCallOptions(timeout=20)
            while not stop.is_set():
                # past the deadline the server interrupts it; then start another
                with contextlib.suppress(flight.FlightError):
                    own.do_get(flight.Ticket(HEAVY_SQL.encode()), options).read_all()
            own.close()

        workers = [threading.Thread(target=hammer, daemon=True) for _ in range(heavy)]
        for worker in workers:
            worker.start()
        time.sleep(2.0)  # the heavy queries are inside DuckDB now
        loaded = point_latencies(client, runs)
        stop.set()
        client.close()
        for worker in workers:
            worker.join(timeout=30)
    idle_med, loaded_med = statistics.median(idle), statistics.median(loaded)
    return {
        "idle_median": idle_med,
        "idle_p90": percentile(idle, 90),
        "loaded_median": loaded_med,
        "loaded_p90": percentile(loaded, 90),
        "target": 3 * idle_med + 0.010,
        "scan_alone": statistics.median(scans),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_fairness", description=__doc__)
    parser.add_argument("--heavy", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", default="0,1", help="FLIGHTLAKE_QUERY_THREADS values")
    args = parser.parse_args(argv)
    csv = workers_csv(500_000)
    print(f"{os.cpu_count()} cores; {args.heavy} heavy queries; point query median of {args.runs}")
    print(
        "| query_threads | idle median | idle p90 | loaded median | loaded p90 | target "
        "| group-by alone |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        for threads in (int(t) for t in args.threads.split(",")):
            r = measure(threads, args.heavy, args.runs, csv, Path(tmp))
            ok = "met" if r["loaded_median"] <= r["target"] else "missed"
            print(
                f"| {threads} | {r['idle_median'] * 1000:.1f} ms | {r['idle_p90'] * 1000:.1f} ms "
                f"| {r['loaded_median'] * 1000:.1f} ms | {r['loaded_p90'] * 1000:.1f} ms "
                f"| ≤ {r['target'] * 1000:.1f} ms ({ok}) | {r['scan_alone'] * 1000:.0f} ms |",
                flush=True,
            )


if __name__ == "__main__":
    main()
