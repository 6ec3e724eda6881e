"""A lake written by 0.1 (tests/fixtures/lake_v01, made by the 0.1 code path) is carried over
to Delta Lake tables at start, on local disk and S3: rows, schemas and the latest overwrite
kept, dropped datasets stay gone, old manifests removed only after the commit, resumable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from flightlake.errors import NotFound, StorageError
from flightlake.lake import Lake
from tests.servers import make_settings

FIXTURE = Path(__file__).parent / "fixtures" / "lake_v01"


def copy_fixture(lake_url: str, s3, only: str = "") -> None:
    """Copy the 0.1 lake (or only its files under ``only``) to ``lake_url``."""
    for path in sorted(FIXTURE.rglob("*")):
        key = path.relative_to(FIXTURE).as_posix()
        if not path.is_file() or not key.startswith(only):
            continue
        if lake_url.startswith("s3://"):
            bucket, _, prefix = lake_url.removeprefix("s3://").partition("/")
            s3.client().put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=path.read_bytes())
        else:
            target = Path(lake_url) / key
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


@pytest.fixture
def old_lake(storage_url: str, request: pytest.FixtureRequest) -> tuple[str, object]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    copy_fixture(storage_url, s3)
    return storage_url, s3


def rows(lake: Lake, sql: str) -> list[dict]:
    return lake.query(sql).read_all().to_pylist()


def check_migrated(lake: Lake) -> None:
    assert [m.name for m in lake.datasets()] == ["empty", "keep", "replaced"]
    assert rows(lake, "SELECT count(*) AS n, sum(id) AS s FROM keep") == [{"n": 20, "s": 190}]
    assert lake.dataset("keep").schema == pa.schema([("id", pa.int64()), ("name", pa.string())])
    assert rows(lake, "SELECT * FROM replaced") == [{"c": 3.5}]
    assert rows(lake, "SELECT count(*) AS n FROM empty") == [{"n": 0}]
    assert lake.dataset("empty").schema.names == ["a", "b"]
    with pytest.raises(NotFound):
        lake.dataset("gone")
    assert list(lake.storage.list("_catalog")) == []
    assert lake.versions("keep")[0]["rows_total"] == 20


def test_v01_lake_is_migrated_at_start(old_lake) -> None:
    url, s3 = old_lake
    lake = Lake(make_settings(url, s3))
    try:
        assert lake.load_warnings == []
        check_migrated(lake)
        lake.ingest_arrow(
            "keep",
            pa.schema([("id", pa.int64()), ("name", pa.string())]),
            pa.table({"id": [100], "name": ["new"]}).to_batches(),
        )
        assert rows(lake, "SELECT count(*) AS n FROM keep") == [{"n": 21}]
    finally:
        lake.close()
    again = Lake(make_settings(url, s3))  # a second start has nothing to do
    try:
        assert rows(again, "SELECT count(*) AS n FROM keep") == [{"n": 21}]
        assert again.dataset("keep").version == 1
    finally:
        again.close()


def start(url: str, s3) -> Lake:
    return Lake(make_settings(url, s3))


def test_crash_between_commit_and_manifest_removal_resumes(old_lake) -> None:
    """A start that died after committing the tables but before deleting the manifests:
    the next start sees the tables, deletes the manifests, and doubles no row."""
    url, s3 = old_lake
    start(url, s3).close()
    copy_fixture(url, s3, only="_catalog/")  # as the crash would have left them
    lake = start(url, s3)
    try:
        assert lake.load_warnings == []
        check_migrated(lake)
    finally:
        lake.close()


def test_crash_before_a_commit_keeps_the_manifests_and_resumes(
    old_lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store failure while committing one dataset's table: that dataset keeps its 0.1
    manifests (a warning says so), the others are carried over; the next start finishes."""
    url, s3 = old_lake
    from flightlake import delta

    real_create = delta.Tables.create

    def failing_create(self, name, *args, **kwargs):
        if name == "replaced":
            raise StorageError("store went away mid-migration")
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(delta.Tables, "create", failing_create)
    lake = start(url, s3)
    try:
        assert len(lake.load_warnings) == 1
        assert "'replaced' not migrated" in lake.load_warnings[0]
        assert {o.key.split("/")[1] for o in lake.storage.list("_catalog")} == {"replaced"}
        assert [m.name for m in lake.datasets()] == ["empty", "keep"]
    finally:
        lake.close()
    monkeypatch.setattr(delta.Tables, "create", real_create)
    lake = start(url, s3)
    try:
        assert lake.load_warnings == []
        check_migrated(lake)
    finally:
        lake.close()
