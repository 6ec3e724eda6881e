"""Carrying a 0.1 lake over to Delta Lake tables, at start.

0.1 kept one JSON manifest per dataset version under ``_catalog/NAME/v<N>.json`` and the
Parquet objects under ``data/NAME/``, which is already the Delta table folder of NAME. So a
dataset is carried over by committing its head manifest's objects as the add actions of a
new table (version 0, commitInfo ``flightlake.migratedFrom`` = the 0.1 version), and only
then, once that commit is durable, deleting its ``_catalog/NAME/`` manifests. A dropped
dataset (tombstone head) just loses its manifests. A crash anywhere leaves either the
manifests (the next start migrates again) or the table (the next start sees it and deletes
the remaining manifests): nothing is lost and nothing is done twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time

import pyarrow.parquet as pq

from flightlake import delta
from flightlake.catalog import CATALOG_PREFIX, Manifest, manifest_key, validate_name
from flightlake.delta import NewFile, Tables
from flightlake.errors import FlightlakeError
from flightlake.storage import Storage

log = logging.getLogger("flightlake.migrate")

_VERSION_RE = re.compile(r"v(\d{10})\.json")


def migrate_v01(storage: Storage, tables: Tables) -> list[str]:
    """Migrate every 0.1 dataset found under ``_catalog/``; return warnings for datasets
    left as they were (unreadable manifests, missing objects, store errors)."""
    versions: dict[str, list[int]] = {}
    for obj in storage.list(CATALOG_PREFIX):
        parts = obj.key.split("/")
        match = _VERSION_RE.fullmatch(parts[-1]) if len(parts) == 3 else None
        if match:
            versions.setdefault(parts[1], []).append(int(match.group(1)))
    warnings: list[str] = []
    for name, nums in sorted(versions.items()):
        try:
            validate_name(name)
            _migrate(storage, tables, name, sorted(nums))
        except (FlightlakeError, ValueError, KeyError, TypeError) as exc:
            msg = f"0.1 dataset {name!r} not migrated (will retry at the next start): {exc}"
            log.warning(msg)
            warnings.append(msg)
    return warnings


def _migrate(storage: Storage, tables: Tables, name: str, nums: list[int]) -> None:
    head = _newest_readable(storage, name, nums)
    keys = [manifest_key(name, n) for n in nums]
    if head is None:
        raise ValueError("no readable manifest")
    if head.dropped:
        storage.delete(keys)
        log.info("0.1 dataset %s was dropped: removed its manifests", name)
        return
    if not tables.exists(name):
        files = [_new_file(storage, key) for key in head.objects]
        meta = {
            delta.MIGRATED_FROM: head.version,
            delta.ROWS_ADDED: head.row_count,
            delta.ROWS_TOTAL: head.row_count,
        }
        with contextlib.suppress(delta.TableExists):  # another server migrated it meanwhile
            tables.create(name, head.schema, files, meta)
        log.info("migrated 0.1 dataset %s (v%d, %d rows)", name, head.version, head.row_count)
    storage.delete(keys)  # only after the table's first commit is durable


def _newest_readable(storage: Storage, name: str, nums: list[int]) -> Manifest | None:
    for version in sorted(nums, reverse=True):
        try:
            manifest = Manifest.from_json(
                json.loads(storage.read_bytes(manifest_key(name, version)))
            )
            if manifest.name == name and manifest.version == version:
                if not manifest.dropped:
                    manifest.schema  # noqa: B018 - decode once to reject garbage
                return manifest
        except (ValueError, KeyError, TypeError, FlightlakeError) as exc:
            log.warning("skipping unreadable 0.1 manifest %s: %s", manifest_key(name, version), exc)
    return None


def _new_file(storage: Storage, key: str) -> NewFile:
    with storage.open_input(key) as handle:
        metadata = pq.ParquetFile(handle).metadata
        schema = metadata.schema.to_arrow_schema()
    stats = delta.file_stats(metadata, schema)
    return NewFile(key, storage.size(key), int(metadata.num_rows), stats, int(time.time() * 1000))
