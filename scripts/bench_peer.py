"""flightlake against the peer users compare it with: ROAPI, same table, same clients, one run.

    python -m scripts.bench_peer [--rows 500000] [--runs 7] [--roapi PATH]

ROAPI (PyPI ``roapi``, a Rust binary over DataFusion) is installed into a venv of its own
under ``.bench/roapi-venv`` the first time (``pip install roapi==0.12.7``), so it never touches
flightlake's environment. A `flightlake serve` subprocess on local disk ingests the
deterministic workers CSV (``scripts.gen_workers``); ROAPI then serves the very same table:
the dataset's Delta table (``-t workers=<location>,format=delta``, from the manifest's
``location``), or, for a lake without one, its Parquet objects.

Both servers are queried through the same stock ADBC Flight SQL driver (one open connection
each, a new cursor per query, ``execute`` + ``fetch_arrow_table``) and over HTTP JSON
(flightlake ``POST /v1/sql``, ROAPI ``POST /api/sql``), interleaved, after a warm-up of
every query on both servers and flightlake's hot-dataset cache holding the table (ROAPI
loads its table before serving), then one unrecorded warm-up per query. Every timed run
gets SQL text of its own: a literal that changes the text and not the work
(``WHERE 'run-17' = 'run-17'``), so neither server can answer from a cache keyed on SQL
text. The ratio is flightlake's median over ROAPI's median (below 1.0 is faster).

A measurement, not a test: nothing is asserted except that both servers return the same number
of rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from scripts.bench_env import BENCH_DIR, ROOT, Server, Store, cli_ingest, log, workers_csv
from tests.helpers import free_port, wait_until
from tests.subprocess_server import stop

ROAPI_VERSION = "0.12.7"
TABLE = "workers"

#: (label, SQL with {run} where the per-run literal goes, kind); kind "adbc" or "http".
QUERIES: tuple[tuple[str, str, str], ...] = (
    ("`SELECT count(*)`", "SELECT count(*) FROM workers WHERE '{run}' = '{run}'", "adbc"),
    (
        "IL group-by",
        "SELECT role, count(*) AS n FROM workers WHERE state = 'IL' AND '{run}' = '{run}' "
        "GROUP BY role ORDER BY role",
        "adbc",
    ),
    (
        "avg(hourly_rate) by state",
        "SELECT state, avg(hourly_rate) AS avg_rate FROM workers WHERE '{run}' = '{run}' "
        "GROUP BY state ORDER BY state",
        "adbc",
    ),
    (
        "`SELECT *` where IL",
        "SELECT * FROM workers WHERE state = 'IL' AND '{run}' = '{run}'",
        "adbc",
    ),
    ("`SELECT *` (all rows)", "SELECT * FROM workers WHERE '{run}' = '{run}'", "adbc"),
    ("HTTP JSON, all rows", "SELECT * FROM workers WHERE '{run}' = '{run}'", "http"),
    (
        "HTTP JSON, IL group-by",
        "SELECT role, count(*) AS n FROM workers WHERE state = 'IL' AND '{run}' = '{run}' "
        "GROUP BY role ORDER BY role",
        "http",
    ),
)


@dataclass
class PeerRow:
    """One line of the peer table: medians in seconds and flightlake / ROAPI."""

    label: str
    flightlake_s: float
    roapi_s: float
    rows: int

    @property
    def ratio(self) -> float:
        return self.flightlake_s / self.roapi_s


def roapi_binary(explicit: str | None = None) -> Path:
    """The ``roapi`` executable: ``explicit``, else a venv of its own under .bench/."""
    if explicit:
        return Path(explicit)
    venv = BENCH_DIR / "roapi-venv"
    binary = venv / "bin" / "roapi"
    if not binary.exists():
        log(f"installing roapi=={ROAPI_VERSION} into {venv.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"roapi=={ROAPI_VERSION}"],
            check=True,
        )
    return binary


class Roapi:
    """A ROAPI process serving one table over Flight SQL and HTTP on free loopback ports."""

    def __init__(self, binary: Path, table_uri: str, workdir: Path) -> None:
        self.flight_port = free_port()
        self.http_port = free_port()
        self.postgres_port = free_port()  # it binds one too (5432 by default: maybe taken)
        self.log_path = workdir / "roapi.log"
        self.cmd = [
            str(binary),
            "-t",
            f"{TABLE}={table_uri}",
            "--addr-flight-sql",
            f"127.0.0.1:{self.flight_port}",
            "-a",
            f"127.0.0.1:{self.http_port}",
            "-p",
            f"127.0.0.1:{self.postgres_port}",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def __enter__(self) -> Roapi:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                return True  # exited: said below, at once
            body = _post(f"{self.http_url}/api/sql", b"SELECT 1", "text/plain")
            return bool(body)

        try:
            wait_until(ready, timeout=120, interval=0.1, what="roapi")
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-8:]
                raise RuntimeError(f"roapi exited ({proc.returncode}): " + " | ".join(tail))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop(proc)


def _post(url: str, body: bytes, content_type: str) -> bytes:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        data: bytes = response.read()
        return data


def _table_uri(server: Server, store: Store) -> str:
    """ROAPI's -t value for the dataset: its Delta location, or its Parquet folder."""
    with server.client() as client:
        import pyarrow.flight as flight

        results = list(client.do_action(flight.Action("list", b"")))
    for manifest in json.loads(results[0].body.to_pybytes()):
        if manifest["name"] == TABLE:
            if manifest.get("location"):
                return f"{manifest['location']},format=delta"
            first = manifest["objects"][0]
            return f"{Path(store.object_url(first)).parent},format=parquet"
    raise KeyError(TABLE)


def _adbc_reader(location: str) -> tuple[Callable[[str], int], Callable[[], None]]:
    import adbc_driver_flightsql.dbapi as dbapi

    conn = dbapi.connect(location, autocommit=True)

    def read(sql: str) -> int:
        with conn.cursor() as cur:
            cur.execute(sql)
            table: pa.Table = cur.fetch_arrow_table()
            return table.num_rows

    return read, conn.close


def _http_reader(url: str, flightlake: bool) -> Callable[[str], int]:
    def read(sql: str) -> int:
        if flightlake:
            body = _post(f"{url}/v1/sql", json.dumps({"sql": sql}).encode(), "application/json")
        else:
            body = _post(f"{url}/api/sql", sql.encode(), "text/plain")
        return len(json.loads(body))

    return read


def measure(rows: int, runs: int, roapi: str | None = None) -> list[PeerRow]:
    """Serve the same ``rows``-row table from both servers and time every query of QUERIES."""
    binary = roapi_binary(roapi)
    csv = workers_csv(rows)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        work = Path(tmp)
        store = Store("local", str(work / "lake"))
        Path(store.root).mkdir()
        with Server(store, work / "serve", "peer") as server:
            cli_ingest(server, csv, TABLE)
            uri = _table_uri(server, store)
            log(f"ROAPI serves {uri}")
            with Roapi(binary, uri, work) as peer:
                fl_adbc, fl_close = _adbc_reader(server.location)
                ro_adbc, ro_close = _adbc_reader(peer.location)
                readers = {
                    ("flightlake", "adbc"): fl_adbc,
                    ("roapi", "adbc"): ro_adbc,
                    ("flightlake", "http"): _http_reader(server.http_url, True),
                    ("roapi", "http"): _http_reader(peer.http_url, False),
                }
                try:
                    _warm_up(readers, server.http_url)
                    rows = [_measure_query(q, readers, runs) for q in QUERIES]
                finally:
                    fl_close()
                    ro_close()
                CACHE_HITS.update(_cache_counts(server.http_url))
                return rows


def _warm_up(readers: dict[tuple[str, str], Callable[[str], int]], http_url: str) -> None:
    """Both servers in their steady state before anything is timed: every query once on
    each, then up to 60 s for flightlake's hot-dataset cache to hold the table (ROAPI loads
    its table before it serves; flightlake copies a dataset once it has been queried twice,
    in the background, which would otherwise land inside the first timed runs)."""
    for _, template, kind in QUERIES:
        for who in ("flightlake", "roapi"):
            readers[(who, kind)](template.format(run=f"warm-{who}-{os.getpid()}"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _cache_bytes(http_url) <= 0:
        time.sleep(0.2)


def _cache_bytes(http_url: str) -> float:
    return sum(_metric(http_url, "flightlake_cache_bytes").values())


#: flightlake's hot-dataset cache over the run (its /metrics): row-plan queries answered
#: from the cached Arrow copy ("hit") or not ("miss"); reported apart from the ratios
CACHE_HITS: dict[str, int] = {}


def _cache_counts(http_url: str) -> dict[str, int]:
    counts = {"hit": 0, "miss": 0}
    for labels, value in _metric(http_url, "flightlake_cache_row_queries_total").items():
        counts[labels.split('outcome="', 1)[1].split('"', 1)[0]] = int(value)
    return counts


def _metric(http_url: str, name: str) -> dict[str, float]:
    """The samples of metric ``name`` in flightlake's /metrics: ``{labels text: value}``
    (labels text "" for an unlabelled metric)."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name or sample.startswith(name + "{"):
            samples[sample[len(name) :]] = float(value)
    return samples


def _measure_query(
    query: tuple[str, str, str],
    readers: dict[tuple[str, str], Callable[[str], int]],
    runs: int,
) -> PeerRow:
    label, template, kind = query
    times: dict[str, list[float]] = {"flightlake": [], "roapi": []}
    counts: dict[str, int] = {}
    for i in range(runs + 1):  # round 0 is the unrecorded warm-up
        order = ("flightlake", "roapi") if i % 2 else ("roapi", "flightlake")
        for who in order:
            sql = template.format(run=f"{who}-{os.getpid()}-{i}")
            start = time.perf_counter()
            got = readers[(who, kind)](sql)
            seconds = time.perf_counter() - start
            counts[who] = got
            if i:
                times[who].append(seconds)
    if counts["flightlake"] != counts["roapi"]:
        raise RuntimeError(
            f"{label}: flightlake returned {counts['flightlake']} rows, ROAPI {counts['roapi']}"
        )
    row = PeerRow(
        label,
        statistics.median(times["flightlake"]),
        statistics.median(times["roapi"]),
        counts["flightlake"],
    )
    log(
        f"{label:<28} flightlake {row.flightlake_s * 1000:8.1f} ms   "
        f"ROAPI {row.roapi_s * 1000:8.1f} ms   ratio {row.ratio:.2f}x"
    )
    return row


def markdown(rows: list[PeerRow]) -> str:
    lines = [
        "| query | flightlake | ROAPI | ratio | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        verdict = "met" if round(r.ratio, 2) <= 1.0 else "missed"
        lines.append(
            f"| {r.label} ({r.rows:,} rows) | {r.flightlake_s * 1000:.1f} ms | "
            f"{r.roapi_s * 1000:.1f} ms | {r.ratio:.2f}x | {verdict} |"
        )
    if CACHE_HITS:
        lines.append("")
        lines.append(
            f"flightlake's hot-dataset cache in this run (warm-ups included): "
            f"{CACHE_HITS.get('hit', 0)} plain `SELECT ... FROM workers [WHERE ...]` queries "
            f"gathered their rows from the cached Arrow copy, {CACHE_HITS.get('miss', 0)} read "
            "Parquet (dataset not yet cached); every other query reads Parquet. No cache keyed "
            "on SQL text exists: each timed run has its own SQL text."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--roapi", help="a roapi binary to use instead of .bench/roapi-venv")
    args = parser.parse_args(argv)
    rows = measure(args.rows, args.runs, args.roapi)
    print(markdown(rows))


if __name__ == "__main__":
    main()
