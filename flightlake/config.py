"""Settings: every setting has a name, a default and a help text here, and one function
(`load_settings`) merges defaults < TOML file < ``FLIGHTLAKE_*`` environment < flags.

Credentials never come from the main config file: they come from the secrets file
(``conf/secrets.toml`` or ``FLIGHTLAKE_SECRETS_FILE``) or the standard ``AWS_*`` variables.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flightlake.errors import InvalidInput

DEFAULT_CONFIG_FILE = Path("conf/flightlake.toml")
DEFAULT_SECRETS_FILE = Path("conf/secrets.toml")


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name, type, default, environment name and help."""

    name: str
    type: type
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "FLIGHTLAKE_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "storage",
        str,
        "./flightlake-data",
        "Storage root: a local folder, or s3://BUCKET[/PREFIX] for S3 / MinIO.",
    ),
    Setting(
        "s3_endpoint",
        str,
        "",
        "S3 endpoint URL, e.g. http://127.0.0.1:9000 for a local MinIO; empty means AWS.",
    ),
    Setting("s3_region", str, "us-east-1", "S3 region."),
    Setting(
        "s3_connect_timeout_seconds",
        float,
        3.0,
        "Seconds to open a connection to the S3 endpoint before the attempt fails.",
    ),
    Setting(
        "s3_request_timeout_seconds",
        float,
        4.0,
        "Seconds an S3 request may wait with no byte moving (a frozen store) before the "
        "attempt fails; also DuckDB's httpfs timeout.",
    ),
    Setting(
        "s3_retries",
        int,
        1,
        "Retries of a failed S3 request after the first attempt (pyarrow, boto3, DuckDB). "
        "One request fails after about (1 + s3_retries) x s3_request_timeout_seconds.",
    ),
    Setting(
        "health_probe_seconds",
        float,
        5.0,
        "Longest /health and the Flight health action wait for the object-store probe "
        "before answering unavailable; a probe's answer is reused for 2 s.",
    ),
    Setting(
        "ingest_idle_seconds",
        float,
        60.0,
        "An upload whose client sends nothing for this long is cancelled and its slot freed.",
    ),
    Setting("host", str, "127.0.0.1", "Address both servers bind to."),
    Setting("flight_port", int, 8815, "Arrow Flight (and Flight SQL) port."),
    Setting("http_port", int, 3110, "HTTP /v1 shim port; 0 disables the HTTP server."),
    Setting("max_upload_bytes", int, 256 * 1024 * 1024, "Per-request HTTP upload cap in bytes."),
    Setting(
        "max_concurrent_ingests",
        int,
        4,
        "Ingests running at once; more are refused at once (UNAVAILABLE / 503).",
    ),
    Setting("max_list", int, 10_000, "Most datasets one listing returns."),
    Setting("tls_cert", str, "", "PEM certificate file; with tls_key, serves TLS on both ports."),
    Setting("tls_key", str, "", "PEM private key file for tls_cert."),
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
    ),
    Setting("batch_rows", int, 65_536, "Rows per Arrow record batch in query results."),
    Setting("query_memory_limit", str, "2GB", "DuckDB memory limit for queries."),
    Setting("query_threads", int, 0, "DuckDB worker threads; 0 means one per core."),
    Setting("query_timeout", float, 300.0, "Seconds a query may run before it is cancelled."),
    Setting(
        "spool_dir", str, "", "Folder for temporary CSV spool files; empty means the OS temp dir."
    ),
    Setting(
        "gc_grace_seconds",
        float,
        3600.0,
        "Unreferenced objects younger than this are never swept (protects live ingests).",
    ),
    Setting(
        "gc_interval_seconds",
        float,
        900.0,
        "Seconds between background sweeps of unreferenced objects (0: only at start).",
    ),
    Setting(
        "freshness_seconds",
        float,
        1.0,
        "A commit made by another server is seen by queries starting at least this many "
        "seconds later (this server's own commits at once).",
    ),
    Setting(
        "retention_hours",
        float,
        168.0,
        "gc keeps the files of every version younger than this (time travel window); older "
        "replaced files are vacuumed.",
    ),
    Setting(
        "compact_files",
        int,
        10,
        "A dataset with this many small files is compacted in the background (0: never).",
    ),
    Setting(
        "workers",
        int,
        1,
        "Server processes sharing the Flight and HTTP ports (SO_REUSEPORT) over one lake; "
        "each sees the others' commits within freshness_seconds.",
    ),
    Setting("log_level", str, "INFO", "Log level: DEBUG, INFO, WARNING or ERROR."),
    Setting(
        "log_format",
        str,
        "text",
        "Log line format: text (for people) or json (one object per line, with request_id).",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Credentials:
    """S3 credentials; kept out of repr so they never reach logs."""

    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)

    def __bool__(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)


@dataclass(frozen=True)
class Principal:
    """A bearer token or a username/password pair with its role (read | write)."""

    name: str
    role: str
    token: str = field(default="", repr=False)
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class Settings:
    """The merged, immutable configuration of one server or client process."""

    storage: str = "./flightlake-data"
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
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
    query_timeout: float = 300.0
    spool_dir: str = ""
    gc_grace_seconds: float = 3600.0
    gc_interval_seconds: float = 900.0
    freshness_seconds: float = 1.0
    retention_hours: float = 168.0
    compact_files: int = 10
    workers: int = 1
    log_level: str = "INFO"
    log_format: str = "text"
    credentials: Credentials = field(default_factory=Credentials)
    query_credentials: Credentials = field(default_factory=Credentials)
    principals: tuple[Principal, ...] = ()

    @property
    def is_s3(self) -> bool:
        return self.storage.startswith("s3://")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    if setting.type is bool and isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise InvalidInput(f"{origin}: {setting.name} must be true or false, got {value!r}")
    try:
        if setting.type is int and isinstance(value, str):
            return int(value.replace("_", ""))
        return setting.type(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{origin}: {setting.name} must be {setting.type.__name__}, got {value!r}"
        ) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise InvalidInput(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from exc


def _load_secrets(
    path: Path | None, env: Mapping[str, str]
) -> tuple[Credentials, Credentials, tuple[Principal, ...]]:
    data: dict[str, Any] = {}
    if path is not None and path.exists():
        data = _read_toml(path)
    s3 = data.get("s3", {})
    creds = Credentials(
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or s3.get("access_key_id", ""),
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or s3.get("secret_access_key", ""),
        session_token=env.get("AWS_SESSION_TOKEN") or s3.get("session_token", ""),
    )
    query = s3.get("query", {})
    query_creds = Credentials(
        access_key_id=env.get("FLIGHTLAKE_QUERY_ACCESS_KEY_ID") or query.get("access_key_id", ""),
        secret_access_key=env.get("FLIGHTLAKE_QUERY_SECRET_ACCESS_KEY")
        or query.get("secret_access_key", ""),
    )
    principals: list[Principal] = []
    for entry in data.get("tokens", []):
        principals.append(
            Principal(entry.get("name", "token"), _role(entry, path), token=str(entry["token"]))
        )
    for entry in data.get("users", []):
        principals.append(
            Principal(str(entry["username"]), _role(entry, path), password=str(entry["password"]))
        )
    return creds, query_creds, tuple(principals)


def _role(entry: Mapping[str, Any], path: Path | None) -> str:
    role = str(entry.get("role", "read"))
    if role not in ("read", "write"):
        raise InvalidInput(f"secrets file {path}: role must be 'read' or 'write', got {role!r}")
    return role


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
            values[key] = _coerce(_BY_NAME[key], value, str(path))

    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = _coerce(setting, env[setting.env], setting.env)

    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = _coerce(_BY_NAME[key], value, f"--{key.replace('_', '-')}")

    secrets_path = (
        Path(env["FLIGHTLAKE_SECRETS_FILE"])
        if env.get("FLIGHTLAKE_SECRETS_FILE")
        else DEFAULT_SECRETS_FILE
    )
    if env.get("FLIGHTLAKE_SECRETS_FILE") and not secrets_path.exists():
        raise InvalidInput(f"secrets file not found: {secrets_path}")
    creds, query_creds, principals = _load_secrets(secrets_path, env)
    return Settings(
        **values, credentials=creds, query_credentials=query_creds, principals=principals
    )
