"""flightlake benchmarks side by side with the limit measured in the same run.

    make bench                       # the full run (500k and 5M rows); writes docs/BASELINE.md
    python -m scripts.bench --quick  # 500k rows only, shorter phases; writes .bench/

In one run: generates the workers CSVs (deterministic, cached under .bench/), starts
SeaweedFS S3 the way the tests do, starts `flightlake serve` subprocesses (local and S3
storage), and measures

1. ingest: `flightlake ingest` (CLI) vs pyarrow open_csv → ParquetWriter; Arrow do_put
2. memory: peak server RSS while ingesting 500k and 5M rows
3. query: Flight do_get vs in-process DuckDB on the same Parquet objects
4. concurrency: 1/2/4/8 client processes, throughput and small-query latency (+ plot)
5. batch size: do_get throughput per FLIGHTLAKE_BATCH_ROWS
6. HTTP JSON and ADBC against Flight, when scripts/bench_http.py / bench_adbc.py exist

Each figure is a median of at least 3 runs and each target a ratio against its limit. This
is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.bench_env import (
    BENCH_DIR,
    ROOT,
    Server,
    cli_ingest,
    log,
    machine_facts,
    remove_tree,
    stores,
    workers_csv,
)
from scripts.bench_ingest import CsvRuns, measure_csv, measure_put, report_ingest
from scripts.bench_query import (
    ConcurrencyResult,
    QueryResult,
    measure_batch_sizes,
    measure_concurrency,
    measure_queries,
    report_batches,
    report_concurrency,
    report_queries,
)
from scripts.bench_report import Report, plot_concurrency

SECTIONS = ("ingest", "query", "concurrency", "batch", "http", "adbc")
BATCH_SIZES = (8_192, 16_384, 65_536, 262_144, 1_048_576)
CONCURRENCY = (1, 2, 4, 8)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="500k rows only, 3 repeats, shorter concurrency phases"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per measurement for ingest and large queries (>= 3)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (of {','.join(SECTIONS)}); "
        "memory is measured with ingest",
    )
    parser.add_argument("--storage", default="local,s3", help="storages: local,s3")
    parser.add_argument(
        "--out", type=Path, help="report path (default docs/BASELINE.md; .bench/ with --quick)"
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="rewrite the CSVs under .bench/ even if they are there",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep .bench/run-*/ (server logs, local lakes) afterwards",
    )
    args = parser.parse_args(argv)
    args.repeats = max(3, args.repeats)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.storage = [s.strip() for s in args.storage.split(",") if s.strip()]
    if args.out is None:
        args.out = (
            (BENCH_DIR / "BASELINE-quick.md") if args.quick else (ROOT / "docs" / "BASELINE.md")
        )
    return args


def command_line(argv: Sequence[str]) -> str:
    text = "python -m scripts.bench" + "".join(f" {shlex.quote(a)}" for a in argv)
    if os.environ.get("MAKELEVEL"):
        extra = f" BENCH_ARGS={shlex.quote(' '.join(argv))}" if argv else ""
        return f"make bench{extra}    # = .venv/bin/{text}"
    return text


def run(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    started = time.monotonic()
    command = command_line(argv)
    report = Report(machine_facts(), command, args.quick)
    sizes = [500_000] if args.quick else [500_000, 5_000_000]
    csvs = {n: workers_csv(n, regenerate=args.regenerate) for n in sizes}
    workdir = BENCH_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    plot = args.out.parent / "baseline-concurrency.png"
    large_s, small_s = (2.0, 1.5) if args.quick else (4.0, 3.0)
    small_runs, large_runs = (9, 3) if args.quick else (15, max(5, args.repeats))

    try:
        with stores(workdir, with_s3="s3" in args.storage) as st, contextlib.ExitStack() as servers:
            kinds = [k for k in args.storage if k in st]
            if "ingest" in args.only:
                log("1+2. ingest and memory")
                csv_runs: dict[tuple[str, int], CsvRuns] = {}
                for kind in kinds:
                    for n in sizes:
                        csv_runs[(kind, n)] = measure_csv(
                            st[kind], workdir, csvs[n], n, args.repeats
                        )
            query_servers = {}
            for kind in kinds:
                server = servers.enter_context(
                    Server(st[kind].child("query"), workdir, f"query-{kind}")
                )
                cli_ingest(server, csvs[500_000], "workers")
                query_servers[kind] = server
            if "ingest" in args.only:
                puts = {
                    kind: measure_put(query_servers[kind], st[kind], csvs[500_000], args.repeats)
                    for kind in kinds
                }
                report_ingest(report, csv_runs, puts, command)
            queries: dict[str, list[QueryResult]] = {}
            if "query" in args.only or "concurrency" in args.only:
                log("3. query")
                for kind in kinds:
                    queries[kind] = measure_queries(query_servers[kind], small_runs, large_runs)
                report_queries(report, queries, small_runs, large_runs)
            if "concurrency" in args.only:
                log("4. concurrency")
                conc: dict[str, list[ConcurrencyResult]] = {}
                for kind in kinds:
                    conc[kind] = measure_concurrency(
                        query_servers[kind], CONCURRENCY, args.repeats, large_s, small_s
                    )
                limits = {
                    k: next(r for r in rs if not r.query.small and r.rows == 500_000)
                    for k, rs in queries.items()
                }
                report_concurrency(report, conc, limits, args.repeats, large_s, small_s)
                plot_concurrency(
                    plot,
                    {
                        k: ([r.clients for r in rs], [r.bytes_per_s / 1e6 for r in rs])
                        for k, rs in conc.items()
                    },
                    {k: limits[k].nbytes / limits[k].limit / 1e6 for k in conc},
                )
            optional_sections(report, args, query_servers, st, csvs)
            servers.close()
            if "batch" in args.only:
                kind = "local" if "local" in kinds else kinds[0]
                log(f"5. batch size ({kind})")
                batches = measure_batch_sizes(
                    st[kind].child("query"), workdir, BATCH_SIZES, args.repeats
                )
                report_batches(report, kind, batches, args.repeats)
    finally:
        if not args.keep:
            remove_tree(workdir)
    load = os.getloadavg()
    report.facts["load average at end"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    report.facts["benchmark wall time"] = f"{(time.monotonic() - started) / 60:.1f} min"
    rel_plot = os.path.relpath(plot, args.out.parent) if plot.exists() else None
    report.write(args.out, rel_plot)
    return report


def optional_sections(
    report: Report,
    args: argparse.Namespace,
    servers: dict[str, Server],
    st: dict[str, object],
    csvs: dict[int, Path],
) -> None:
    """Section 6: the HTTP shim's and ADBC's own benchmark modules, when they exist."""
    for name, what in (
        ("http", "`/v1/sql` JSON vs Flight for 500k rows, and `/v1/ingest`"),
        ("adbc", "ADBC (Flight SQL driver) vs plain Flight"),
    ):
        if name not in args.only:
            continue
        module = f"scripts.bench_{name}"
        if importlib.util.find_spec(module) is None:
            report.pending.append(
                f"section 6 ({what}) is pending: `{module.replace('.', '/')}.py` does not "
                "exist yet, so this run has no numbers for it."
            )
            log(f"6. {name}: {module} not found; marked pending")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    report = run(args, argv)
    print()
    print(report.console_summary())
    for line in report.pending:
        print(f"TODO (pending): {line}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
