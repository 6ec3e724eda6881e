"""Benchmark plumbing: machine facts, data, SeaweedFS, `flightlake serve` subprocesses, RSS.

Used by ``scripts.bench``; nothing here measures anything by itself except `PeakRss`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.fs as pafs

from scripts.gen_workers import write_workers_csv
from tests.helpers import free_port, wait_until
from tests.s3server import SeaweedS3, _parent_death_hook
from tests.subprocess_server import stop

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
MB = 1_000_000
MiB = 1 << 20


def log(message: str) -> None:
    """Progress on stderr, with a wall-clock stamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics ----------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def timed(func: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(seconds, result) of one call ``func(*args)``."""
    start = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - start, result


# -- machine -------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, str]:
    import duckdb

    load = os.getloadavg()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
        "flightlake commit": git_commit(),
        "load average at start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def git_commit() -> str:
    """HEAD of the checkout, with "+ uncommitted changes" when the tree is dirty."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty.strip() else head


# -- data ----------------------------------------------------------------------------------
def workers_csv(rows: int, seed: int = 42, regenerate: bool = False) -> Path:
    """`.bench/workers_<rows>.csv`, generated once (deterministic: same rows+seed, same bytes).

    A stamp file next to it records rows, seed and size; a mismatch regenerates it.
    """
    BENCH_DIR.mkdir(exist_ok=True)
    path = BENCH_DIR / f"workers_{rows}.csv"
    stamp = path.with_suffix(".stamp")
    expected = f"rows={rows} seed={seed}"
    if (
        not regenerate
        and path.exists()
        and stamp.exists()
        and stamp.read_text().strip() == f"{expected} size={path.stat().st_size}"
    ):
        return path
    log(f"generating {rows:,} workers rows -> {path.relative_to(ROOT)}")
    write_workers_csv(path, rows, seed)
    stamp.write_text(f"{expected} size={path.stat().st_size}\n")
    return path


# -- storage -------------------------------------------------------------------------------
@dataclass
class Store:
    """One place Parquet lands: a local folder or a prefix in the SeaweedFS bucket."""

    kind: str  # "local" | "s3"
    root: str  # local folder path, or "bucket/prefix" for S3
    s3: SeaweedS3 | None = None
    fs: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem)

    def child(self, name: str) -> Store:
        """A fresh sub-root for one run (a new prefix; for local a new folder)."""
        root = f"{self.root.rstrip('/')}/{name}"
        if self.kind == "local":
            Path(root).mkdir(parents=True, exist_ok=True)
        return Store(self.kind, root, self.s3, self.fs)

    @property
    def url(self) -> str:
        """FLIGHTLAKE_STORAGE for a server on this root."""
        return f"s3://{self.root}" if self.kind == "s3" else self.root

    def object_url(self, key: str) -> str:
        """Where DuckDB reads the object ``key`` (relative to this root)."""
        return f"s3://{self.root}/{key}" if self.kind == "s3" else f"{self.root}/{key}"

    def fs_path(self, key: str) -> str:
        """The pyarrow.fs path of ``key`` (relative to this root)."""
        return f"{self.root}/{key}"

    def server_env(self) -> dict[str, str]:
        env = {"FLIGHTLAKE_STORAGE": self.url}
        if self.s3 is not None:
            env.update(
                {
                    "FLIGHTLAKE_S3_ENDPOINT": self.s3.endpoint,
                    "FLIGHTLAKE_S3_REGION": self.s3.region,
                    "AWS_ACCESS_KEY_ID": self.s3.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                }
            )
        return env


def s3_filesystem(s3: SeaweedS3) -> pafs.S3FileSystem:
    """The limit's S3 client: pyarrow's own S3FileSystem on the same server."""
    return pafs.S3FileSystem(
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
        endpoint_override=s3.endpoint.split("://", 1)[1],
        scheme="http",
        force_virtual_addressing=False,
    )


@contextlib.contextmanager
def stores(workdir: Path, with_s3: bool = True) -> Iterator[dict[str, Store]]:
    """A local folder and (unless told not to) a bucket on a fresh SeaweedFS server."""
    local_root = workdir / "local"
    local_root.mkdir(parents=True, exist_ok=True)
    found = {"local": Store("local", str(local_root))}
    if not with_s3:
        yield found
        return
    with SeaweedS3() as s3:
        bucket = s3.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
        log(f"SeaweedFS S3 at {s3.endpoint}, bucket {bucket}")
        found["s3"] = Store("s3", bucket, s3, s3_filesystem(s3))
        yield found


# -- flightlake processes ------------------------------------------------------------------
def flightlake_command() -> list[str]:
    """The `flightlake` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "flightlake"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flightlake"]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """os.environ without FLIGHTLAKE_* / AWS_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTLAKE_", "AWS_"))}
    env.update(extra)
    return env


class Server:
    """A `flightlake serve` subprocess on free ports, run from a private working directory
    (so no conf/flightlake.toml or conf/secrets.toml of the checkout applies)."""

    def __init__(self, store: Store, workdir: Path, label: str, **settings: str) -> None:
        self.store = store
        self.label = label
        self.workdir = workdir
        self.flight_port = free_port()
        self.http_port = free_port()
        extra = {f"FLIGHTLAKE_{k.upper()}": str(v) for k, v in settings.items()}
        self.env = clean_env({**store.server_env(), **extra})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"serve-{label}.log"

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *flightlake_command(),
            "serve",
            "--flight-port",
            str(self.flight_port),
            "--http-port",
            str(self.http_port),
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_hook(),
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"flightlake serve exited; see {self.log_path}")
            with flight.FlightClient(self.location) as client:
                list(client.do_action(flight.Action("health", b"")))
            return True

        try:
            wait_until(ready, timeout=60, interval=0.05, what=f"server {self.label}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop(proc)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request_ms(self, method: str, dataset: str) -> float | None:
        """The server's own duration of its last ``method`` on ``dataset``, from the
        structured request log (one line per request: ``... dataset=NAME ... ms=N``)."""
        pattern = re.compile(rf"\b{method}\b.*\bdataset={re.escape(dataset)}\s.*\bms=([\d.]+)")
        found = None
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                match = pattern.search(line)
                if match:
                    found = float(match.group(1))
        return found

    def client(self) -> flight.FlightClient:
        return flight.FlightClient(self.location)

    def objects(self, dataset: str) -> list[str]:
        """The Parquet keys of ``dataset`` (from the server's manifest)."""
        import json

        with self.client() as client:
            results = list(client.do_action(flight.Action("list", b"")))
        for manifest in json.loads(results[0].body.to_pybytes()):
            if manifest["name"] == dataset:
                return list(manifest["objects"])
        raise KeyError(dataset)


def cli_ingest(server: Server, csv: Path, name: str) -> float:
    """Seconds for `flightlake ingest CSV --name NAME --server ...`, as a user runs it."""
    cmd = [
        *flightlake_command(),
        "ingest",
        str(csv.resolve()),
        "--name",
        name,
        "--server",
        server.location,
    ]
    start = time.perf_counter()
    result = subprocess.run(
        cmd, cwd=server.workdir, env=clean_env({}), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"flightlake ingest failed: {result.stderr.strip()}")
    return seconds


# -- memory --------------------------------------------------------------------------------
class PeakRss:
    """Samples the RSS of a process and its children every ``interval`` seconds.

    with PeakRss(pid) as mem:
        ...
    mem.peak  # bytes
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        total = 0
        with contextlib.suppress(psutil.Error):
            total += self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
