"""The catalog: one manifest per dataset version, stored in the object store under
``_catalog/<name>/v<version>.json``.

A version is committed by writing its manifest with a conditional put (only if absent), after
every Parquet object it names is written. So a version is visible only once complete, and two
writers (threads or processes) can never both commit the same version: the loser sees the
conflict, re-reads the head and retries (append) or fails clearly.

A dropped dataset is a tombstone version (``"dropped": true``). At start the head of every
dataset is read back; a torn or garbage manifest is reported and skipped, never fatal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from flightlake.errors import Conflict, InvalidInput, NotFound
from flightlake.storage import Storage, validate_key

log = logging.getLogger("flightlake.catalog")

CATALOG_PREFIX = "_catalog"
DATA_PREFIX = "data"
MAX_NAME_CHARS = 128
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
_VERSION_RE = re.compile(r"v(\d{10})\.json")
KEEP_MANIFEST_VERSIONS = 3
COMMIT_ATTEMPTS = 8


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name, else raise InvalidInput naming why."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("dataset name is empty")
    validate_key(name)  # names the NUL / '..' / CR-LF-TAB / length problems precisely
    if "/" in name:
        raise InvalidInput(f"dataset name {name!r} contains '/'")
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


@dataclass(frozen=True)
class Manifest:
    """One committed version of one dataset."""

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
        )

    @staticmethod
    def encode_schema(schema: pa.Schema) -> str:
        return base64.b64encode(schema.serialize().to_pybytes()).decode()


@dataclass(frozen=True)
class NewObjects:
    """Parquet objects an ingest wrote, ready to be committed."""

    schema: pa.Schema
    keys: tuple[str, ...]
    rows: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def row_count(self) -> int:
        return sum(self.rows)


def manifest_key(name: str, version: int) -> str:
    return f"{CATALOG_PREFIX}/{name}/v{version:010d}.json"


class Catalog:
    """The latest manifest of every dataset, cached in memory, committed to the store."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._heads: dict[str, Manifest] = {}  # name -> latest valid manifest (maybe dropped)
        self._head_version: dict[str, int] = {}  # name -> highest version number seen
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.listeners: list[Callable[[Manifest], None]] = []

    # -- loading -------------------------------------------------------------------------
    def load(self) -> list[str]:
        """Read every dataset's head from the store; return warnings for skipped manifests."""
        warnings: list[str] = []
        heads: dict[str, Manifest] = {}
        head_versions: dict[str, int] = {}
        for name, nums in self._versions(CATALOG_PREFIX).items():
            head_versions[name] = max(nums)
            manifest = self._newest_readable(name, nums, warnings)
            if manifest is not None:
                heads[name] = manifest
        with self._guard:
            self._heads = heads
            self._head_version = head_versions
        return warnings

    def _versions(self, prefix: str) -> dict[str, list[int]]:
        """The manifest version numbers under ``prefix``, by dataset name."""
        versions: dict[str, list[int]] = {}
        for obj in self.storage.list(prefix):
            parts = obj.key.split("/")
            match = _VERSION_RE.fullmatch(parts[-1]) if len(parts) == 3 else None
            if match:
                versions.setdefault(parts[1], []).append(int(match.group(1)))
        return versions

    def _newest_readable(
        self, name: str, nums: list[int], warnings: list[str] | None = None
    ) -> Manifest | None:
        """The newest of these versions that reads back; skipped ones are logged into
        ``warnings`` when given."""
        for version in sorted(nums, reverse=True):
            try:
                return self._read(name, version)
            except (ValueError, KeyError, TypeError, InvalidInput, NotFound) as exc:
                if warnings is not None:
                    msg = f"skipping unreadable manifest {manifest_key(name, version)}: {exc}"
                    log.warning(msg)
                    warnings.append(msg)
        return None

    def _read(self, name: str, version: int) -> Manifest:
        raw = self.storage.read_bytes(manifest_key(name, version))
        manifest = Manifest.from_json(json.loads(raw))
        if manifest.name != name or manifest.version != version:
            raise ValueError("manifest name/version do not match its key")
        if not manifest.dropped:
            manifest.schema  # noqa: B018 - decode once to reject garbage early
        return manifest

    def _reload_head(self, name: str) -> None:
        """Re-read one dataset's head from the store (after losing a commit race)."""
        nums = self._versions(f"{CATALOG_PREFIX}/{name}").get(name, [])
        if not nums:
            return
        manifest = self._newest_readable(name, nums)
        with self._guard:
            self._head_version[name] = max(nums)
            if manifest is not None:
                self._heads[name] = manifest

    # -- reading -------------------------------------------------------------------------
    def get(self, name: str) -> Manifest:
        validate_name(name)
        with self._guard:
            manifest = self._heads.get(name)
        if manifest is None or manifest.dropped:
            raise NotFound(f"dataset {name!r} not found")
        return manifest

    def find(self, name: str) -> Manifest | None:
        with self._guard:
            manifest = self._heads.get(name)
        return None if manifest is None or manifest.dropped else manifest

    def list(self, limit: int | None = None) -> list[Manifest]:
        with self._guard:
            live = sorted((m for m in self._heads.values() if not m.dropped), key=lambda m: m.name)
        return live[:limit] if limit is not None else live

    def referenced_keys(self) -> set[str]:
        with self._guard:
            return {k for m in self._heads.values() if not m.dropped for k in m.objects}

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    # -- committing ----------------------------------------------------------------------
    def commit(
        self, name: str, build: Callable[[Manifest | None], Manifest | None]
    ) -> Manifest | None:
        """Commit the manifest ``build(head)`` returns as the next version of ``name``.

        ``build`` gets the current head (None when the dataset is new or dropped) and returns
        the new manifest without version (it is set here), or None for nothing to commit.
        It may raise Conflict. Within this process commits of one dataset are serialized;
        a race lost to another process re-reads the head and calls ``build`` again.
        """
        validate_name(name)
        with self.lock(name):
            for _attempt in range(COMMIT_ATTEMPTS):
                self._check_case_collision(name)
                head = self.find(name)
                proposed = build(head)
                if proposed is None:
                    return head
                with self._guard:
                    version = self._head_version.get(name, 0) + 1
                now = now_iso()
                manifest = replace(proposed, version=version, updated_at=now)
                body = json.dumps(manifest.to_json(), indent=1).encode()
                if self.storage.put_if_absent(manifest_key(name, version), body):
                    with self._guard:
                        self._heads[name] = manifest
                        self._head_version[name] = version
                    self._prune(name, version)
                    for listener in self.listeners:
                        listener(manifest)
                    return manifest
                log.info("commit of %s v%d lost a race; re-reading the head", name, version)
                self._reload_head(name)
            raise Conflict(
                f"dataset {name!r}: could not commit after {COMMIT_ATTEMPTS} attempts, "
                "other writers keep committing; retry"
            )

    def _check_case_collision(self, name: str) -> None:
        with self._guard:
            others = [
                n
                for n, m in self._heads.items()
                if not m.dropped and n != name and n.lower() == name.lower()
            ]
        if others:
            raise Conflict(f"dataset {name!r} differs only in case from existing {others[0]!r}")

    def _prune(self, name: str, version: int) -> None:
        """Delete manifests older than the last few versions (best effort)."""
        old = version - KEEP_MANIFEST_VERSIONS
        if old >= 1:
            try:
                self.storage.delete([manifest_key(name, old)])
            except Exception as exc:  # pruning is housekeeping, never fatal
                log.warning("could not prune %s: %s", manifest_key(name, old), exc)


def new_manifest(
    name: str,
    head: Manifest | None,
    schema: pa.Schema,
    keys: tuple[str, ...],
    rows: tuple[int, ...],
    sizes: tuple[int, ...],
) -> Manifest:
    """A manifest (version unset) for ``name`` holding exactly these objects."""
    created = head.created_at if head is not None else now_iso()
    return Manifest(
        dataset_id=head.dataset_id if head is not None else uuid.uuid4().hex,
        name=name,
        version=0,
        schema_fingerprint=schema_fingerprint(schema),
        objects=keys,
        row_count=sum(rows),
        total_bytes=sum(sizes),
        created_at=created,
        updated_at=created,
        schema_b64=Manifest.encode_schema(schema),
        object_rows=rows,
        object_bytes=sizes,
    )


def tombstone(head: Manifest) -> Manifest:
    return replace(
        head, objects=(), object_rows=(), object_bytes=(), row_count=0, total_bytes=0, dropped=True
    )
