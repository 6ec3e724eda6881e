"""Object-store access: a local folder or S3 / MinIO, both through ``pyarrow.fs``.

This is the only module that builds a ``pyarrow.fs.S3FileSystem`` or a boto3 client; the
boto3 client exists for the one thing pyarrow.fs cannot do: conditional writes
(``IfNoneMatch="*"``), which make catalog commits safe between competing writers.
Foreign errors (``OSError``, Arrow and botocore errors) become ``StorageError`` here.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from flightlake.admission import check_free_disk
from flightlake.config import Settings
from flightlake.errors import InvalidInput, NotFound, StorageError

MAX_KEY_BYTES = 1024
_Keys = list[str]  # (Storage has a method named list)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise InvalidInput naming the problem."""
    if not key:
        raise InvalidInput("storage key is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"storage key is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise InvalidInput("storage key contains a NUL byte")
    if any(c in key for c in "\r\n\t"):
        raise InvalidInput("storage key contains CR, LF or TAB")
    if key.startswith("/"):
        raise InvalidInput("storage key starts with '/'")
    if any(part == ".." for part in key.split("/")):
        raise InvalidInput("storage key has a '..' path part")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key relative to the storage root, size and modification time."""

    key: str
    size: int
    mtime: float


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn OSError / Arrow / botocore errors raised inside the block into StorageError."""
    try:
        yield
    except (NotFound, InvalidInput, StorageError):
        raise
    except FileNotFoundError as exc:
        raise NotFound(f"{what}: not found") from exc
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"object store error during {what}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "boto3", "urllib3")):
            raise StorageError(f"object store error during {what}: {exc}") from exc
        raise


#: After a request failed because the store did not answer, clean-up deletes are skipped
#: (left to the gc sweep) for this long unless a request succeeds meanwhile: a failed call
#: then costs one request's time budget, not one per clean-up step.
UNREACHABLE_HOLD_SECONDS = 30.0
#: How long a health probe's answer is reused before the store is probed again.
PROBE_CACHE_SECONDS = 2.0
_UNREACHABLE = re.compile(
    r"timeout|timed out|network_connection|connection (refused|reset|aborted|closed)"
    r"|could not connect|couldn't connect|connect to endpoint|broken pipe"
    r"|error sending request",
    re.IGNORECASE,
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store did not answer (timeout, refused or dropped connection),
    as opposed to answering with an error. From the texts of the AWS SDK (curl codes 7 and
    28, NETWORK_CONNECTION), botocore (ReadTimeoutError, EndpointConnectionError) and
    DuckDB httpfs ("Timeout was reached") and delta-rs ("error sending request", "operation
    timed out"), looked for along the chain of causes."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if _UNREACHABLE.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Storage:
    """Keys under one root (a local folder or ``s3://bucket/prefix``).

    Every request is bounded: S3 requests by ``s3_connect_timeout_seconds``,
    ``s3_request_timeout_seconds`` and ``s3_retries`` (pyarrow and boto3 alike), so one
    request on a store that accepts connections and never answers fails (StorageError,
    an Unavailable) after about ``(1 + s3_retries) * s3_request_timeout_seconds``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.is_s3 = settings.is_s3
        self._state_lock = threading.Lock()
        self._failed_at = 0.0  # monotonic time of the last "store did not answer"; 0: none
        self.probe = StoreProbe(self.check, settings.health_probe_seconds)
        if self.is_s3:
            parsed = urlparse(settings.storage)
            self.bucket = parsed.netloc
            if not self.bucket:
                raise InvalidInput(f"storage URL {settings.storage!r} has no bucket")
            self.prefix = parsed.path.strip("/")
            self.fs: pafs.FileSystem = _s3_filesystem(settings)
            self._base = "/".join(p for p in (self.bucket, self.prefix) if p)
            self._boto: Any = None
        else:
            self.bucket = ""
            self.prefix = ""
            root = Path(settings.storage).expanduser().resolve()
            with self._io("creating the storage folder"):
                root.mkdir(parents=True, exist_ok=True)
            self.fs = pafs.LocalFileSystem()
            self._base = str(root)

    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """``translate_errors``, remembering whether the store answered."""
        try:
            with translate_errors(what):
                yield
        except StorageError as exc:
            self.note_failure(exc)
            raise
        if self._failed_at:
            with self._state_lock:
                self._failed_at = 0.0

    def note_failure(self, exc: BaseException) -> None:
        """Remember a failed request made outside this class (e.g. a Parquet stream's part
        upload) when it says the store did not answer."""
        if is_unreachable(exc):
            with self._state_lock:
                self._failed_at = time.monotonic()

    def failed_since(self, since: float) -> bool:
        """True when a request failed because the store did not answer at or after
        ``since`` (a ``time.monotonic()`` value) and none succeeded after it."""
        return self._failed_at >= since

    @property
    def unreachable(self) -> bool:
        """True when a request failed because the store did not answer, less than
        UNREACHABLE_HOLD_SECONDS ago, and none succeeded since."""
        failed = self._failed_at
        return bool(failed) and time.monotonic() - failed < UNREACHABLE_HOLD_SECONDS

    # -- naming --------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The pyarrow.fs path of ``key``."""
        return f"{self._base}/{validate_key(key)}"

    def url(self, key: str) -> str:
        """The URL DuckDB reads ``key`` from (an absolute local path or an s3:// URL)."""
        return f"s3://{self.path(key)}" if self.is_s3 else self.path(key)

    @property
    def root_url(self) -> str:
        return f"s3://{self._base}" if self.is_s3 else self._base

    def describe(self) -> str:
        if self.is_s3:
            endpoint = self.settings.s3_endpoint or "AWS"
            return f"s3://{self._base} at {endpoint}"
        return self._base

    # -- reading and writing -------------------------------------------------------------
    def check_free_space(self, about_to_write: int = 0) -> None:
        """Local storage: raise ResourceExhausted (naming the storage disk, never its path)
        if writing ``about_to_write`` more bytes would leave less than
        ``min_free_storage_bytes`` free. S3 has no such floor: a no-op."""
        floor = self.settings.min_free_storage_bytes
        if not self.is_s3 and floor > 0:
            check_free_disk(
                self._base,
                floor + about_to_write,
                "storage disk",
                "min_free_storage_bytes",
                floor=floor,
            )

    def open_output(self, key: str) -> pa.NativeFile:
        with self._io(f"opening {key} for writing"):
            if not self.is_s3:
                Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
            return self.fs.open_output_stream(self.path(key))

    @property
    def request_budget(self) -> float:
        """Seconds one S3 request takes at most to fail on a store that does not answer:
        connect, then ``1 + s3_retries`` attempts of ``s3_request_timeout_seconds``."""
        st = self.settings
        return st.s3_connect_timeout_seconds + (1 + st.s3_retries) * st.s3_request_timeout_seconds

    def object_store_bounds(self) -> dict[str, str]:
        """The same bounds as delta-rs (Rust ``object_store``) storage options.

        Measured on a SeaweedFS frozen with SIGSTOP: reading a table's version took 181 s
        with delta-rs's defaults (10 retries within 3 minutes) and 8 s with these. There
        ``timeout`` bounds a whole request (pyarrow's bounds only a stall), which only
        matters for the small log and checkpoint objects delta-rs reads and writes here.
        """
        st = self.settings
        return {
            "timeout": f"{st.s3_request_timeout_seconds:g}s",
            "connect_timeout": f"{st.s3_connect_timeout_seconds:g}s",
            "max_retries": str(max(0, st.s3_retries)),
            "retry_timeout": f"{self.request_budget:g}s",
        }

    def close_output(self, stream: pa.NativeFile, key: str) -> None:
        """Close a stream of ``open_output`` (S3: upload what is buffered and wait for the
        background part uploads), giving up only when the store does not answer.

        pyarrow waits for every queued part, each failing only after ``request_budget`` on
        a frozen store, so a close could take minutes; on a slow but live store it may
        rightly take long too. So the close runs in a daemon thread; every
        ``s3_request_timeout_seconds`` it has not finished, the store probe (at most
        ``health_probe_seconds``) decides: a store that answers is given more time, one
        that does not (or was just found unreachable) ends the wait with StorageError. The
        caller commits nothing, and whatever the detached close still writes is
        unreferenced and swept by gc. On a frozen store this fails in about 9 s.
        """
        if not self.is_s3:
            with self._io(f"closing {key}"):
                stream.close()
            return
        done = threading.Event()
        failed: list[BaseException] = []

        def close() -> None:
            try:
                stream.close()
            except BaseException as exc:
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=close, name="flightlake-close", daemon=True).start()
        step = max(0.1, self.settings.s3_request_timeout_seconds)
        while not done.wait(0.0 if self.unreachable else step):
            probe = self.probe.result()
            if done.is_set():
                break
            if not probe.ok:
                with self._state_lock:
                    self._failed_at = time.monotonic()
                raise StorageError(
                    f"object store error during closing {key}: the upload did not finish "
                    f"and the store does not answer ({probe.error})"
                )
        if failed:
            with self._io(f"closing {key}"):
                raise failed[0]

    def open_input(self, key: str) -> pa.NativeFile:
        """A seekable reader of ``key`` (e.g. for pyarrow.parquet)."""
        with self._io(f"opening {key}"):
            return self.fs.open_input_file(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        with self._io(f"reading {key}"), self.fs.open_input_stream(self.path(key)) as f:
            return bytes(f.read())

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if no object is there; False if one already is."""
        with self._io(f"writing {key}"):
            if self.is_s3:
                return self._s3_put_if_absent(key, data)
            return self._local_put_if_absent(key, data)

    def _local_put_if_absent(self, key: str, data: bytes) -> bool:
        final = Path(self.path(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, final)  # atomic, fails if the name exists
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def _s3_put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.boto.put_object(
                Bucket=self.bucket, Key=self._s3_key(key), Body=data, IfNoneMatch="*"
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise
        return True

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects; missing ones are ignored. S3 deletes in batches of 1000."""
        keys = list(keys)
        if keys and self.unreachable:
            raise StorageError(
                f"{len(keys)} objects not deleted: the object store did not answer a moment "
                "ago (the gc sweep removes them once it does)"
            )
        if self.is_s3:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": self._s3_key(k)} for k in keys[i : i + 1000]]
                with self._io(f"deleting {len(batch)} objects"):
                    answer = self.boto.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                errors = answer.get("Errors", [])
                if errors:
                    raise StorageError(f"could not delete {len(errors)} objects: {errors[0]}")
            return
        for key in keys:
            with self._io(f"deleting {key}"), contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.path(key))

    def size(self, key: str) -> int:
        with self._io(f"reading the size of {key}"):
            info = self.fs.get_file_info(self.path(key))
            if info.type == pafs.FileType.NotFound:
                raise NotFound(f"object {key} not found")
            return int(info.size or 0)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (a folder-like key), recursively."""
        base = f"{self._base}/{prefix.strip('/')}"
        with self._io(f"listing {prefix}"):
            infos = self.fs.get_file_info(
                pafs.FileSelector(base, recursive=True, allow_not_found=True)
            )
        cut = len(self._base) + 1
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            name = info.path[cut:]
            if name.rsplit("/", 1)[-1].startswith(".tmp-"):
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            yield ObjectInfo(name, int(info.size or 0), mtime)

    def list_after(self, prefix: str, start_after: str, limit: int) -> _Keys:
        """Up to ``limit`` keys under ``prefix`` (a folder-like key) that sort after
        ``start_after``, in order: one LIST request on S3."""
        if self.is_s3:
            with self._io(f"listing {prefix}"):
                answer = self.boto.list_objects_v2(
                    Bucket=self.bucket,
                    Prefix=self._s3_key(prefix),
                    StartAfter=self._s3_key(start_after),
                    MaxKeys=limit,
                )
            cut = len(self.prefix) + 1 if self.prefix else 0
            return [o["Key"][cut:] for o in answer.get("Contents", [])]
        folder = Path(self.path(prefix.rstrip("/")))
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return []
        base = prefix.rstrip("/") + "/"
        keys = [base + n for n in names if base + n > start_after]
        return keys[:limit]

    def exists(self, key: str) -> bool:
        with self._io(f"checking {key}"):
            if not self.is_s3:
                return os.path.exists(self.path(key))
            info = self.fs.get_file_info(self.path(key))
            return bool(info.type != pafs.FileType.NotFound)

    def folders(self, prefix: str, limit: int) -> _Keys:
        """The names of the folders directly under ``prefix``, sorted, at most ``limit``."""
        base = f"{self._base}/{prefix.strip('/')}"
        with self._io(f"listing {prefix}"):
            infos = self.fs.get_file_info(
                pafs.FileSelector(base, recursive=False, allow_not_found=True)
            )
        names = sorted(
            i.path.rstrip("/").rsplit("/", 1)[-1]
            for i in infos
            if i.type == pafs.FileType.Directory
        )
        return names[:limit]

    def check(self) -> None:
        """Raise StorageError unless the store answers (one request, bounded like every
        other; health checks go through ``probe``, which never waits longer than
        ``health_probe_seconds``)."""
        with self._io("checking the object store"):
            info = self.fs.get_file_info(self.bucket if self.is_s3 else self._base)
            if info.type == pafs.FileType.NotFound:
                raise StorageError(f"storage root {self.root_url} does not exist")

    def bucket_exists(self) -> bool:
        """Whether the S3 bucket exists (True for local storage); StorageError when the store
        does not answer."""
        if not self.is_s3:
            return True
        with translate_errors("checking the bucket"):
            return bool(self.fs.get_file_info(self.bucket).type != pafs.FileType.NotFound)

    def create_bucket(self) -> None:
        """Create the S3 bucket (serve --create-bucket); StorageError when the store refuses."""
        with translate_errors(f"creating bucket {self.bucket!r}"):
            self.boto.create_bucket(Bucket=self.bucket)

    # -- S3 details ----------------------------------------------------------------------
    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{validate_key(key)}" if self.prefix else validate_key(key)

    @property
    def boto(self) -> Any:
        if self._boto is None:
            self._boto = _boto_client(self.settings)
        return self._boto

    def duckdb_s3(self) -> dict[str, str]:
        """Connection facts DuckDB's httpfs needs to read this bucket: the read-only query
        credential when one is configured (``[s3.query]`` in the secrets file), else the
        main one."""
        endpoint = self.settings.s3_endpoint
        creds = self.settings.query_credentials or self.settings.credentials
        parsed = urlparse(endpoint) if endpoint else None
        return {
            "endpoint": parsed.netloc if parsed else "",
            "use_ssl": "false" if parsed and parsed.scheme == "http" else "true",
            "region": self.settings.s3_region,
            "url_style": "path" if parsed else "vhost",
            "key_id": creds.access_key_id,
            "secret": creds.secret_access_key,
            "session_token": creds.session_token,
            # httpfs's own bounds (DuckDB settings, whole seconds): the same budget as
            # pyarrow's and boto3's, so a query on a frozen store fails as fast as an ingest
            "http_timeout": str(max(1, math.ceil(self.settings.s3_request_timeout_seconds))),
            "http_retries": str(max(0, self.settings.s3_retries)),
            "http_retry_wait_ms": "100",
        }


@dataclass(frozen=True)
class ProbeResult:
    """One answer of the store probe: ``ok``, the error text when not, and when it was seen
    (``time.monotonic()``)."""

    ok: bool
    error: str
    at: float


class StoreProbe:
    """Asks the store whether it answers, without ever blocking a caller on a stuck request.

    ``result()`` reuses an answer younger than PROBE_CACHE_SECONDS; otherwise it starts one
    probe (``check``) in a daemon thread, unless one is already running, and waits for it
    at most ``timeout`` seconds counted from when that probe started. A probe still running
    then means "the store did not answer within ``timeout`` s". At most one probe runs at a
    time, so a frozen store costs one thread, not one per health check.
    """

    def __init__(self, check: Callable[[], None], timeout: float) -> None:
        self._check = check
        self.timeout = timeout
        self._lock = threading.Lock()
        self._last: ProbeResult | None = None
        self._running: threading.Event | None = None
        self._started = 0.0

    def result(self) -> ProbeResult:
        now = time.monotonic()
        with self._lock:
            last = self._last
            if last is not None and now - last.at < PROBE_CACHE_SECONDS:
                return last
            if self._running is None:
                self._running = threading.Event()
                self._started = now
                threading.Thread(
                    target=self._probe, args=(self._running,), name="flightlake-probe", daemon=True
                ).start()
            done, started = self._running, self._started
        done.wait(max(0.0, started + self.timeout - time.monotonic()))
        with self._lock:
            if self._last is not None and self._last.at >= started:
                return self._last
        return ProbeResult(
            False, f"the object store did not answer within {self.timeout:g} s", time.monotonic()
        )

    def _probe(self, done: threading.Event) -> None:
        try:
            self._check()
            result = ProbeResult(True, "", time.monotonic())
        except Exception as exc:
            result = ProbeResult(False, str(exc), time.monotonic())
        with self._lock:
            self._last = result
            self._running = None
        done.set()


def new_object_id() -> str:
    return uuid.uuid4().hex


def _s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    creds = settings.credentials
    kwargs: dict[str, Any] = {
        "region": settings.s3_region,
        "connect_timeout": settings.s3_connect_timeout_seconds,
        "request_timeout": settings.s3_request_timeout_seconds,
        "allow_bucket_creation": False,
        "allow_bucket_deletion": False,
        # the AWS SDK counts the first attempt in max_attempts
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1 + settings.s3_retries),
    }
    if creds:
        kwargs["access_key"] = creds.access_key_id
        kwargs["secret_key"] = creds.secret_access_key
        if creds.session_token:
            kwargs["session_token"] = creds.session_token
    if settings.s3_endpoint:
        parsed = urlparse(settings.s3_endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(
                f"S3 endpoint must look like http://HOST:PORT, got {settings.s3_endpoint!r}"
            )
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
        kwargs["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**kwargs)


def _boto_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    creds = settings.credentials
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=creds.access_key_id or None,
        aws_secret_access_key=creds.secret_access_key or None,
        aws_session_token=creds.session_token or None,
        config=Config(
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_request_timeout_seconds,
            # botocore's max_attempts counts the retries only (not the first attempt)
            retries={"max_attempts": settings.s3_retries, "mode": "standard"},
            s3={"addressing_style": "path" if settings.s3_endpoint else "auto"},
        ),
    )
