"""Storage contract tests: the same behaviour on a local folder and on real S3."""

from __future__ import annotations

import pytest

from flightlake.errors import InvalidInput, NotFound, StorageError
from flightlake.storage import Storage, validate_key
from tests.servers import make_settings


@pytest.fixture
def storage(storage_url: str, request: pytest.FixtureRequest) -> Storage:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    return Storage(make_settings(storage_url, s3))


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("a" * 1025, "longer than 1024"),
        ("a\x00b", "NUL"),
        ("/abs", "starts with '/'"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a\nb", "CR, LF or TAB"),
        ("a\rb", "CR, LF or TAB"),
        ("a\tb", "CR, LF or TAB"),
    ],
)
def test_bad_keys_are_rejected_naming_the_problem(key: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem.replace("(", r"\(")):
        validate_key(key)


def test_good_keys_pass() -> None:
    assert validate_key("data/x/y.parquet") == "data/x/y.parquet"
    assert validate_key("a" * 1024) == "a" * 1024
    assert validate_key("a..b/c") == "a..b/c"


def test_write_read_list_delete(storage: Storage) -> None:
    with storage.open_output("data/t/one.bin") as out:
        out.write(b"hello")
    assert storage.read_bytes("data/t/one.bin") == b"hello"
    assert storage.size("data/t/one.bin") == 5
    listed = {o.key: o.size for o in storage.list("data")}
    assert listed == {"data/t/one.bin": 5}
    storage.delete(["data/t/one.bin", "data/t/missing.bin"])
    assert list(storage.list("data")) == []


def test_read_missing_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        storage.read_bytes("nothing/here")


def test_put_if_absent_only_writes_once(storage: Storage) -> None:
    assert storage.put_if_absent("_catalog/x/v0000000001.json", b"first") is True
    assert storage.put_if_absent("_catalog/x/v0000000001.json", b"second") is False
    assert storage.read_bytes("_catalog/x/v0000000001.json") == b"first"


def test_list_of_missing_prefix_is_empty(storage: Storage) -> None:
    assert list(storage.list("nope")) == []


def test_url_points_into_the_root(storage: Storage, storage_url: str) -> None:
    url = storage.url("data/t/a.parquet")
    assert url.endswith("/data/t/a.parquet")
    assert url.startswith("s3://" if storage_url.startswith("s3://") else "/")


def test_unreachable_store_is_a_storage_error() -> None:
    from flightlake.config import Settings
    from flightlake.secrets import Credentials
    from tests.helpers import free_port

    settings = Settings(
        storage="s3://nobucket/lake",
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        credentials=Credentials("k", "s"),
    )
    with pytest.raises(StorageError, match="object store error"):
        Storage(settings).read_bytes("x")
