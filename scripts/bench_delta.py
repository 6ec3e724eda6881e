"""Delta Lake table costs, in process (the lake core, no front end), local and S3:

1. commit latency p50 / p99 of small appends while a dataset grows to 1, 100 and 1,000
   commits, against a bare conditional PUT of a small object (the floor of any commit);
2. a point query (`SELECT sum(v) FROM t WHERE id = 3`) after 300 appends of 10 rows, before
   and after compaction, against the same 3,000 rows ingested at once;
3. what the cross-server freshness check adds to a `count(*)`: freshness_seconds=0 (a probe
   of the store on every query) and the default 1 s, against no check at all.

    python -m scripts.bench_delta [--storage local,s3] [--commits 1000]

This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from flightlake.config import Settings
from flightlake.lake import Lake
from flightlake.secrets import Credentials


def settings_for(url: str, s3: Any, **changes: Any) -> Settings:
    values: dict[str, Any] = {"storage": url, "compact_files": 0}
    if s3 is not None:
        values |= {
            "s3_endpoint": s3.endpoint,
            "s3_region": s3.region,
            "credentials": Credentials(s3.access_key, s3.secret_key),
        }
    return Settings(**(values | changes))


def small(i: int, rows: int = 10) -> pa.Table:
    return pa.table(
        {"id": pa.array(range(i * rows, (i + 1) * rows), pa.int64()), "v": [1.0] * rows}
    )


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Callable[[], object], runs: int) -> float:
    """Median seconds of ``runs`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def commit_latency(url: str, s3: Any, commits: int) -> dict[str, float]:
    lake = Lake(settings_for(url, s3))
    try:
        t = small(0)
        lat: list[float] = []
        for i in range(commits):
            t = small(i)
            start = time.perf_counter()
            lake.ingest_arrow("commits", t.schema, t.to_batches())
            lat.append(time.perf_counter() - start)
        puts = []
        for i in range(50):
            start = time.perf_counter()
            lake.storage.put_if_absent(f"bench-put/{i}.json", b"{}")
            puts.append(time.perf_counter() - start)
        lake.storage.delete([f"bench-put/{i}.json" for i in range(50)])
    finally:
        lake.close()
    out = {"put_p50": statistics.median(puts)}
    for at in (1, 100, 1000):
        if at > commits:
            continue
        window = lat[max(0, at - 10) : at + 10] if at > 1 else lat[:10]
        out[f"p50@{at}"] = statistics.median(window)
        out[f"p99@{at}"] = pct(window, 0.99)
    return out


def point_query(url: str, s3: Any, appends: int, runs: int) -> dict[str, float]:
    lake = Lake(settings_for(url, s3))
    sql = "SELECT sum(v) FROM t WHERE id = 3"
    try:
        for i in range(appends):
            t = small(i)
            lake.ingest_arrow("t", t.schema, t.to_batches())
        files_before = len(lake.dataset("t").objects)
        before = timed(lambda: lake.query(sql).read_all(), runs)
        lake.compact("t")
        files_after = len(lake.dataset("t").objects)
        after = timed(lambda: lake.query(sql).read_all(), runs)
        whole = small(0, appends * 10)
        lake.ingest_arrow("once", whole.schema, whole.to_batches())
        once = timed(lambda: lake.query(sql.replace(" t ", " once ")).read_all(), runs)
    finally:
        lake.close()
    return {
        "before": before,
        "after": after,
        "once": once,
        "files_before": files_before,
        "files_after": files_after,
    }


def freshness_cost(url: str, s3: Any, runs: int) -> dict[str, float]:
    out = {}
    for label, seconds in (("none", 1e9), ("default", 1.0), ("every", 0.0)):
        lake = Lake(settings_for(url, s3, freshness_seconds=seconds))
        try:
            if lake.catalog.find("f") is None:
                t = small(0, 1000)
                lake.ingest_arrow("f", t.schema, t.to_batches())
            out[label] = timed(lambda lk=lake: lk.query("SELECT count(*) FROM f").read_all(), runs)
        finally:
            lake.close()
    return out


def run(url: str, s3: Any, commits: int, runs: int, appends: int = 300) -> dict[str, Any]:
    """All three measurements on one storage root (each on a fresh dataset)."""
    return {
        "commit": commit_latency(url, s3, commits),
        "point": point_query(url, s3, appends, runs),
        "freshness": freshness_cost(url, s3, runs),
    }


def report_lines(kind: str, result: dict[str, Any]) -> list[str]:
    c, p, f = result["commit"], result["point"], result["freshness"]
    lines = [f"## {kind}", "", "| commits so far | p50 | p99 | p50 / bare conditional PUT |"]
    lines.append("| --- | --- | --- | --- |")
    for at in (1, 100, 1000):
        if f"p50@{at}" in c:
            lines.append(
                f"| {at} | {c[f'p50@{at}'] * 1000:.1f} ms | {c[f'p99@{at}'] * 1000:.1f} ms | "
                f"{c[f'p50@{at}'] / c['put_p50']:.1f}x |"
            )
    lines += [
        "",
        f"bare conditional PUT p50: {c['put_p50'] * 1000:.1f} ms",
        "",
        "| point query | median | vs ingested at once |",
        "| --- | --- | --- |",
        f"| {p['files_before']} files (one per append) | {p['before'] * 1000:.1f} ms | "
        f"{p['before'] / p['once']:.1f}x |",
        f"| after compaction ({p['files_after']} files) | {p['after'] * 1000:.1f} ms | "
        f"{p['after'] / p['once']:.1f}x |",
        f"| ingested at once | {p['once'] * 1000:.1f} ms | 1.0x |",
        "",
        "| count(*) freshness check | median | added |",
        "| --- | --- | --- |",
        f"| none | {f['none'] * 1000:.2f} ms | |",
        f"| default (1 s) | {f['default'] * 1000:.2f} ms | "
        f"{(f['default'] - f['none']) * 1000:+.2f} ms |",
        f"| every query (0 s) | {f['every'] * 1000:.2f} ms | "
        f"{(f['every'] - f['none']) * 1000:+.2f} ms |",
        "",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_delta", description=__doc__)
    parser.add_argument("--storage", default="local,s3")
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path(".bench/bench_delta.md"))
    args = parser.parse_args(argv)
    import tempfile

    from tests.s3server import SeaweedS3, find_weed

    lines = ["# Delta Lake table costs (scripts/bench_delta.py)", ""]
    kinds = args.storage.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        if "local" in kinds:
            result = run(f"{tmp}/lake", None, args.commits, args.runs, args.appends)
            lines += report_lines("local", result)
        if "s3" in kinds:
            weed = find_weed()
            assert weed is not None, "SeaweedFS `weed` not found (make dev)"
            with SeaweedS3(weed) as s3:
                bucket = s3.create_bucket()
                result = run(f"s3://{bucket}/lake", s3, args.commits, args.runs, args.appends)
                lines += report_lines("s3", result)
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
