"""Object-store access: a local folder or S3 / MinIO, both through ``pyarrow.fs``.

This is the only module that builds a ``pyarrow.fs.S3FileSystem`` or a boto3 client; the
boto3 client exists for the one thing pyarrow.fs cannot do: conditional writes
(``IfNoneMatch="*"``), which make catalog commits safe between competing writers.
Foreign errors (``OSError``, Arrow and botocore errors) become ``StorageError`` here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
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


class Storage:
    """Keys under one root (a local folder or ``s3://bucket/prefix``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.is_s3 = settings.is_s3
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
            with translate_errors("creating the storage folder"):
                root.mkdir(parents=True, exist_ok=True)
            self.fs = pafs.LocalFileSystem()
            self._base = str(root)

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
        with translate_errors(f"opening {key} for writing"):
            if not self.is_s3:
                Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
            return self.fs.open_output_stream(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        with translate_errors(f"reading {key}"), self.fs.open_input_stream(self.path(key)) as f:
            return bytes(f.read())

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if no object is there; False if one already is."""
        with translate_errors(f"writing {key}"):
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
        if self.is_s3:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": self._s3_key(k)} for k in keys[i : i + 1000]]
                with translate_errors(f"deleting {len(batch)} objects"):
                    answer = self.boto.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                errors = answer.get("Errors", [])
                if errors:
                    raise StorageError(f"could not delete {len(errors)} objects: {errors[0]}")
            return
        for key in keys:
            with translate_errors(f"deleting {key}"), contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.path(key))

    def size(self, key: str) -> int:
        with translate_errors(f"reading the size of {key}"):
            info = self.fs.get_file_info(self.path(key))
            if info.type == pafs.FileType.NotFound:
                raise NotFound(f"object {key} not found")
            return int(info.size or 0)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (a folder-like key), recursively."""
        base = f"{self._base}/{prefix.strip('/')}"
        with translate_errors(f"listing {prefix}"):
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

    def check(self) -> None:
        """Raise StorageError unless the store answers (used by health checks)."""
        with translate_errors("checking the object store"):
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
        }


def new_object_id() -> str:
    return uuid.uuid4().hex


def _s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    creds = settings.credentials
    kwargs: dict[str, Any] = {
        "region": settings.s3_region,
        "connect_timeout": 5,
        "request_timeout": 30,
        "allow_bucket_creation": False,
        "allow_bucket_deletion": False,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
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
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if settings.s3_endpoint else "auto"},
        ),
    )
