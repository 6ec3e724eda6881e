"""ADBC Flight SQL `fetch_arrow_table` against plain Flight `do_get`, same server, same run.

    python -m scripts.bench_adbc [--rows 500000] [--runs 3] [--s3]

A flightlake server runs in a child process (so client and server do not share a GIL) over a
fresh lake holding ``workers_500k`` (the deterministic workers CSV of ``scripts.gen_workers``),
on local disk or, with ``--s3``, on a SeaweedFS S3 server started for the run. Then, after one
warm-up of each, the two clients take turns for ``--runs`` rounds, each reading the whole
``SELECT * FROM workers_500k`` into a ``pyarrow.Table``:

- plain Flight: ``FlightClient.do_get(Ticket(b"SELECT ..."))).read_all()``;
- ADBC: a new cursor on one open ``adbc_driver_flightsql`` connection, ``execute`` +
  ``fetch_arrow_table`` (this includes Flight SQL's prepare / GetFlightInfo / close round
  trips, as every DB-API user pays them).

It prints the medians and their ratio. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.flight as flight

from scripts.bench_standalone import run_standalone
from scripts.gen_workers import write_workers_csv

DATASET = "workers_500k"


def _serve(settings: Any, csv: str, ready: Any) -> None:
    """Child process: build the lake, ingest the CSV, serve Flight (+ Flight SQL)."""
    from flightlake.flight.server import FlightServer
    from flightlake.lake import Lake

    lake = Lake(settings)
    lake.ingest_csv_file(DATASET, Path(csv), "overwrite")
    server = FlightServer(lake, "grpc://127.0.0.1:0")
    ready.put(server.port)
    server.serve()


def _timed(read: Callable[[], pa.Table]) -> tuple[float, int]:
    start = time.perf_counter()
    table = read()
    return time.perf_counter() - start, table.num_rows


def run(rows: int, runs: int, storage: str, s3: Any = None) -> dict[str, float]:
    from flightlake.config import Settings
    from flightlake.secrets import Credentials

    values: dict[str, Any] = {"storage": storage, "flight_port": 0, "http_port": 0}
    if s3 is not None:
        values.update(
            s3_endpoint=s3.endpoint,
            s3_region=s3.region,
            credentials=Credentials(s3.access_key, s3.secret_key),
        )
    with tempfile.TemporaryDirectory(prefix="bench-adbc-") as tmp:
        csv = write_workers_csv(Path(tmp) / f"{DATASET}.csv", rows)
        ctx = mp.get_context("spawn")
        ready = ctx.Queue()
        child = ctx.Process(target=_serve, args=(Settings(**values), str(csv), ready), daemon=True)
        child.start()
        try:
            port = ready.get(timeout=300)
            return _measure(f"grpc://127.0.0.1:{port}", rows, runs)
        finally:
            child.terminate()
            child.join(10)


def _measure(location: str, rows: int, runs: int) -> dict[str, float]:
    sql = f"SELECT * FROM {DATASET}"
    client = flight.FlightClient(location)
    conn = dbapi.connect(location, autocommit=True)

    def plain() -> pa.Table:
        return client.do_get(flight.Ticket(sql.encode())).read_all()

    def adbc() -> pa.Table:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    times: dict[str, list[float]] = {"flight": [], "adbc": []}
    try:
        for name, read in (("flight", plain), ("adbc", adbc)):  # warm-up, unrecorded
            _, got = _timed(read)
            assert got == rows, f"{name} read {got} rows, expected {rows}"
        for _ in range(runs):
            for name, read in (("flight", plain), ("adbc", adbc)):
                seconds, got = _timed(read)
                assert got == rows, f"{name} read {got} rows, expected {rows}"
                times[name].append(seconds)
    finally:
        conn.close()
        client.close()
    result = {f"{name}_median_s": statistics.median(ts) for name, ts in times.items()}
    result["ratio"] = result["adbc_median_s"] / result["flight_median_s"]
    for name, ts in times.items():
        print(
            f"{name:>6}: "
            + "  ".join(f"{t * 1000:7.1f} ms" for t in ts)
            + f"   median {statistics.median(ts) * 1000:7.1f} ms"
        )
    return result


def main(argv: list[str] | None = None) -> None:
    args, result, where = run_standalone("python -m scripts.bench_adbc", __doc__, run, argv)
    print(
        f"{args.rows} rows on {where}, median of {args.runs}: "
        f"Flight do_get {result['flight_median_s'] * 1000:.1f} ms, "
        f"ADBC fetch_arrow_table {result['adbc_median_s'] * 1000:.1f} ms, "
        f"ratio {result['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
