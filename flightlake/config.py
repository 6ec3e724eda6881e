"""Settings: every setting has a name, a default and a help text here, and one function
(`load_settings`) merges defaults < TOML file < ``FLIGHTLAKE_*`` environment < flags.

Credentials never come from the main config file: they come from the secrets file
(``conf/secrets.toml`` or ``FLIGHTLAKE_SECRETS_FILE``) or the standard ``AWS_*`` variables;
flightlake.secrets reads them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flightlake.errors import InvalidInput
from flightlake.secrets import Credentials, Principal, load_secrets
from flightlake.values import (
    check_endpoint,
    check_host,
    check_memory_limit,
    check_region,
    check_storage,
    parse_bytes,
)

DEFAULT_CONFIG_FILE = Path("conf/flightlake.toml")
DEFAULT_SECRETS_FILE = Path("conf/secrets.toml")


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name, type, default, help, and what values are allowed.

    What is allowed is data, so a new setting only declares it: ``choices`` (compared without
    case), ``min`` / ``max`` for numbers (inclusive), or ``check``, a function returning None
    for a good value and otherwise what is allowed. Every setting declares one of them (a
    bool's choices are true and false).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = field(default=(), kw_only=True)
    min: float | None = field(default=None, kw_only=True)
    max: float | None = field(default=None, kw_only=True)
    check: Callable[[Any], str | None] | None = field(default=None, kw_only=True)
    #: the sentence a bad value's error ends with when ``check`` says no (for docs too)
    allowed_text: str = field(default="", kw_only=True)

    @property
    def is_bytes(self) -> bool:
        """A byte count (named ``*_bytes``): a string value may carry a unit, as 512MiB."""
        return self.name.endswith("_bytes") and self.type is int

    @property
    def env(self) -> str:
        return "FLIGHTLAKE_" + self.name.upper()

    @property
    def allowed(self) -> str:
        """What values are allowed, in words: ``one of debug, info, warning, error``."""
        if self.type is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{_num(self.min)} to {_num(self.max)}"
        if self.min is not None:
            return f"at least {_num(self.min)}"
        if self.max is not None:
            return f"at most {_num(self.max)}"
        return self.allowed_text

    def problem(self, value: Any) -> str | None:
        """None when ``value`` (already of ``type``) is allowed, else what is allowed."""
        if self.choices and str(value).lower() not in self.choices:
            return self.allowed
        if isinstance(value, float) and not math.isfinite(value):
            return self.allowed or "a finite number"
        if self.min is not None and value < self.min:
            return self.allowed
        if self.max is not None and value > self.max:
            return self.allowed
        if self.check is not None:
            return self.check(value)
        return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SECONDS_MAX = 10.0**9  # some 31 years: finite, and past any real setting
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "storage",
        str,
        "./flightlake-data",
        "Storage root: a local folder, or s3://BUCKET[/PREFIX] for S3 / MinIO.",
        check=check_storage,
        allowed_text="a local folder, or s3://BUCKET[/PREFIX]",
    ),
    Setting(
        "s3_endpoint",
        str,
        "",
        "S3 endpoint URL, e.g. http://127.0.0.1:9000 for a local MinIO; empty means AWS.",
        check=check_endpoint,
        allowed_text="empty (AWS), or http://HOST[:PORT] or https://HOST[:PORT]",
    ),
    Setting(
        "s3_region",
        str,
        "us-east-1",
        "S3 region.",
        check=check_region,
        allowed_text="a region name such as us-east-1",
    ),
    Setting(
        "s3_create_bucket",
        bool,
        False,
        "Create the s3:// storage bucket when it is missing; otherwise serve refuses to start.",
    ),
    Setting(
        "s3_connect_timeout_seconds",
        float,
        3.0,
        "Seconds to open a connection to the S3 endpoint before the attempt fails.",
        min=0.1,
    ),
    Setting(
        "s3_request_timeout_seconds",
        float,
        4.0,
        "Seconds an S3 request may wait with no byte moving (a frozen store) before the "
        "attempt fails; also DuckDB's httpfs timeout.",
        min=0.1,
    ),
    Setting(
        "s3_retries",
        int,
        1,
        "Retries of a failed S3 request after the first attempt (pyarrow, boto3, DuckDB). "
        "One request fails after about (1 + s3_retries) x s3_request_timeout_seconds.",
        min=0,
        max=10,
    ),
    Setting(
        "health_probe_seconds",
        float,
        5.0,
        "Longest /health and the Flight health action wait for the object-store probe "
        "before answering unavailable; a probe's answer is reused for 2 s.",
        min=0.1,
    ),
    Setting(
        "ingest_idle_seconds",
        float,
        60.0,
        "An upload whose client sends nothing for this long is cancelled and its slot freed "
        "(0: never).",
        min=0,
    ),
    Setting(
        "host",
        str,
        "127.0.0.1",
        "Address both servers bind to (IPv6 too: ::1).",
        check=check_host,
        allowed_text="an IP address (127.0.0.1, ::1, 0.0.0.0) or a host name",
    ),
    Setting(
        "flight_port",
        int,
        8815,
        "Arrow Flight (and Flight SQL) port; 0 picks a free one.",
        min=0,
        max=65535,
    ),
    Setting(
        "http_port",
        int,
        3110,
        "HTTP /v1 shim port; 0 disables the HTTP server.",
        min=0,
        max=65535,
    ),
    Setting(
        "max_upload_bytes",
        int,
        256 * 1024 * 1024,
        "Per-request HTTP upload cap in bytes.",
        min=1,
    ),
    Setting(
        "max_concurrent_ingests",
        int,
        4,
        "Ingests running at once; more are refused at once (UNAVAILABLE / 503).",
        min=1,
    ),
    Setting("max_list", int, 10_000, "Most datasets one listing returns.", min=1),
    Setting(
        "tls_cert",
        str,
        "",
        "PEM certificate file; with tls_key, serves TLS on both ports.",
        check=lambda v: None,
        allowed_text="empty, or a readable PEM file (checked at start)",
    ),
    Setting(
        "tls_key",
        str,
        "",
        "PEM private key file for tls_cert.",
        check=lambda v: None,
        allowed_text="empty, or a readable PEM file (checked at start)",
    ),
    Setting(
        "insecure",
        bool,
        False,
        "Allow a non-loopback host with no [[tokens]] or [[users]] (no authentication).",
    ),
    Setting(
        "session_ttl_seconds",
        float,
        43_200.0,
        "Lifetime of the session tokens the Flight basic-auth handshake hands out.",
        min=1,
        max=SECONDS_MAX,
    ),
    Setting(
        "batch_rows",
        int,
        65_536,
        "Rows per Arrow record batch in query results.",
        min=1,
        max=2**31 - 1,
    ),
    Setting(
        "query_memory_limit",
        str,
        "2GB",
        "DuckDB memory limit for all queries together (2GB, 500MiB, or 80% of RAM); a query "
        "past it fails RESOURCE_EXHAUSTED-style (Flight INVALID_ARGUMENT, HTTP 507).",
        check=check_memory_limit,
        allowed_text="a size such as 2GB, 500MiB or 1.5GB, or 80%; at least 16MB",
    ),
    Setting(
        "query_threads",
        int,
        0,
        "DuckDB threads per server process; 0 means one per core, or cores / workers "
        "(at least 1) in each of --workers N processes.",
        min=0,
        max=1024,
    ),
    Setting(
        "query_timeout",
        float,
        60.0,
        "Seconds a query may run (to the end of its result stream) before it is cancelled.",
        min=0.001,
        max=SECONDS_MAX,
    ),
    Setting(
        "max_concurrent_queries",
        int,
        0,
        "Queries running at once; 0 means two per core. More wait for a slot.",
        min=0,
        max=100_000,
    ),
    Setting(
        "query_queue_seconds",
        float,
        10.0,
        "Seconds a query waits for a slot before it fails UNAVAILABLE / 503 with Retry-After.",
        min=0,
        max=SECONDS_MAX,
    ),
    Setting(
        "max_result_batch_bytes",
        int,
        256 * 1024 * 1024,
        "Largest result record batch a query may produce (DuckDB's memory limit does not "
        "cover result values); larger fails RESOURCE_EXHAUSTED-style.",
        min=1024,
        max=2**62,
    ),
    Setting(
        "max_server_memory_bytes",
        int,
        0,
        "Resident memory of the server above which every running query is interrupted "
        "(RESOURCE_EXHAUSTED-style); 0 means query_memory_limit + 1 GiB.",
        min=0,
        max=2**62,
    ),
    Setting(
        "cache_bytes",
        int,
        512 * 1024 * 1024,
        "Bytes of memory for hot datasets: a dataset queried twice at one version is held "
        "as an Arrow table for plain SELECT ... WHERE queries, dropped on its next commit, "
        "least recently used first; at most a quarter of the memory ceiling "
        "(max_server_memory_bytes, by default query_memory_limit + 1 GiB). 0 turns it off.",
        min=0,
        max=2**62,
    ),
    Setting(
        "spool_dir",
        str,
        "",
        "Folder for temporary CSV spool files; empty means the OS temp dir.",
        check=lambda v: None,
        allowed_text="empty, or a folder",
    ),
    Setting(
        "min_free_spool_bytes",
        int,
        512 * 1024 * 1024,
        "An ingest fails rather than leave less free space than this on the spool disk "
        "(0: no check).",
        min=0,
        max=2**62,
    ),
    Setting(
        "memory_decay_ms",
        int,
        0,
        "How long Arrow's jemalloc memory pool keeps freed pages before giving them back to "
        "the OS while ingests run (milliseconds; 0: at once, so the server's RSS follows what "
        "it uses). Longer ingests faster and holds more memory. Between ingests it is 1000 "
        "(query results reuse pages).",
        min=0,
        max=3_600_000,
    ),
    Setting(
        "min_free_storage_bytes",
        int,
        512 * 1024 * 1024,
        "With local storage, an ingest fails rather than leave less free space than this on "
        "the storage disk (0: no check).",
        min=0,
        max=2**62,
    ),
    Setting(
        "gc_grace_seconds",
        float,
        3600.0,
        "Unreferenced objects younger than this are never swept (protects live ingests).",
        min=0,
        max=SECONDS_MAX,
    ),
    Setting(
        "gc_interval_seconds",
        float,
        900.0,
        "Seconds between background sweeps of unreferenced objects (0: only at start).",
        min=0,
        max=SECONDS_MAX,
    ),
    Setting(
        "log_level",
        str,
        "info",
        "Log level: debug, info, warning or error (any case).",
        choices=("debug", "info", "warning", "error"),
    ),
    Setting(
        "freshness_seconds",
        float,
        1.0,
        "A commit made by another server is seen by queries starting at least this many "
        "seconds later (this server's own commits at once).",
        min=0,
        max=86_400,
    ),
    Setting(
        "retention_hours",
        float,
        168.0,
        "gc keeps the files of every version younger than this (time travel window); older "
        "replaced files are vacuumed.",
        min=0,
        max=1_000_000,
    ),
    Setting(
        "compact_files",
        int,
        10,
        "A dataset with this many small files is compacted in the background (0: never).",
        min=0,
        max=1_000_000,
    ),
    Setting(
        "workers",
        int,
        1,
        "Server processes behind the same Flight port (the serving process hands each "
        "connection to the next worker) and HTTP port (SO_REUSEPORT), over one lake; each "
        "sees the others' commits within freshness_seconds.",
        min=1,
        max=256,
    ),
    Setting(
        "log_format",
        str,
        "text",
        "Log line format: text (for people) or json (one object per line, with request_id).",
        choices=("text", "json"),
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The merged, immutable configuration of one server or client process."""

    storage: str = "./flightlake-data"
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = False
    s3_connect_timeout_seconds: float = 3.0
    s3_request_timeout_seconds: float = 4.0
    s3_retries: int = 1
    health_probe_seconds: float = 5.0
    ingest_idle_seconds: float = 60.0
    host: str = "127.0.0.1"
    flight_port: int = 8815
    http_port: int = 3110
    max_upload_bytes: int = 256 * 1024 * 1024
    max_concurrent_ingests: int = 4
    max_list: int = 10_000
    tls_cert: str = ""
    tls_key: str = ""
    insecure: bool = False
    session_ttl_seconds: float = 43_200.0
    batch_rows: int = 65_536
    query_memory_limit: str = "2GB"
    query_threads: int = 0
    query_timeout: float = 60.0
    max_concurrent_queries: int = 0
    query_queue_seconds: float = 10.0
    max_result_batch_bytes: int = 256 * 1024 * 1024
    max_server_memory_bytes: int = 0
    cache_bytes: int = 512 * 1024 * 1024
    spool_dir: str = ""
    min_free_spool_bytes: int = 512 * 1024 * 1024
    memory_decay_ms: int = 0
    min_free_storage_bytes: int = 512 * 1024 * 1024
    gc_grace_seconds: float = 3600.0
    gc_interval_seconds: float = 900.0
    freshness_seconds: float = 1.0
    retention_hours: float = 168.0
    compact_files: int = 10
    workers: int = 1
    log_level: str = "info"
    log_format: str = "text"
    credentials: Credentials = field(default_factory=Credentials)
    query_credentials: Credentials = field(default_factory=Credentials)
    principals: tuple[Principal, ...] = ()

    @property
    def is_s3(self) -> bool:
        return self.storage.startswith("s3://")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _typed(setting: Setting, value: Any) -> Any:
    """``value`` as ``setting.type``; ValueError when it is not one."""
    if setting.type is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(value)
    if setting.type in (int, float) and isinstance(value, bool):
        raise ValueError(value)  # TOML true is not a number
    if setting.type in (int, float) and isinstance(value, str) and not value.isascii():
        raise ValueError(value)  # int() reads other scripts' digits (fullwidth, Arabic-Indic)
    if setting.type is int and setting.is_bytes and isinstance(value, str):
        return parse_bytes(value)  # 536870912, or a size: 512MiB, 2GB
    if setting.type is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(value, str):
            return int(value.strip().replace("_", ""))
        return int(value)
    if setting.type is float and isinstance(value, str):
        return float(value.strip().replace("_", ""))
    if setting.type is str and not isinstance(value, str):
        raise ValueError(value)
    return setting.type(value)


def _shown(value: Any) -> str:
    """A setting's value in an error, as written: ``'LOUD'``, ``70000``, ``true``."""
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def checked(setting: Setting, value: Any, source: str) -> Any:
    """``value`` from ``source`` converted to the setting's type and checked against what it
    allows; raises InvalidInput with one line naming the source, the value, the setting and
    what is allowed: ``FLIGHTLAKE_LOG_LEVEL='LOUD': log_level must be one of debug, ...``.

    ``source`` is an environment variable, ``FILE: name`` or ``--flag``.
    """
    try:
        typed = _typed(setting, value)
    except (TypeError, ValueError, OverflowError):
        allowed = _TYPE_WORDS.get(setting.type, setting.type.__name__)
        if setting.is_bytes:
            allowed = "a byte count or a size such as 512MiB or 2GB"
        if setting.allowed and setting.type is not bool:
            allowed += f" ({setting.allowed})"
        raise InvalidInput(f"{source}={_shown(value)}: {setting.name} must be {allowed}") from None
    problem = setting.problem(typed)
    if problem:
        raise InvalidInput(f"{source}={_shown(value)}: {setting.name} must be {problem}")
    if setting.choices:
        typed = str(typed).lower()
    if setting.name == "host":
        typed = str(typed).strip("[]")  # [::1] and ::1 are the same address
    return typed


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise InvalidInput(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from exc


def load_settings(
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults < config file < FLIGHTLAKE_* environment < flags into Settings.

    ``config_file`` None means ``conf/flightlake.toml`` when it exists (or
    ``FLIGHTLAKE_CONFIG``); flags whose value is None are ignored.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}

    path: Path | None = Path(config_file) if config_file else None
    if path is None and env.get("FLIGHTLAKE_CONFIG"):
        path = Path(env["FLIGHTLAKE_CONFIG"])
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        table = _read_toml(path)
        table = table.get("flightlake", table)
        for key, value in table.items():
            if key not in _BY_NAME:
                raise InvalidInput(f"config file {path}: unknown setting {key!r}")
            values[key] = checked(_BY_NAME[key], value, f"{path}: {key}")

    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = checked(setting, env[setting.env], setting.env)

    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = checked(_BY_NAME[key], value, f"--{key.replace('_', '-')}")

    secrets_path = (
        Path(env["FLIGHTLAKE_SECRETS_FILE"])
        if env.get("FLIGHTLAKE_SECRETS_FILE")
        else DEFAULT_SECRETS_FILE
    )
    if env.get("FLIGHTLAKE_SECRETS_FILE") and not secrets_path.exists():
        raise InvalidInput(f"secrets file not found: {secrets_path}")
    secrets = _read_toml(secrets_path) if secrets_path.exists() else {}
    creds, query_creds, principals = load_secrets(secrets, env, secrets_path)
    return Settings(
        **values, credentials=creds, query_credentials=query_creds, principals=principals
    )
