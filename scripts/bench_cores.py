"""Section 4: concurrency and cores, `serve` with one process against `serve --workers N`.

N client processes (pyarrow.flight, one connection each) are released together by a barrier
that the benchmark process joins too, so it can read the server's CPU time (the `serve`
process and all its children, from /proc through psutil) at the start and the end of every
phase; each client reads its own CPU time (getrusage). Per level of concurrency the servers
take turns (workers=1, workers=N, then the next level), each phase repeated ``runs`` times.

From the CPU times: CPU ms per large query (server + clients) and "cores busy" = all CPU
seconds / wall seconds. On C cores the aggregate throughput of many clients is at most
C / (CPU seconds per query), so the scaling of 8 clients over 1 is at most
C / (cores busy with one client), unless a query costs less CPU under load.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import pyarrow.flight as flight

from scripts.bench_env import Server, log, median, percentile
from scripts.bench_query import LARGE_SQL, SMALL_SQL, QueryResult, flight_get
from scripts.bench_report import Report, fmt_mbs, fmt_ms, fmt_ratio, md_table

CORES_TARGET = 1.8  # issue 14: 8 clients' aggregate SELECT * throughput over one client's
BARRIER_SECONDS = 600.0
DISTURBED_CORES = 0.3  # other processes' cores above which a phase is called disturbed


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live descendants."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores, /proc/stat: every
    field but idle and iowait), or 0.0 where /proc/stat cannot be read."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_process(
    location: str, phases: list[tuple[str, str, float]], barrier: Any, out: Any
) -> None:
    """One client process: for each phase, wait for everyone, loop until the phase's
    duration has passed, report (phase, start, end, rows, bytes, latencies, own CPU s),
    then wait for everyone again (the benchmark reads the server's CPU between the two)."""
    client = flight.FlightClient(location)
    for sql in dict.fromkeys(sql for _, sql, _ in phases):
        flight_get(client, sql)  # connect and warm
    for label, sql, duration in phases:
        barrier.wait(BARRIER_SECONDS)
        cpu = own_cpu_seconds()
        start = time.monotonic()
        deadline = start + duration
        rows = nbytes = 0
        latencies = []
        while True:
            t0 = time.perf_counter()
            table = flight_get(client, sql)
            latencies.append(time.perf_counter() - t0)
            rows += table.num_rows
            nbytes += table.nbytes
            del table
            if time.monotonic() >= deadline:
                break
        end = time.monotonic()
        out.put((label, start, end, rows, nbytes, latencies, own_cpu_seconds() - cpu))
        barrier.wait(BARRIER_SECONDS)
    client.close()


@dataclass
class ConcurrencyResult:
    """Medians over the runs of one level of concurrency on one server."""

    clients: int
    rows_per_s: float
    bytes_per_s: float
    p50: float
    p99: float
    small_requests: int
    server_cpu_per_query: float  # s, large query
    client_cpu_per_query: float  # s, large query
    cores_busy: float  # all CPU s / wall s during the large phases
    others_busy: float  # other processes' CPU s / wall s then (the machine is shared)
    large_p50: float  # s, one large query


def _run_level(
    server: Server, n: int, phases: list[tuple[str, str, float]]
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, float], dict[str, float]]:
    """Run the phases with ``n`` clients; per phase: the clients' reports, the server's CPU
    seconds and the whole machine's busy CPU seconds."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client_process, args=(server.location, phases, barrier, out), daemon=True
        )
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    server_cpu: dict[str, float] = {}
    machine_cpu: dict[str, float] = {}
    got: dict[str, list[tuple[Any, ...]]] = {}
    try:
        for label, _, _ in phases:
            barrier.wait(BARRIER_SECONDS)
            before, machine = tree_cpu_seconds(server.pid), machine_cpu_seconds()
            barrier.wait(BARRIER_SECONDS)
            server_cpu[label] = tree_cpu_seconds(server.pid) - before
            machine_cpu[label] = machine_cpu_seconds() - machine
        for _ in range(n * len(phases)):
            label, *rest = out.get(timeout=BARRIER_SECONDS)
            got.setdefault(label, []).append(tuple(rest))
    except (queue_mod.Empty, threading.BrokenBarrierError) as exc:
        raise RuntimeError(f"concurrency clients ({n}) stopped answering") from exc
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return got, server_cpu, machine_cpu


def _summarise(
    n: int,
    runs: int,
    got: dict[str, list[tuple[Any, ...]]],
    server_cpu: dict[str, float],
    machine_cpu: dict[str, float],
) -> ConcurrencyResult:
    rates, byte_rates, p50s, p99s, counts, s_cpu, c_cpu, busy, others, large_p50 = (
        [] for _ in range(10)
    )
    for i in range(runs):
        large = got[f"large-{i}"]  # (start, end, rows, bytes, latencies, cpu) per client
        wall = max(r[1] for r in large) - min(r[0] for r in large)
        queries = sum(len(r[4]) for r in large)
        clients_cpu = sum(r[5] for r in large)
        rates.append(sum(r[2] for r in large) / wall)
        byte_rates.append(sum(r[3] for r in large) / wall)
        s_cpu.append(server_cpu[f"large-{i}"] / queries)
        c_cpu.append(clients_cpu / queries)
        busy.append((server_cpu[f"large-{i}"] + clients_cpu) / wall)
        # the machine's busy time between the barriers (a little longer than ``wall``)
        ours = server_cpu[f"large-{i}"] + clients_cpu
        others.append(max(0.0, machine_cpu[f"large-{i}"] - ours) / wall)
        large_p50.append(percentile([x for r in large for x in r[4]], 50))
        lat = [x for r in got[f"small-{i}"] for x in r[4]]
        p50s.append(percentile(lat, 50))
        p99s.append(percentile(lat, 99))
        counts.append(len(lat))
    return ConcurrencyResult(
        n,
        median(rates),
        median(byte_rates),
        median(p50s),
        median(p99s),
        int(median(counts)),
        median(s_cpu),
        median(c_cpu),
        median(busy),
        median(others),
        median(large_p50),
    )


def measure_concurrency(
    servers: Mapping[int, Server],
    levels: Sequence[int],
    runs: int,
    large_s: float,
    small_s: float,
) -> dict[int, list[ConcurrencyResult]]:
    """``servers``: workers -> a server started with that many. Per level, each in turn."""
    results: dict[int, list[ConcurrencyResult]] = {w: [] for w in servers}
    phases = []
    for i in range(runs):
        phases += [(f"large-{i}", LARGE_SQL, large_s), (f"small-{i}", SMALL_SQL, small_s)]
    for n in levels:
        for workers, server in servers.items():
            got, server_cpu, machine_cpu = _run_level(server, n, phases)
            result = _summarise(n, runs, got, server_cpu, machine_cpu)
            log(
                f"  workers={workers} {n} clients: {result.bytes_per_s / 1e6:.0f} MB/s "
                f"aggregate, CPU/query server {result.server_cpu_per_query * 1000:.0f} ms + "
                f"clients {result.client_cpu_per_query * 1000:.0f} ms, "
                f"{result.cores_busy:.2f} cores busy (others {result.others_busy:.2f}); "
                f"small p50 {result.p50 * 1000:.1f} ms "
                f"p99 {result.p99 * 1000:.1f} ms"
            )
            results[workers].append(result)
    return results


def scaling(rs: Sequence[ConcurrencyResult]) -> float:
    """Aggregate throughput of the most clients over one client's."""
    return rs[-1].bytes_per_s / rs[0].bytes_per_s


def report_concurrency(
    report: Report,
    results: Mapping[str, Mapping[int, list[ConcurrencyResult]]],
    limits: Mapping[str, QueryResult],
    cores: int,
    runs: int,
    large_s: float,
    small_s: float,
) -> None:
    """The side-by-side table per storage and the cores checks (issue 14, target 4)."""
    sec = report.section(
        "4. Concurrency and cores",
        "N client processes (pyarrow.flight, one connection each, released together by a "
        f"barrier) against `flightlake serve` (workers=1) and `serve --workers N`, taking "
        f"turns per level. Large: each client repeats `{LARGE_SQL}` for {large_s:g} s; "
        "aggregate throughput = all bytes received / wall time from the first start to the "
        f"last finish. Small: each client repeats `{SMALL_SQL}` for {small_s:g} s; p50 over "
        f"every request of every client. Median of {runs} runs per level. CPU = the server's "
        "(serve and all its processes, from /proc) and the clients' own (getrusage) CPU "
        "seconds per large query; cores busy = their CPU seconds / wall seconds of the large "
        "phases, (others) = the rest of the machine's busy time then (/proc/stat): other "
        f"processes on this shared machine. This machine has {cores} cores, shared by the "
        "clients and the server (and "
        "SeaweedFS for s3); on C cores, 8 clients can reach at most C / (cores busy with one "
        f"client) times one client's throughput, unless a query costs less CPU under load. "
        f"Target (issue 14): 8 clients ≥ {CORES_TARGET}x one client.",
    )
    for kind, by_workers in results.items():
        limit = limits[kind]
        levels = [r.clients for r in next(iter(by_workers.values()))]
        headers = ["clients"]
        for w in by_workers:
            headers += [
                f"w={w} MB/s",
                f"w={w} vs 1 client",
                f"w={w} CPU ms/query (server+clients)",
                f"w={w} cores busy (others)",
                f"w={w} small p50 ms",
            ]
        rows = []
        for i, n in enumerate(levels):
            row: list[object] = [n]
            for rs in by_workers.values():
                r = rs[i]
                row += [
                    f"{r.bytes_per_s / 1e6:.0f}",
                    fmt_ratio(r.bytes_per_s / rs[0].bytes_per_s),
                    f"{r.server_cpu_per_query * 1000:.0f}+{r.client_cpu_per_query * 1000:.0f}",
                    f"{r.cores_busy:.2f} ({r.others_busy:.2f})",
                    fmt_ms(r.p50),
                ]
            rows.append(row)
        sec.blocks.append(
            f"**{kind}** (in-process DuckDB, one stream: "
            f"{fmt_mbs(limit.nbytes, limit.limit)} for the large query; w = workers)"
        )
        sec.blocks.append(md_table(headers, rows))
        notes = []
        for w, rs in by_workers.items():
            ratio = scaling(rs)
            bound = cores / rs[0].cores_busy
            report.check(
                "4. cores",
                f"aggregate SELECT * throughput, {rs[-1].clients} vs 1 client, workers={w}, {kind}",
                f"{fmt_ratio(ratio)} (CPU bound {bound:.2f}x; other processes "
                f"{rs[0].others_busy:.2f} / {rs[-1].others_busy:.2f} cores)",
                f"≥ {CORES_TARGET}x",
                round(ratio, 2) >= CORES_TARGET,
            )
            one = rs[0]
            notes.append(
                f"workers={w}: one client keeps {one.cores_busy:.2f} cores busy "
                f"({(one.server_cpu_per_query + one.client_cpu_per_query) * 1000:.0f} ms CPU "
                f"per {fmt_ms(one.large_p50)} ms query), "
                f"so {cores} cores allow at most {bound:.2f}x; measured {ratio:.2f}x at "
                f"{rs[-1].cores_busy:.2f} cores busy, other processes {rs[-1].others_busy:.2f}"
                + (
                    f" (other processes took {one.others_busy:.2f} cores during the one-client "
                    "phase: that phase, and so this ratio and bound, are disturbed)"
                    if one.others_busy > DISTURBED_CORES
                    else ""
                )
            )
        sec.blocks.append("Bound from CPU: " + "; ".join(notes) + ".")
