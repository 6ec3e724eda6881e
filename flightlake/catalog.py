"""The catalog: names, manifests and commits, on the Delta Lake tables under ``data/``.

Every dataset NAME is the Delta table ``data/NAME/`` (see delta.py, the only module that
talks Delta). A version is committed by delta-rs's put-if-absent of ``_delta_log/<N>.json``
after every Parquet file it adds is written, so a version is visible only once complete and
two writers (threads or processes) never both commit the same version: the loser re-reads
the table and retries (append) or fails clearly (create, overwrite).

Freshness: each dataset remembers when it was last checked against the store; a lookup
older than ``freshness_seconds`` costs one probe of ``_delta_log/<N+1>.json`` (a stat, or one
LIST on S3) and reloads the table only when it moved. Commits made here are seen at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from flightlake import delta
from flightlake.delta import DATA_PREFIX, DataFile, NewFile, Snapshot, Tables
from flightlake.errors import Conflict, FlightlakeError, InvalidInput, NotFound, StorageError
from flightlake.fidelity import as_stored
from flightlake.storage import Storage, validate_key

log = logging.getLogger("flightlake.catalog")

CATALOG_PREFIX = "_catalog"  # where 0.1 kept its manifests (migrated at start)
MAX_NAME_CHARS = 128
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
_VERSION_RE = re.compile(r"v(\d{10})\.json")
COMMIT_ATTEMPTS = 20
MAX_MISSING = 4096  # names remembered as "no such table" (bounded: clients choose names)
MAX_KEY_CHARS = 128
_Files = list[NewFile]  # (Catalog has a method named list)
_Commits = list[dict[str, Any]]

__all__ = ["DATA_PREFIX", "Catalog", "Manifest", "NewObjects", "validate_name"]


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name, else raise InvalidInput naming why."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("dataset name is empty")
    try:
        validate_key(name)  # names the NUL / '..' / CR-LF-TAB / length problems precisely
    except InvalidInput as exc:  # said of the name, not of a storage key
        problem = str(exc).removeprefix("storage key ")
        raise InvalidInput(f"invalid dataset name {name[:64]!r}: it {problem}") from None
    if "/" in name:
        raise InvalidInput(f"invalid dataset name {name!r}: it contains '/'")
    if len(name) > MAX_NAME_CHARS or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid dataset name {name!r}: use letters, digits, '_' and '-' "
            f"(at most {MAX_NAME_CHARS}), starting with a letter, digit or '_'"
        )
    return name


def schema_columns(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def schema_fingerprint(schema: pa.Schema) -> str:
    """A stable hash of column names and types (nullability and metadata ignored)."""
    text = json.dumps(schema_columns(schema), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def schema_difference(old: pa.Schema, new: pa.Schema) -> str:
    """Describe, column by column, how ``new`` differs from ``old``."""
    parts: list[str] = []
    old_types = {f.name: f.type for f in old}
    new_types = {f.name: f.type for f in new}
    missing = [n for n in old.names if n not in new_types]
    extra = [n for n in new.names if n not in old_types]
    changed = [
        f"{n} ({old_types[n]} -> {new_types[n]})"
        for n in old.names
        if n in new_types and old_types[n] != new_types[n]
    ]
    if missing:
        parts.append("missing columns: " + ", ".join(missing))
    if extra:
        parts.append("new columns: " + ", ".join(extra))
    if changed:
        parts.append("changed types: " + ", ".join(changed))
    if not parts and old.names != new.names:
        parts.append("column order differs: " + ", ".join(new.names))
    return "; ".join(parts) or "schemas differ"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_iso(ms: int) -> str:
    """A Unix time in milliseconds as an ISO 8601 UTC string."""
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_idempotency_key(key: str) -> str:
    """Return ``key`` if it is 1 to 128 printable ASCII characters, else raise InvalidInput."""
    if not isinstance(key, str) or not key:
        raise InvalidInput("idempotency key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(f"idempotency key is longer than {MAX_KEY_CHARS} characters")
    if not all(" " <= c <= "~" for c in key):
        raise InvalidInput("idempotency key must be printable ASCII characters")
    return key


@dataclass(frozen=True)
class Manifest:
    """One committed version of one dataset (its Delta table at ``version``).

    ``objects`` are the live Parquet files (keys under the storage root), ``location`` the
    table's URI, ``version`` its Delta version."""

    dataset_id: str
    name: str
    version: int
    schema_fingerprint: str
    objects: tuple[str, ...]
    row_count: int
    total_bytes: int
    created_at: str
    updated_at: str
    schema_b64: str = field(repr=False, default="")
    object_rows: tuple[int, ...] = ()
    object_bytes: tuple[int, ...] = ()
    dropped: bool = False
    location: str = ""

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_b64)))

    def to_json(self) -> dict[str, Any]:
        """The public manifest shape (HTTP, CLI, the manifest file itself)."""
        doc = asdict(self)
        doc["objects"] = list(self.objects)
        doc["object_rows"] = list(self.object_rows)
        doc["object_bytes"] = list(self.object_bytes)
        doc["columns"] = schema_columns(self.schema) if self.schema_b64 else []
        doc.pop("schema_b64")
        doc["schema"] = self.schema_b64
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        return cls(
            dataset_id=str(doc["dataset_id"]),
            name=str(doc["name"]),
            version=int(doc["version"]),
            schema_fingerprint=str(doc["schema_fingerprint"]),
            objects=tuple(str(k) for k in doc["objects"]),
            row_count=int(doc["row_count"]),
            total_bytes=int(doc["total_bytes"]),
            created_at=str(doc["created_at"]),
            updated_at=str(doc["updated_at"]),
            schema_b64=str(doc.get("schema", "")),
            object_rows=tuple(int(n) for n in doc.get("object_rows", [])),
            object_bytes=tuple(int(n) for n in doc.get("object_bytes", [])),
            dropped=bool(doc.get("dropped", False)),
            location=str(doc.get("location", "")),
        )

    @staticmethod
    def encode_schema(schema: pa.Schema) -> str:
        return base64.b64encode(schema.serialize().to_pybytes()).decode()


@dataclass(frozen=True)
class NewObjects:
    """Parquet objects an ingest wrote, ready to be committed: keys under the storage root,
    rows and bytes of each, and each file's Delta stats JSON (from its Parquet footer)."""

    schema: pa.Schema
    keys: tuple[str, ...]
    rows: tuple[int, ...]
    sizes: tuple[int, ...]
    stats: tuple[str, ...] = ()

    @property
    def row_count(self) -> int:
        return sum(self.rows)

    def files(self) -> list[NewFile]:
        now = int(time.time() * 1000)
        stats = self.stats or tuple(json.dumps({"numRecords": n}) for n in self.rows)
        return [
            NewFile(k, s, r, st, now)
            for k, s, r, st in zip(self.keys, self.sizes, self.rows, stats, strict=True)
        ]


@dataclass(frozen=True)
class Committed:
    """What one commit did: the dataset's manifest after it, the version holding its rows,
    and whether it was a replay of an idempotency key committed before."""

    manifest: Manifest
    version: int
    rows_written: int
    replayed: bool = False


def manifest_key(name: str, version: int) -> str:
    """Where 0.1 kept manifest ``version`` of ``name``."""
    return f"{CATALOG_PREFIX}/{name}/v{version:010d}.json"


def to_manifest(name: str, snap: Snapshot, location: str) -> Manifest:
    files = snap.files
    created = ms_iso(snap.created_ms) if snap.created_ms else now_iso()
    return Manifest(
        dataset_id=snap.table_id,
        name=name,
        version=snap.version,
        schema_fingerprint=schema_fingerprint(snap.schema),
        objects=tuple(f.key for f in files),
        row_count=sum(f.rows for f in files),
        total_bytes=sum(f.size for f in files),
        created_at=created,
        updated_at=ms_iso(snap.committed_ms) if snap.committed_ms else created,
        schema_b64=Manifest.encode_schema(snap.schema),
        object_rows=tuple(f.rows for f in files),
        object_bytes=tuple(f.size for f in files),
        location=location,
    )


@dataclass
class _Entry:
    table: Any  # the dataset's deltalake.DeltaTable (opaque outside delta.py)
    manifest: Manifest
    checked: float  # time.monotonic() of the last look at the store


class Catalog:
    """Every dataset's latest manifest, cached in memory and kept fresh from the store."""

    def __init__(
        self, storage: Storage, freshness_seconds: float = 1.0, max_list: int = 10_000
    ) -> None:
        self.storage = storage
        self.tables = Tables(storage)
        self.freshness = max(0.0, freshness_seconds)
        self.max_list = max_list
        self._entries: dict[str, _Entry] = {}
        self._missing: dict[str, float] = {}  # name -> when it was checked absent
        self._listed = float("-inf")
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        #: called with each new manifest of a dataset (a ``dropped`` one when it vanished)
        self.listeners: list[Callable[[Manifest], None]] = []

    # -- loading -------------------------------------------------------------------------
    def load(self) -> list[str]:
        """Read every table under ``data/`` from the store; return warnings for tables that
        cannot be read (reported and skipped, never fatal)."""
        warnings: list[str] = []
        names = list(self.tables.names(self.max_list))
        found: dict[str, _Entry] = {}
        for name in names:
            try:
                validate_name(name)
            except InvalidInput:
                continue
            try:
                entry = self._open(name)
            except FlightlakeError as exc:
                msg = f"skipping unreadable table {DATA_PREFIX}/{name}: {exc}"
                log.warning(msg)
                warnings.append(msg)
                continue
            if entry is not None:
                found[name] = entry
        with self._guard:
            before = self._entries
            self._entries = found
            self._missing.clear()
            self._listed = time.monotonic()
        for name, entry in found.items():
            old = before.get(name)
            if old is None or old.manifest.version != entry.manifest.version:
                self._notify(entry.manifest)
        for name in before.keys() - found.keys():
            self._notify(_tombstone(before[name].manifest))
        return warnings

    def _open(self, name: str) -> _Entry | None:
        table = self.tables.open(name)
        if table is None:
            return None
        snap = self.tables.snapshot(table, name)
        return _Entry(table, to_manifest(name, snap, self.tables.uri(name)), time.monotonic())

    # -- freshness -----------------------------------------------------------------------
    def _fresh(self, name: str, force: bool = False) -> _Entry | None:
        """The entry of ``name``, checked against the store when older than the freshness
        bound (or ``force``)."""
        now = time.monotonic()
        with self._guard:
            entry = self._entries.get(name)
            missing_since = self._missing.get(name)
        if not force:
            if entry is not None and now - entry.checked < self.freshness:
                return entry
            if entry is None and missing_since is not None and now - missing_since < self.freshness:
                return None
        # one thread at a time uses a dataset's DeltaTable (delta-rs objects are not shared
        # between threads); the lock is re-entrant for the commit path
        with self.lock(name):
            return self._check(name, force, now)

    def _check(self, name: str, force: bool, now: float) -> _Entry | None:
        with self._guard:
            entry = self._entries.get(name)
        if entry is not None and not force and now - entry.checked < self.freshness:
            return entry  # another thread checked it meanwhile
        if entry is None:
            return self._discover(name, now)
        try:
            state = self.tables.probe(name, entry.manifest.version)
        except StorageError as exc:
            self.storage.note_failure(exc)  # callers that must read on ask failed_since()
            if force:
                raise
            log.warning("could not check %s for new commits (serving what is known): %s", name, exc)
            return entry
        if state == "same":
            entry.checked = now
            return entry
        if state == "gone":
            self._forget(name, entry)
            return None
        return self._reload(name, entry)

    def _discover(self, name: str, now: float) -> _Entry | None:
        entry = self._open(name) if self.tables.exists(name) else None
        with self._guard:
            if entry is None:
                if len(self._missing) >= MAX_MISSING:
                    self._missing.clear()
                self._missing[name] = now
                return None
            self._missing.pop(name, None)
            current = self._entries.get(name)
            if current is not None and current.manifest.version >= entry.manifest.version:
                return current
            self._entries[name] = entry
        self._notify(entry.manifest)
        return entry

    def _reload(self, name: str, entry: _Entry) -> _Entry | None:
        try:
            self.tables.update(entry.table)
            snap = self.tables.snapshot(entry.table, name)
        except NotFound:
            self._forget(name, entry)
            return None
        manifest = to_manifest(name, snap, self.tables.uri(name))
        if manifest.dataset_id != entry.manifest.dataset_id:
            # dropped and created again elsewhere: start from the new table
            fresh = self._open(name)
            if fresh is None:
                self._forget(name, entry)
            return None
            manifest, entry = fresh.manifest, fresh
        changed = manifest.version != entry.manifest.version or manifest is not entry.manifest
        entry.manifest = manifest
        entry.checked = time.monotonic()
        with self._guard:
            self._entries[name] = entry
        if changed:
            self._notify(manifest)
        return entry

    def _forget(self, name: str, entry: _Entry) -> None:
        with self._guard:
            if self._entries.get(name) is entry:
                del self._entries[name]
            self._missing[name] = time.monotonic()
        self._notify(_tombstone(entry.manifest))

    def _notify(self, manifest: Manifest) -> None:
        for listener in self.listeners:
            listener(manifest)

    def refresh_listing(self, force: bool = False) -> None:
        """Pick up tables created or dropped by other processes (at most once per freshness
        period unless ``force``): one bounded listing of ``data/`` plus one probe per
        dataset due for a check."""
        now = time.monotonic()
        with self._guard:
            due = force or now - self._listed >= self.freshness
            if due:
                self._listed = now
        if not due:
            return
        names = self.tables.names(self.max_list)
        with self._guard:
            known = set(self._entries)
        for name in names:
            if name in known:
                continue
            try:
                validate_name(name)
            except InvalidInput:
                continue
            try:
                self._fresh(name, force=True)
            except FlightlakeError as exc:
                log.warning("table %s/%s not readable: %s", DATA_PREFIX, name, exc)
        for name in known:
            try:
                self._fresh(name, force=force)
            except FlightlakeError as exc:
                log.warning("table %s/%s not readable: %s", DATA_PREFIX, name, exc)

    # -- reading -------------------------------------------------------------------------
    def get(self, name: str) -> Manifest:
        validate_name(name)
        manifest = self.find(name)
        if manifest is None:
            raise NotFound(f"dataset {name!r} not found")
        return manifest

    def find(self, name: str) -> Manifest | None:
        """The dataset's manifest, at most ``freshness_seconds`` old; None when unknown."""
        entry = self._fresh(name)
        return None if entry is None else entry.manifest

    def cached(self, name: str) -> Manifest | None:
        """The manifest as last seen, without asking the store."""
        with self._guard:
            entry = self._entries.get(name)
        return None if entry is None else entry.manifest

    def list(self, limit: int | None = None) -> list[Manifest]:
        """Known datasets by name (as last seen; ``refresh_listing`` brings them up to date)."""
        with self._guard:
            live = sorted((e.manifest for e in self._entries.values()), key=lambda m: m.name)
        return live[:limit] if limit is not None else live

    def history(self, name: str, limit: int | None = None) -> _Commits:
        """The dataset's commitInfos, newest first (NotFound when there is none)."""
        with self.lock(name):
            entry = self._fresh(name, force=True)
            if entry is None:
                raise NotFound(f"dataset {name!r} not found")
            return self.tables.history(entry.table, limit)

    def lock(self, name: str) -> threading.RLock:
        """The dataset's lock: held by commits and by whoever uses its DeltaTable."""
        with self._guard:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = threading.RLock()
            return lock

    # -- committing ----------------------------------------------------------------------
    def replay(self, name: str, key: str) -> Committed | None:
        """The first commit of idempotency ``key`` on ``name``, or None."""
        with self.lock(name):
            entry = self._fresh(name, force=True)
            return None if entry is None else self._replay(name, entry, key)

    def _replay(self, name: str, entry: _Entry, key: str) -> Committed | None:
        version = delta.replayed_version(entry.table, key)
        if version is None:
            return None
        info = self.tables.commit_info(name, version)
        rows = int(info.get(delta.ROWS_ADDED, 0) or 0)
        log.info("idempotency key replayed for %s: version %d", name, version)
        return Committed(entry.manifest, version, rows, replayed=True)

    def commit(self, name: str, mode: str, new: NewObjects, key: str | None = None) -> Committed:
        """Commit ``new`` to ``name`` as one version (mode append, overwrite or create).

        Append re-reads the table and retries when another writer took the version; create
        fails with Conflict when the table exists, overwrite when it lost a race. With an
        idempotency ``key`` already committed on this dataset nothing is committed and the
        first commit is answered (``replayed``)."""
        validate_name(name)
        files = new.files()
        schema = new.schema
        with self.lock(name):
            for _attempt in range(COMMIT_ATTEMPTS):
                self._check_case_collision(name)
                entry = self._fresh(name, force=True)
                if key is not None and entry is not None:
                    replayed = self._replay(name, entry, key)
                    if replayed is not None:
                        return replayed
                meta = {delta.ROWS_ADDED: new.row_count}
                if key is not None:
                    meta[delta.IDEMPOTENCY_KEY] = key  # type: ignore[assignment]
                try:
                    if entry is None:
                        meta[delta.ROWS_TOTAL] = new.row_count
                        txn = delta.idempotency_txn(key, 0) if key else None
                        self.tables.create(name, schema, files, meta, txn)
                        version = 0
                    else:
                        version = self._commit_on(entry, name, mode, new, files, meta, key)
                except (delta.CommitRace, delta.TableExists):
                    if mode == "overwrite" and entry is not None:
                        raise Conflict(
                            f"dataset {name!r} changed while overwriting it; nothing committed, "
                            "retry"
                        ) from None
                    log.info("commit to %s lost a race; re-reading the table", name)
                    continue
                after = self._fresh(name, force=True)
                if after is None:  # dropped right after our commit
                    raise Conflict(f"dataset {name!r} was dropped while committing; retry")
                return Committed(after.manifest, version, new.row_count)
            raise Conflict(
                f"dataset {name!r}: could not commit after {COMMIT_ATTEMPTS} attempts, "
                "other writers keep committing; retry"
            )

    def _commit_on(
        self,
        entry: _Entry,
        name: str,
        mode: str,
        new: NewObjects,
        files: _Files,
        meta: dict[str, Any],
        key: str | None,
    ) -> int:
        head = entry.manifest
        if mode == "create":
            raise Conflict(f"dataset {name!r} already exists (mode=create)")
        # datasets stored with older spellings (0.1's CSV timestamp[s], time32) compare by
        # today's spelling
        if mode == "append" and schema_fingerprint(as_stored(head.schema)) != schema_fingerprint(
            new.schema
        ):
            raise Conflict(
                f"schema conflict for dataset {name!r}: "
                f"{schema_difference(head.schema, new.schema)}"
            )
        version = head.version + 1
        meta[delta.ROWS_TOTAL] = new.row_count + (head.row_count if mode == "append" else 0)
        txn = delta.idempotency_txn(key, version) if key else None
        schema = head.schema if mode == "append" else new.schema
        return self.tables.commit(entry.table, name, mode, schema, files, meta, txn)

    def rewrite(
        self, name: str, removed: tuple[DataFile, ...], new: NewObjects, meta: dict[str, Any]
    ) -> int | None:
        """Replace ``removed`` files by ``new`` (same rows: compaction) in one commit that
        changes no data; retried over concurrent appends. None when one of ``removed`` is no
        longer live (an overwrite or another compaction won): nothing committed."""
        files = new.files()
        wanted = {f.key for f in removed}
        with self.lock(name):
            for _attempt in range(COMMIT_ATTEMPTS):
                entry = self._fresh(name, force=True)
                if entry is None or not wanted <= set(entry.manifest.objects):
                    return None
                if entry.manifest.schema_fingerprint != schema_fingerprint(new.schema):
                    return None
                try:
                    version = self.tables.commit(
                        entry.table,
                        name,
                        "append",
                        entry.manifest.schema,
                        files,
                        {**meta, delta.ROWS_ADDED: 0, delta.ROWS_TOTAL: entry.manifest.row_count},
                        removes=removed,
                        data_change=False,
                    )
                except delta.CommitRace:
                    continue
                self._fresh(name, force=True)
                return version
        return None

    def drop(self, name: str) -> Manifest:
        """Delete the table's log (so it vanishes for every server at its next check), then
        its data files. Returns the manifest it had."""
        validate_name(name)
        with self.lock(name):
            entry = self._fresh(name, force=True)
            if entry is None:
                raise NotFound(f"dataset {name!r} not found")
            folder = f"{delta.table_prefix(name)}/{delta.LOG_DIR}"
            for _round in range(3):  # a commit racing the delete lands after the listing
                keys = sorted((o.key for o in self.storage.list(folder)), reverse=True)
                if not keys:
                    break
                self.storage.delete(keys)
            self._forget(name, entry)
            return entry.manifest

    def _check_case_collision(self, name: str) -> None:
        with self._guard:
            others = [n for n in self._entries if n != name and n.lower() == name.lower()]
        if others:
            raise Conflict(f"dataset {name!r} differs only in case from existing {others[0]!r}")


def _tombstone(manifest: Manifest) -> Manifest:
    return Manifest(
        **{
            **asdict(manifest),
            "objects": (),
            "object_rows": (),
            "object_bytes": (),
            "row_count": 0,
            "total_bytes": 0,
            "dropped": True,
        }
    )
