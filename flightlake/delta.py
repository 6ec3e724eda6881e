"""Delta Lake tables: the only module that imports ``deltalake`` (delta-rs).

Every dataset NAME is a Delta table in the folder ``data/NAME/`` under the storage root.
flightlake writes the Parquet files itself (ingest.py) and commits them here as add actions;
the commit is delta-rs's put-if-absent of ``_delta_log/<N>.json``, so no writer in any process
overwrites another's commit. Commits are made with ``max_commit_retries=0``: a commit built on
version N lands as N + 1 or fails with ``CommitRace``, and the caller re-reads and retries.
That way the caller always knows the exact version that holds its rows.

The exact Arrow type of every column is kept in the Delta field metadata
(``flightlake.arrow_type``); the Delta type is the nearest one Delta has (see
``delta_type``), which is what other engines read.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, Transaction
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from flightlake.errors import InvalidInput, NotFound, StorageError
from flightlake.storage import Storage

log = logging.getLogger("flightlake.delta")

DATA_PREFIX = "data"
LOG_DIR = "_delta_log"
ARROW_TYPE_KEY = "flightlake.arrow_type"
#: commitInfo keys flightlake adds to its commits
ROWS_ADDED = "flightlake.rowsAdded"
ROWS_TOTAL = "flightlake.rowsTotal"
IDEMPOTENCY_KEY = "flightlake.idempotencyKey"
MIGRATED_FROM = "flightlake.migratedFrom"
TXN_PREFIX = "flightlake-key-"
MAX_STAT_CHARS = 32  # string min/max longer than this are left out of the stats


class CommitRace(Exception):
    """Another writer committed the version this commit was built on; re-read and retry."""


class TableExists(Exception):
    """A table was created at this location by someone else meanwhile."""


@dataclass(frozen=True)
class DataFile:
    """One live Parquet file of a table: its key under the storage root, bytes and rows."""

    key: str
    size: int
    rows: int


@dataclass(frozen=True)
class Snapshot:
    """One version of one table."""

    version: int
    table_id: str
    schema: pa.Schema
    files: tuple[DataFile, ...]
    created_ms: int
    committed_ms: int


@dataclass(frozen=True)
class NewFile:
    """A Parquet file written for a commit (key under the storage root)."""

    key: str
    size: int
    rows: int
    stats: str
    mtime_ms: int


def table_prefix(name: str) -> str:
    return f"{DATA_PREFIX}/{name}"


def log_key(name: str, version: int) -> str:
    return f"{table_prefix(name)}/{LOG_DIR}/{version:020d}.json"


# -- schema ---------------------------------------------------------------------------------
def _delta_compatible(kind: pa.DataType, column: str) -> pa.DataType:
    """The nearest Arrow type Delta can declare for ``kind`` (widening where lossless)."""
    t = pa.types
    if t.is_uint8(kind):
        return pa.int16()
    if t.is_uint16(kind):
        return pa.int32()
    if t.is_uint32(kind):
        return pa.int64()
    if t.is_uint64(kind):
        return pa.decimal128(20, 0)
    if t.is_float16(kind):
        return pa.float32()
    if t.is_timestamp(kind):
        # Naive timestamps too are declared as Delta `timestamp` (same numbers, read as UTC by
        # other engines): `timestamp_ntz` needs a table feature an existing table may lack, so
        # an overwrite bringing one in would fail.
        return pa.timestamp("us", tz="UTC")
    if t.is_time32(kind):
        return pa.int32()
    if t.is_time64(kind) or t.is_duration(kind):
        return pa.int64()
    if t.is_date64(kind):
        return pa.date32()
    if t.is_decimal(kind):
        if kind.precision <= 38:
            return pa.decimal128(kind.precision, kind.scale)
        raise InvalidInput(
            f"column {column!r}: type {kind} has more than 38 digits, which a Delta Lake "
            "table cannot hold; cast it to a string or a smaller decimal"
        )
    if t.is_null(kind):
        return pa.string()
    if t.is_list(kind) or t.is_large_list(kind):
        return pa.list_(_delta_compatible(kind.value_type, column))
    if t.is_struct(kind):
        return pa.struct([pa.field(f.name, _delta_compatible(f.type, column)) for f in kind])
    if t.is_map(kind):
        return pa.map_(
            _delta_compatible(kind.key_type, column), _delta_compatible(kind.item_type, column)
        )
    if (
        t.is_integer(kind)
        or t.is_floating(kind)
        or t.is_boolean(kind)
        or t.is_string(kind)
        or t.is_large_string(kind)
        or t.is_binary(kind)
        or t.is_large_binary(kind)
        or t.is_date32(kind)
    ):
        return kind
    raise InvalidInput(
        f"column {column!r}: type {kind} cannot be stored in a Delta Lake table; "
        "cast it to a supported type"
    )


def delta_schema(schema: pa.Schema) -> DeltaSchema:
    """The Delta schema declared for ``schema``; each field keeps its exact Arrow type in
    its metadata. Raises InvalidInput naming a column whose type Delta cannot hold."""
    fields = []
    for f in schema:
        exact = base64.b64encode(pa.schema([f]).serialize().to_pybytes()).decode()
        kind = _delta_compatible(f.type, f.name)
        fields.append(pa.field(f.name, kind, nullable=True, metadata={ARROW_TYPE_KEY: exact}))
    try:
        return DeltaSchema.from_arrow(pa.schema(fields))
    except Exception as exc:  # delta-rs raises a bare Exception for unsupported types
        raise InvalidInput(f"schema cannot be stored in a Delta Lake table: {exc}") from exc


def arrow_schema(table: DeltaTable) -> pa.Schema:
    """The exact Arrow schema of a flightlake table (its Delta schema for tables written by
    other engines)."""
    fields = []
    declared = pa.schema(table.schema().to_arrow())
    for delta_field, f in zip(table.schema().fields, declared, strict=True):
        exact = (delta_field.metadata or {}).get(ARROW_TYPE_KEY)
        if isinstance(exact, str):
            fields.append(pa.ipc.read_schema(pa.py_buffer(base64.b64decode(exact))).field(0))
        else:
            fields.append(pa.field(f.name, f.type, nullable=True))
    return pa.schema(fields)


# -- statistics -----------------------------------------------------------------------------
def file_stats(metadata: pq.FileMetaData, schema: pa.Schema) -> str:
    """Delta per-file stats JSON from a Parquet footer: numRecords, and for top-level
    columns nullCount, plus minValues/maxValues for integers, dates and short strings
    (the types whose Parquet and Delta orderings agree exactly)."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    parquet_schema = metadata.schema
    leaf = {parquet_schema.column(i).path: i for i in range(metadata.num_columns)}
    for f in schema:
        index = leaf.get(f.name)
        if index is None:
            continue
        lo: Any = None
        hi: Any = None
        count = 0
        usable = True
        for g in range(metadata.num_row_groups):
            stats = metadata.row_group(g).column(index).statistics
            if stats is None or not stats.has_null_count:
                usable = False
                break
            count += stats.null_count
            if not stats.has_min_max:
                continue
            a, b = _stat_value(stats.min, f.type), _stat_value(stats.max, f.type)
            if a is None or b is None:
                lo = hi = _NO_STAT
                continue
            if lo is not _NO_STAT:
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
        if not usable:
            continue
        nulls[f.name] = count
        if lo is not None and lo is not _NO_STAT:
            mins[f.name] = lo.isoformat() if isinstance(lo, date) else lo
            maxs[f.name] = hi.isoformat() if isinstance(hi, date) else hi
    return json.dumps(
        {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls},
        separators=(",", ":"),
    )


_NO_STAT: Any = object()


def _stat_value(value: Any, kind: pa.DataType) -> Any:
    if pa.types.is_integer(kind) and not pa.types.is_uint64(kind) and isinstance(value, int):
        return value
    if pa.types.is_date32(kind) and isinstance(value, date):
        return value
    if pa.types.is_string(kind) and isinstance(value, str) and len(value) <= MAX_STAT_CHARS:
        return value
    if pa.types.is_floating(kind) and isinstance(value, float) and math.isfinite(value):
        return None  # NaN / signed-zero semantics differ between engines: no float stats
    return None


# -- tables ---------------------------------------------------------------------------------
class Tables:
    """Opens, reads and commits the Delta tables under one storage root."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.options = _storage_options(storage)

    def uri(self, name: str) -> str:
        """The table's URI (``/abs/root/data/NAME`` or ``s3://bucket/prefix/data/NAME``)."""
        return f"{self.storage.root_url}/{table_prefix(name)}"

    def open(self, name: str, version: int | None = None) -> DeltaTable | None:
        """The table at its latest version (or ``version``), or None when there is none."""
        try:
            with _delta_errors(f"reading table {name}"):
                return DeltaTable(self.uri(name), version=version, storage_options=self.options)
        except NotFound:
            return None

    def update(self, table: DeltaTable) -> None:
        with _delta_errors("reading the table log"):
            table.update_incremental()

    def snapshot(self, table: DeltaTable, name: str) -> Snapshot:
        """Version, schema, live files and times of ``table`` as loaded."""
        with _delta_errors(f"reading table {name}"):
            version = table.version()
            adds = pa.table(table.get_add_actions(flatten=False))
            meta = table.metadata()
            schema = arrow_schema(table)
            committed = int(self.commit_info(name, version).get("timestamp", 0) or 0)
        paths = adds.column("path").to_pylist() if adds.num_rows else []
        sizes = adds.column("size_bytes").to_pylist() if adds.num_rows else []
        rows = adds.column("num_records").to_pylist() if adds.num_rows else []
        base = table_prefix(name)
        files = tuple(
            DataFile(f"{base}/{p}", int(s), int(r or 0))
            for p, s, r in sorted(zip(paths, sizes, rows, strict=True))
        )
        return Snapshot(version, str(meta.id), schema, files, int(meta.created_time), committed)

    def create(
        self,
        name: str,
        schema: pa.Schema,
        files: Sequence[NewFile],
        metadata: dict[str, Any],
        txn: Transaction | None = None,
    ) -> None:
        """Create table ``name`` at version 0 holding ``files``; TableExists when a table is
        already there."""
        props = CommitProperties(custom_metadata=metadata, app_transactions=[txn] if txn else None)
        try:
            with _delta_errors(f"creating table {name}"):
                create_table_with_add_actions(
                    self.uri(name),
                    delta_schema(schema),
                    [_add(name, f) for f in files],
                    mode="error",
                    storage_options=self.options,
                    commit_properties=props,
                )
        except _AlreadyExists as exc:
            raise TableExists(name) from exc

    def commit(
        self,
        table: DeltaTable,
        name: str,
        mode: str,
        schema: pa.Schema,
        files: Sequence[NewFile],
        metadata: dict[str, Any],
        txn: Transaction | None = None,
        removes: Sequence[DataFile] = (),
        data_change: bool = True,
    ) -> int:
        """Commit ``files`` on top of the version ``table`` holds; return the new version.

        ``mode`` is "append" or "overwrite". Raises CommitRace when another writer took that
        version (nothing was committed: re-read and retry)."""
        version = table.version() + 1
        props = CommitProperties(
            custom_metadata=metadata,
            max_commit_retries=0,
            app_transactions=[txn] if txn else None,
        )
        actions: list[AddAction | RemoveAction] = [_add(name, f, data_change) for f in files]
        now = _now_ms()
        base = table_prefix(name) + "/"
        for old in removes:
            actions.append(
                RemoveAction(old.key.removeprefix(base), data_change, now, size=old.size)
            )
        try:
            with _delta_errors(f"committing to table {name}"):
                table.create_write_transaction(
                    actions,
                    mode,
                    delta_schema(schema),
                    commit_properties=props,
                    post_commithook_properties=PostCommitHookProperties(create_checkpoint=True),
                )
        except _Race as exc:
            raise CommitRace(name) from exc
        return version

    def history(self, table: DeltaTable, limit: int | None = None) -> list[dict[str, Any]]:
        with _delta_errors("reading the table history"):
            return table.history(limit)

    def commit_info(self, name: str, version: int) -> dict[str, Any]:
        """The commitInfo of one version, read from its log file ({} when absent)."""
        try:
            raw = self.storage.read_bytes(log_key(name, version))
        except NotFound:
            return {}
        for line in raw.splitlines():
            if line.strip():
                action = json.loads(line)
                if "commitInfo" in action:
                    info: dict[str, Any] = action["commitInfo"]
                    return info
        return {}

    def at_version(self, name: str, version: int) -> Snapshot:
        """The snapshot of ``name`` at ``version``; NotFound when it never existed or its
        files were vacuumed."""
        table = self._load_old(name, version)
        return self.snapshot(table, name)

    def at_timestamp(self, name: str, when: datetime) -> Snapshot:
        """The snapshot of ``name`` as of ``when``: the last version whose commit time (the
        commitInfo timestamp, not the store's object time) is at or before it."""
        table = self.open(name)
        if table is None:
            raise NotFound(f"dataset {name!r} not found")
        moment = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000
        history = self.history(table)
        versions = [int(h["version"]) for h in history if int(h.get("timestamp", 0)) <= moment]
        if not versions:
            raise NotFound(f"dataset {name!r} has no version at or before {when.isoformat()}")
        return self.at_version(name, max(versions))

    def _load_old(self, name: str, version: int) -> DeltaTable:
        table = self.open(name)
        if table is None:
            raise NotFound(f"dataset {name!r} not found")
        if version < 0 or version > table.version():
            raise NotFound(f"dataset {name!r} has no version {version}")
        if version == table.version():
            return table
        try:
            with _delta_errors(f"reading table {name}"):
                table.load_as_version(version)
        except (NotFound, StorageError, DeltaError) as exc:
            raise NotFound(
                f"dataset {name!r}: version {version} is no longer available (vacuumed)"
            ) from exc
        return table

    def vacuum(
        self, table: DeltaTable, name: str, retention_hours: float, dry_run: bool = False
    ) -> list[str]:
        """Delete files that no version within the retention needs; return their keys."""
        with _delta_errors("vacuuming"):
            gone = table.vacuum(
                retention_hours=max(0, math.ceil(retention_hours)),
                dry_run=dry_run,
                enforce_retention_duration=False,
            )
        return [f"{table_prefix(name)}/{path}" for path in gone]  # paths relative to the table

    def probe(self, name: str, version: int) -> str:
        """Cheap check of a table loaded at ``version``: "same", "moved" (a newer commit
        exists) or "gone" (its log is deleted: dropped). One LIST request on S3, two stats
        on local disk."""
        if not self.storage.is_s3:
            if self.storage.exists(log_key(name, version + 1)):
                return "moved"
            return "same" if self.storage.exists(log_key(name, version)) else "gone"
        folder = f"{table_prefix(name)}/{LOG_DIR}/"
        keys = self.storage.list_after(folder, f"{folder}{version:020d}", 3)
        versions = {
            int(k[len(folder) : len(folder) + 20])
            for k in keys
            if k.endswith(".json") and k[len(folder) : len(folder) + 20].isdigit()
        }
        if any(v > version for v in versions):
            return "moved"
        return "same" if version in versions else "gone"

    def exists(self, name: str) -> bool:
        """Whether a table (any commit) is at ``data/NAME``."""
        folder = f"{table_prefix(name)}/{LOG_DIR}/"
        return bool(self.storage.list_after(folder, folder, 1))

    def names(self, limit: int) -> Iterator[str]:
        """Folder names under ``data/`` (candidate tables), sorted, at most ``limit``."""
        return iter(self.storage.folders(DATA_PREFIX, limit))


def _add(name: str, f: NewFile, data_change: bool = True) -> AddAction:
    base = table_prefix(name) + "/"
    return AddAction(f.key.removeprefix(base), f.size, {}, f.mtime_ms, data_change, f.stats)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


class _Race(Exception):
    pass


class _AlreadyExists(Exception):
    pass


@contextlib.contextmanager
def _delta_errors(what: str) -> Iterator[None]:
    """Translate delta-rs errors raised inside the block: version races, missing tables,
    store failures."""
    try:
        yield
    except (InvalidInput, NotFound, StorageError):
        raise
    except CommitFailedError as exc:
        raise _Race(str(exc).split("\n", 1)[0]) from exc
    except Exception as exc:
        text = str(exc).split("\n", 1)[0]
        lowered = text.lower()
        if isinstance(exc, TableNotFoundError) or "no log files" in lowered:
            raise NotFound(f"{what}: no table") from exc
        if "already exists" in lowered:
            raise _AlreadyExists(text) from exc
        if "version" in lowered and ("not" in lowered or "invalid" in lowered):
            raise NotFound(f"{what}: {text}") from exc
        if isinstance(exc, DeltaError | OSError) or type(exc).__name__.endswith("Error"):
            raise StorageError(f"{what}: {text}") from exc
        raise


def _storage_options(storage: Storage) -> dict[str, str]:
    """delta-rs object-store options for this storage (S3: endpoint, region, keys)."""
    if not storage.is_s3:
        return {}
    settings = storage.settings
    creds = settings.credentials
    # bounded like the rest of the storage layer (the s3_* timeout settings): an
    # unreachable or frozen store fails in seconds
    options = {"AWS_REGION": settings.s3_region, **storage.object_store_bounds()}
    if settings.s3_endpoint:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint
        if settings.s3_endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    if creds:
        options["AWS_ACCESS_KEY_ID"] = creds.access_key_id
        options["AWS_SECRET_ACCESS_KEY"] = creds.secret_access_key
        if creds.session_token:
            options["AWS_SESSION_TOKEN"] = creds.session_token
    return options


def idempotency_txn(key: str, version: int) -> Transaction:
    """The Delta ``txn`` action recording an idempotency key (app id derived from the key)."""
    return Transaction(txn_app_id(key), version, _now_ms())


def txn_app_id(key: str) -> str:
    import hashlib

    return TXN_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def replayed_version(table: DeltaTable, key: str) -> int | None:
    """The version that committed ``key`` on this table, or None."""
    with _delta_errors("reading the table transactions"):
        found = table.transaction_version(txn_app_id(key))
    return None if found is None else int(found)
