"""Soak: writers and readers on one dataset for a fixed time, against a real server.

    python -m scripts.bench_soak [--seconds 60] [--arrow-writers 3] [--csv-writers 1]
                                 [--readers 6] [--rows 100] [--s3]

A `flightlake serve` subprocess (local lake, or a bucket on a SeaweedFS server started for
the run with ``--s3``) gets dataset ``soak`` (columns writer, seq, value). Then, each in a
process of its own so the clients do not share a GIL:

- ``--arrow-writers`` processes append ``--rows`` rows per Flight ``do_put`` (Arrow), and
  ``--csv-writers`` processes the same rows as CSV (``{"format": "csv"}``), back to back;
  each counts the rows the server acknowledged (``rows_written`` of the PutResult);
- ``--readers`` processes run ``SELECT writer, count(*), sum(value) FROM soak GROUP BY
  writer`` back to back and time each.

At the end: acknowledged rows against ``SELECT count(*) FROM soak`` (must be equal), errors
(must be 0, with the first few messages), read p50 / p99, appends per second, and the peak
RSS of the server process (sampled every 20 ms). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from scripts.bench_env import PeakRss, Server, Store, log, percentile

DATASET = "soak"
READ_SQL = f"SELECT writer, count(*) AS n, sum(value) AS s FROM {DATASET} GROUP BY writer"


def _rows(writer: str, start: int, count: int) -> pa.Table:
    seq = pa.array(range(start, start + count), pa.int64())
    return pa.table(
        {
            "writer": pa.array([writer] * count, pa.string()),
            "seq": seq,
            "value": pa.array([i * 0.5 for i in range(start, start + count)], pa.float64()),
        }
    )


def _csv_bytes(table: pa.Table) -> bytes:
    lines = ["writer,seq,value"]
    for row in table.to_pylist():
        lines.append(f"{row['writer']},{row['seq']},{row['value']!r}")
    return ("\n".join(lines) + "\n").encode()


def _put(client: flight.FlightClient, table: pa.Table, fmt: str) -> int:
    if fmt == "arrow":
        descriptor = flight.FlightDescriptor.for_path(DATASET)
    else:
        command = {"ingest": DATASET, "format": "csv", "mode": "append"}
        descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
        table = pa.table({"data": pa.array([_csv_bytes(table)], pa.binary())})
    writer, meta = client.do_put(descriptor, table.schema)
    with writer:
        writer.write_table(table)
        writer.done_writing()
        answer = json.loads(meta.read().to_pybytes())
    return int(answer["rows_written"])


def _writer(location: str, name: str, fmt: str, rows: int, until: float, out: Any) -> None:
    """Child process: append until ``until``; report acknowledged rows, puts and errors."""
    client = flight.FlightClient(location)
    acked = puts = 0
    errors: list[str] = []
    seq = 0
    while time.time() < until:
        try:
            acked += _put(client, _rows(name, seq, rows), fmt)
            puts += 1
        except Exception as exc:  # counted and reported: the soak's point
            errors.append(f"{fmt} writer: {type(exc).__name__}: {str(exc)[:200]}")
        seq += rows
    out.put({"acked": acked, "puts": puts, "errors": errors, "latencies": []})


def _reader(location: str, until: float, out: Any) -> None:
    """Child process: run READ_SQL back to back until ``until``; report latencies."""
    client = flight.FlightClient(location)
    latencies: list[float] = []
    errors: list[str] = []
    while time.time() < until:
        start = time.perf_counter()
        try:
            client.do_get(flight.Ticket(READ_SQL.encode())).read_all()
            latencies.append(time.perf_counter() - start)
        except Exception as exc:
            errors.append(f"reader: {type(exc).__name__}: {str(exc)[:200]}")
    out.put({"acked": 0, "puts": 0, "errors": errors, "latencies": latencies})


def run(
    seconds: float,
    arrow_writers: int,
    csv_writers: int,
    readers: int,
    rows: int,
    store: Store,
    workdir: Path,
) -> dict[str, Any]:
    """Run the soak against a fresh server on ``store``; return its figures."""
    with Server(store, workdir, f"soak-{store.kind}") as server:
        client = flight.FlightClient(server.location)
        seeded = _put(client, _rows("seed", 0, rows), "arrow")  # creates the dataset
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        until = time.time() + seconds + 2.0  # children take ~1-2 s to start
        procs = [
            ctx.Process(target=_writer, args=(server.location, f"a{i}", "arrow", rows, until, out))
            for i in range(arrow_writers)
        ]
        procs += [
            ctx.Process(target=_writer, args=(server.location, f"c{i}", "csv", rows, until, out))
            for i in range(csv_writers)
        ]
        procs += [
            ctx.Process(target=_reader, args=(server.location, until, out)) for _ in range(readers)
        ]
        with PeakRss(server.pid) as mem:
            started = time.time()
            for proc in procs:
                proc.start()
            results = [out.get(timeout=seconds + 300) for _ in procs]
            wall = time.time() - started
            for proc in procs:
                proc.join(timeout=30)
        stored = client.do_get(flight.Ticket(f"SELECT count(*) FROM {DATASET}".encode()))
        stored_rows = int(stored.read_all().column(0)[0].as_py())
        client.close()
    latencies = [t for r in results for t in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    puts = sum(r["puts"] for r in results)
    return {
        "seconds": wall,
        "acked": seeded + sum(r["acked"] for r in results),
        "stored": stored_rows,
        "puts": puts,
        "appends_per_s": puts / wall,
        "reads": len(latencies),
        "read_p50": percentile(latencies, 50) if latencies else float("nan"),
        "read_p99": percentile(latencies, 99) if latencies else float("nan"),
        "errors": errors,
        "peak_rss": mem.peak,
    }


#: The soak the benchmark runs: 3 Arrow writers, 1 CSV writer, 6 readers, 100 rows per append.
SOAK = {"arrow_writers": 3, "csv_writers": 1, "readers": 6, "rows": 100}
#: Targets (issue 16, with compaction from the table-format work).
P50_TARGET, P99_TARGET, RSS_TARGET = 0.050, 0.250, 600e6


def soak(store: Store, workdir: Path, seconds: float) -> dict[str, Any]:
    """The benchmark's soak (``SOAK``) on ``store`` for ``seconds``."""
    log(f"8. soak on {store.kind} for {seconds:.0f} s")
    return run(seconds, store=store, workdir=workdir, **SOAK)


def report_soak(report: Any, results: dict[str, dict[str, Any]], seconds: float) -> None:
    """Section 7 of the benchmark report: a table and the targets."""
    from scripts.bench_report import fmt_mb, md_table

    sec = report.section(
        "8. Soak",
        f"`scripts/bench_soak.py`: for {seconds:.0f} s, {SOAK['arrow_writers']} Arrow writers "
        f"and {SOAK['csv_writers']} CSV writer append {SOAK['rows']} rows per `do_put` to one "
        f"dataset, back to back, while {SOAK['readers']} readers run `{READ_SQL}` back to back; "
        "every client is a process of its own, the server a `flightlake serve` subprocess. "
        "Acknowledged rows are the sum of the PutResults' `rows_written`; stored rows are "
        "`count(*)` at the end.",
    )
    rows = []
    for kind, r in results.items():
        rows.append(
            [
                kind,
                f"{r['acked']:,}",
                f"{r['stored']:,}",
                str(len(r["errors"])),
                f"{r['read_p50'] * 1000:.0f} ms",
                f"{r['read_p99'] * 1000:.0f} ms",
                f"{r['appends_per_s']:.1f}",
                fmt_mb(r["peak_rss"]),
            ]
        )
        report.check(
            "8. soak", f"acknowledged = stored rows, {kind}", f"{r['acked'] - r['stored']:+,}",
            "0", r["acked"] == r["stored"],
        )  # fmt: skip
        report.check("8. soak", f"errors, {kind}", str(len(r["errors"])), "0", not r["errors"])
        report.check(
            "8. soak", f"read p50 / p99, {kind}",
            f"{r['read_p50'] * 1000:.0f} / {r['read_p99'] * 1000:.0f} ms",
            "≤ 50 / 250 ms", r["read_p50"] <= P50_TARGET and r["read_p99"] <= P99_TARGET,
        )  # fmt: skip
        report.check(
            "8. soak", f"server peak RSS, {kind}", fmt_mb(r["peak_rss"]), "< 600 MB",
            r["peak_rss"] < RSS_TARGET,
        )  # fmt: skip
        for error in r["errors"][:3]:
            sec.blocks.append(f"- {kind} error: `{error}`")
    headers = ["storage", "acknowledged rows", "stored rows", "errors", "read p50",
               "read p99", "appends/s", "server peak RSS"]  # fmt: skip
    sec.blocks.insert(0, md_table(headers, rows))


def describe(r: dict[str, Any]) -> str:
    lines = [
        f"{r['seconds']:.0f} s: {r['puts']} appends ({r['appends_per_s']:.1f}/s), "
        f"{r['reads']} reads",
        f"acknowledged rows {r['acked']:,}, stored rows {r['stored']:,} "
        f"({'equal' if r['acked'] == r['stored'] else 'DIFFERENT'})",
        f"errors: {len(r['errors'])}",
        *[f"  {e}" for e in r["errors"][:5]],
        f"read p50 {r['read_p50'] * 1000:.0f} ms, p99 {r['read_p99'] * 1000:.0f} ms",
        f"server peak RSS {r['peak_rss'] / 1e6:.0f} MB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--arrow-writers", type=int, default=3)
    parser.add_argument("--csv-writers", type=int, default=1)
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--rows", type=int, default=100, help="rows per append")
    parser.add_argument("--s3", action="store_true", help="lake on a SeaweedFS S3 server")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = Path(tmp)
        if args.s3:
            from scripts.bench_env import stores

            with stores(workdir) as st:
                store = st["s3"].child("soak")
                result = run(args.seconds, args.arrow_writers, args.csv_writers, args.readers,
                             args.rows, store, workdir)  # fmt: skip
        else:
            store = Store("local", str(workdir / "lake"))
            Path(store.root).mkdir()
            result = run(args.seconds, args.arrow_writers, args.csv_writers, args.readers,
                         args.rows, store, workdir)  # fmt: skip
    print(describe(result))


if __name__ == "__main__":
    main()
