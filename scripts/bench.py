"""flightlake benchmarks side by side with the limit measured in the same run.

    make bench                       # the full run (500k and 5M rows); writes docs/BASELINE.md
    python -m scripts.bench --quick  # 500k rows only, shorter phases; writes .bench/

In one run: generates the workers CSVs (deterministic, cached under .bench/), starts
SeaweedFS S3 the way the tests do, starts `flightlake serve` subprocesses (local and S3
storage), and measures

1. ingest: `flightlake ingest` (CLI) vs pyarrow open_csv → ParquetWriter; Arrow do_put
2. memory: peak server RSS while ingesting 500k and 5M rows
3. query: Flight do_get vs in-process DuckDB on the same Parquet objects
4. concurrency and cores: 1/2/4/8 client processes against `serve` and `serve --workers N`,
   throughput, CPU per query and small-query latency (+ plot)
peer: ROAPI against flightlake, the same table through the same ADBC driver and over HTTP JSON
   (scripts/bench_peer.py; ROAPI is pip-installed into .bench/roapi-venv the first time)
5. batch size: do_get throughput per FLIGHTLAKE_BATCH_ROWS
6. HTTP JSON and ADBC against Flight, when scripts/bench_http.py / bench_adbc.py exist
7. soak: Arrow and CSV writers with readers for a fixed time (scripts/bench_soak.py)
8. Delta tables (scripts/bench_delta.py): commit latency at 1/100/1000 commits, a point query
   after 300 small appends before/after compaction, the freshness check's cost on count(*)

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
from contextlib import redirect_stdout
from pathlib import Path

from flightlake.workers import available_cores
from scripts import bench_soak
from scripts.bench_analysis import add_analysis
from scripts.bench_cores import ConcurrencyResult, measure_concurrency, report_concurrency
from scripts.bench_env import (
    BENCH_DIR,
    ROOT,
    Server,
    Store,
    cli_ingest,
    log,
    machine_facts,
    median,
    remove_tree,
    stores,
    workers_csv,
)
from scripts.bench_ingest import (
    INGEST_SIZES,
    QUICK_INGEST_SIZES,
    CsvRuns,
    measure_csv,
    measure_put,
    report_ingest,
)
from scripts.bench_query import (
    QueryResult,
    measure_batch_sizes,
    measure_queries,
    report_batches,
    report_queries,
)
from scripts.bench_report import (
    Report,
    Section,
    fmt_mb,
    fmt_ratio,
    fmt_s,
    md_table,
    plot_concurrency,
)

SECTIONS = ("ingest", "query", "concurrency", "peer", "batch", "http", "adbc", "soak", "delta")
BATCH_SIZES = (8_192, 16_384, 65_536, 262_144, 1_048_576)
CONCURRENCY = (1, 2, 4, 8)
HTTP_JSON_TARGET = 20.0


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
        "--workers",
        type=int,
        default=max(2, available_cores()),
        help="N of the `serve --workers N` server the concurrency section measures next to "
        "one process (default: this machine's cores, at least 2; 1 measures one process only)",
    )
    parser.add_argument(
        "--soak-seconds", type=float, help="length of the soak (default 60; 30 with --quick)"
    )
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
    if args.soak_seconds is None:
        args.soak_seconds = 30.0 if args.quick else 60.0
    if args.out is None:
        args.out = (
            (BENCH_DIR / "BASELINE-quick.md") if args.quick else (ROOT / "docs" / "BASELINE.md")
        )
    return args


def mark(report: Report, section: str) -> None:
    """Log a section start and note the machine's load then (the machine is shared)."""
    log(section)
    report.loads.append((section, os.getloadavg()[0]))


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
    sizes = list(QUICK_INGEST_SIZES if args.quick else INGEST_SIZES)
    csvs = {n: workers_csv(n, regenerate=args.regenerate) for n in sizes}
    workdir = BENCH_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    plot = args.out.parent / "baseline-concurrency.png"
    small_runs, large_runs = (9, 3) if args.quick else (21, max(7, args.repeats))

    csv_runs: dict[tuple[str, int], CsvRuns] = {}
    plotted = False
    try:
        with stores(workdir, with_s3="s3" in args.storage) as st, contextlib.ExitStack() as servers:
            kinds = [k for k in args.storage if k in st]
            if "ingest" in args.only:
                mark(report, "1+2. ingest and memory")
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
                mark(report, "3. query")
                for kind in kinds:
                    queries[kind] = measure_queries(query_servers[kind], small_runs, large_runs)
                report_queries(report, queries, small_runs, large_runs)
            if "concurrency" in args.only:
                mark(report, f"4. concurrency and cores (workers 1 and {args.workers})")
                conc = run_concurrency(report, args, st, kinds, query_servers, queries, workdir)
                conc_series = {
                    f"{kind}, workers={w}": rs for kind, by in conc.items() for w, rs in by.items()
                }
                plot_concurrency(
                    plot,
                    {
                        label: ([r.clients for r in rs], [r.bytes_per_s / 1e6 for r in rs])
                        for label, rs in conc_series.items()
                    },
                    {f"{k}, workers=1": mb_per_s(queries[k][-1]) for k in conc},
                )
                plotted = True
            optional_sections(report, args, st, kinds, csv_runs)
            servers.close()
            if "peer" in args.only:
                mark(report, "peer. ROAPI")
                run_peer(report, 500_000, 5 if args.quick else 7)
            if "batch" in args.only:
                kind = "local" if "local" in kinds else kinds[0]
                mark(report, f"5. batch size ({kind})")
                batches = measure_batch_sizes(
                    st[kind].child("query"), workdir, BATCH_SIZES, args.repeats
                )
                report_batches(report, kind, batches, args.repeats)
            if "soak" in args.only:
                mark(report, "7. soak")
                soaks = {
                    kind: bench_soak.soak(st[kind].child("soak"), workdir, args.soak_seconds)
                    for kind in kinds
                }
                bench_soak.report_soak(report, soaks, args.soak_seconds)
            if "delta" in args.only:
                mark(report, "8. Delta tables")
                run_delta(report, st, kinds, 200 if args.quick else 1000, small_runs)
    finally:
        if not args.keep:
            remove_tree(workdir)
    add_analysis(report, csv_runs)
    load = os.getloadavg()
    report.facts["load average at end"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    report.facts["benchmark wall time"] = f"{(time.monotonic() - started) / 60:.1f} min"
    rel_plot = os.path.relpath(plot, args.out.parent) if plotted else None
    report.write(args.out, rel_plot)
    return report


def mb_per_s(result: QueryResult) -> float:
    """In-process DuckDB's MB/s for a query of section 3."""
    return result.nbytes / result.limit / 1e6


def run_concurrency(
    report: Report,
    args: argparse.Namespace,
    st: dict[str, Store],
    kinds: Sequence[str],
    query_servers: dict[str, Server],
    queries: dict[str, list[QueryResult]],
    workdir: Path,
) -> dict[str, dict[int, list[ConcurrencyResult]]]:
    """Section 4 on each storage: the one-process query server and, for ``--workers N``
    above 1, a `serve --workers N` over the same lake, taking turns per level."""
    large_s, small_s = (2.0, 1.5) if args.quick else (3.0, 2.0)
    conc: dict[str, dict[int, list[ConcurrencyResult]]] = {}
    for kind in kinds:
        with contextlib.ExitStack() as stack:
            servers = {1: query_servers[kind]}
            if args.workers > 1:
                servers[args.workers] = stack.enter_context(
                    Server(
                        st[kind].child("query"),
                        workdir,
                        f"query-{kind}-workers{args.workers}",
                        workers=str(args.workers),
                    )
                )
            conc[kind] = measure_concurrency(servers, CONCURRENCY, args.repeats, large_s, small_s)
    limits = {
        k: next(r for r in rs if not r.query.small and r.rows == 500_000)
        for k, rs in queries.items()
    }
    report_concurrency(report, conc, limits, available_cores(), args.repeats, large_s, small_s)
    return conc


def run_peer(report: Report, rows: int, runs: int) -> None:
    """The peer section: scripts/bench_peer.py's seven lines (flightlake against ROAPI)."""
    from scripts import bench_peer

    sec = report.section(
        "Peer: ROAPI",
        f"From `scripts/bench_peer.py` (`measure({rows}, {runs})`): ROAPI "
        f"{bench_peer.ROAPI_VERSION} (PyPI `roapi`, in a venv of its own under .bench/) and "
        "a `flightlake serve` on local disk serve the same table; both are queried through "
        "the same stock ADBC Flight SQL driver (`execute` + `fetch_arrow_table`, a new cursor "
        "per query) and over HTTP JSON, interleaved, after one unrecorded warm-up, every run "
        f"with SQL text of its own. Median of {runs}. Ratio = flightlake / ROAPI; "
        "target (issue 14): ≤ 1.0x on every line.",
    )
    try:
        rows_ = bench_peer.measure(rows, runs)
    except Exception as exc:  # ROAPI could not be installed or started: say so, keep the run
        log(f"peer: {exc!r}")
        report.pending.append(
            f"peer section: scripts/bench_peer.py failed in this run ({type(exc).__name__}: "
            f"{str(exc)[:200]}); no numbers for it."
        )
        return
    sec.blocks.append(bench_peer.markdown(rows_))
    for r in rows_:
        report.check(
            "peer",
            f"{r.label} ({r.rows:,} rows), flightlake / ROAPI",
            fmt_ratio(r.ratio),
            "≤ 1.0x",
            round(r.ratio, 2) <= 1.0,
        )


def optional_sections(
    report: Report,
    args: argparse.Namespace,
    st: dict[str, Store],
    kinds: Sequence[str],
    csv_runs: dict[tuple[str, int], CsvRuns],
) -> None:
    """Section 6: the HTTP shim's and Flight SQL's own benchmark modules, when they exist."""
    sec = None
    for name, what in (
        ("http", "`/v1/sql` JSON vs Flight for 500k rows, and `/v1/ingest`"),
        ("adbc", "ADBC (Flight SQL driver) vs plain Flight"),
    ):
        if name not in args.only:
            continue
        module = f"scripts.bench_{name}"
        if importlib.util.find_spec(module) is None:
            report.pending.append(
                f"section 6 ({what}): `{module.replace('.', '/')}.py` does not exist yet, so "
                "this run has no numbers for it."
            )
            log(f"6. {name}: {module} not found; marked pending")
            continue
        if sec is None:
            sec = report.section("6. Other front ends", "")
        mark(report, f"6. {name}")
        try:  # their scripts print their own tables: keep them in a log, not on the console
            with (BENCH_DIR / f"bench_{name}.log").open("w") as out, redirect_stdout(out):
                if name == "adbc":
                    run_adbc(report, sec, st, kinds, args.repeats)
                else:
                    run_http(report, sec, st, kinds, args.repeats, csv_runs)
        except Exception as exc:  # another engineer's script: report it, keep the run
            log(f"6. {name}: {module} failed: {exc!r}")
            report.pending.append(
                f"section 6 ({what}): `{module.replace('.', '/')}.py` failed in this run "
                f"({type(exc).__name__}: {str(exc)[:200]}); no numbers for it."
            )


def run_delta(
    report: Report, st: dict[str, Store], kinds: Sequence[str], commits: int, runs: int
) -> None:
    """Section 7: scripts/bench_delta.py on a fresh root per storage."""
    from scripts import bench_delta

    sec = report.section(
        "8. Delta tables",
        "In process (the lake core, no front end), compaction off while measuring. Commit "
        f"latency: {commits} appends of 10 rows to one dataset, p50/p99 over the 20 commits "
        "around 1, 100 and 1,000, against a bare conditional PUT. Point query "
        "`SELECT sum(v) FROM t WHERE id = 3` after 300 appends of 10 rows, before and after "
        "`compact`, against the same 3,000 rows ingested at once (median of "
        f"{runs}). Freshness: count(*) with no check, the default 1 s and a probe per query.",
    )
    for kind in kinds:
        store = st[kind].child("delta")
        result = bench_delta.run(store.url, store.s3, commits, runs)
        sec.blocks.append("\n".join(bench_delta.report_lines(kind, result)[2:]))
        c, p, f = result["commit"], result["point"], result["freshness"]
        for at in (1, 100, 1000):
            if f"p50@{at}" in c:
                report.check(
                    "8. delta",
                    f"commit p50 at {at} commits / conditional PUT, {kind}",
                    fmt_ratio(c[f"p50@{at}"] / c["put_p50"]),
                    "(info)",
                    None,
                )
        after = p["after"] / p["once"]
        report.check(
            "8. delta",
            f"point query after 300 appends, compacted / at once, {kind}",
            fmt_ratio(after),
            "<= 2x + 5 ms",
            p["after"] <= 2 * p["once"] + 0.005,
        )
        report.check(
            "8. delta",
            f"point query after 300 appends, not compacted / at once, {kind}",
            fmt_ratio(p["before"] / p["once"]),
            "(info)",
            None,
        )
        added = (f["default"] - f["none"]) * 1000
        report.check(
            "8. delta",
            f"freshness check added to count(*) (default 1 s), {kind}",
            f"{added:+.2f} ms",
            "<= 1 ms",
            added <= 1.0,
        )


def run_adbc(
    report: Report, sec: Section, st: dict[str, Store], kinds: Sequence[str], runs: int
) -> None:
    """scripts/bench_adbc.py (the Flight SQL engineer's): its own server, same run."""
    from scripts import bench_adbc

    rows = []
    for kind in kinds:
        store = st[kind].child("adbc")
        result = bench_adbc.run(500_000, runs, store.url, store.s3)
        ratio = result["ratio"]
        rows.append(
            [
                kind,
                fmt_s(result["flight_median_s"]),
                fmt_s(result["adbc_median_s"]),
                fmt_ratio(ratio),
            ]
        )
        report.check(
            "6. adbc",
            f"ADBC fetch_arrow_table vs Flight do_get, 500k rows, {kind}",
            fmt_ratio(ratio),
            "(info)",
            None,
        )
    sec.blocks.append(
        f"ADBC, from `scripts/bench_adbc.py` (`run(500000, {runs}, ...)`): `SELECT *` of "
        "500k rows through `adbc_driver_flightsql` (`execute` + `fetch_arrow_table`, including "
        "Flight SQL's GetFlightInfo round trip) against plain Flight `do_get`, alternating, on "
        "that script's own server process. Ratio = ADBC time / Flight time."
    )
    sec.blocks.append(md_table(["storage", "Flight do_get", "ADBC", "ratio"], rows))


def run_http(
    report: Report,
    sec: Section,
    st: dict[str, Store],
    kinds: Sequence[str],
    runs: int,
    csv_runs: dict[tuple[str, int], CsvRuns],
) -> None:
    """scripts/bench_http.py (the HTTP engineer's): its own server, same run."""
    from scripts import bench_http

    rows, ingest_rows = [], []
    for kind in kinds:
        store = st[kind].child("http")
        result = bench_http.run(500_000, runs, store.url, store.s3)
        times = {name: median(values) for name, values in result["times"].items()}
        flight_s = times["Flight do_get"]
        for name, seconds in times.items():
            rows.append(
                [
                    kind,
                    name,
                    fmt_s(seconds),
                    fmt_mb(result["sizes"][name]),
                    fmt_ratio(seconds / flight_s),
                ]
            )
        json_ratio = times["HTTP JSON"] / flight_s
        report.check(
            "6. http",
            f"/v1/sql JSON vs Flight do_get, 500k rows, {kind}",
            f"Flight {json_ratio:.1f}x faster",
            "Flight ≥ 20x faster",
            round(json_ratio, 1) >= HTTP_JSON_TARGET,
        )
        before, peak = result["ingest_rss"]
        limit = csv_runs.get((kind, 500_000))
        ratio = median(limit.limit_seconds) / result["ingest_s"] if limit else None
        ingest_rows.append(
            [
                kind,
                fmt_s(result["ingest_s"]),
                fmt_s(median(limit.limit_seconds)) if limit else "-",
                fmt_ratio(ratio) if ratio else "-",
                fmt_mb(before),
                fmt_mb(peak),
            ]
        )
        if ratio is not None:
            report.check(
                "1. ingest",
                f"POST /v1/ingest (multipart), {kind}, 500,000 rows",
                fmt_ratio(ratio),
                "≥ 0.8x",
                round(ratio, 2) >= 0.8,
            )
    sec.blocks.append(
        f"HTTP, from `scripts/bench_http.py` (`run(500000, {runs}, ...)`, the HTTP engineer's "
        "script, on its own server process with the HTTP shim): `SELECT *` of 500k rows over "
        "Flight `do_get` and `POST /v1/sql` as Arrow IPC, JSON and CSV (whole body received), "
        "alternating. Ratio = time / Flight time; target: Flight at least 20x faster than "
        "JSON."
    )
    sec.blocks.append(md_table(["storage", "path", "median", "body", "vs Flight"], rows))
    sec.blocks.append(
        "`POST /v1/ingest` of the 500k-row CSV (multipart, one run on that script's fresh "
        "server, no warm-up), against the in-process pyarrow limit of section 1."
    )
    sec.blocks.append(
        md_table(
            ["storage", "/v1/ingest", "limit", "ratio", "server RSS before", "server RSS peak"],
            ingest_rows,
        )
    )


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
