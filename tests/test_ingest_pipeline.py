"""Ingest as a pipeline (issue 14): a CSV upload is parsed while it still arrives
(csvbytes.spool_while), Parquet row groups are encoded on the sink's writer thread, and the
server process's allocator gives memory back (flightlake.memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from flightlake import csvbytes, ingest
from flightlake.config import load_settings
from flightlake.errors import InvalidInput, NotFound, StorageError
from flightlake.lake import Lake
from tests.servers import make_settings

ROWS = 200_000  # about 4 MB of CSV: the first batch comes once two 1 MiB blocks are in


@pytest.fixture
def lake(storage_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    spool = tmp_path / "spool"
    spool.mkdir()
    lake = Lake(make_settings(storage_url, s3, spool_dir=str(spool)))
    yield lake
    lake.close()


def body(rows: int = ROWS, last: str | None = None) -> bytes:
    lines = ["id,name,score"] + [f"{i},name {i},{i % 97}" for i in range(rows)]
    if last is not None:
        lines.append(last)
    return ("\n".join(lines) + "\n").encode()


def pieces(data: bytes, size: int = 64 << 10) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def data_keys(lake: Lake) -> set[str]:
    return {o.key for o in lake.storage.list("data") if "/_delta_log/" not in o.key}


class FirstWrite:
    """Set when the Parquet sink gets its first batch (the parse has begun)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.event = threading.Event()
        write = ingest.ParquetSink.write

        def spy(sink: ingest.ParquetSink, batch: pa.RecordBatch) -> None:
            self.event.set()
            write(sink, batch)

        monkeypatch.setattr(ingest.ParquetSink, "write", spy)


def held_back(chunks: list[bytes], after: int, started: threading.Event, seen: list[bool]):
    """Yield ``chunks``; before the one at ``after``, wait (at most 30 s) for ``started``
    and note whether it came: the upload is held until the parse has begun, which can only
    happen when parsing overlaps the upload."""
    for i, chunk in enumerate(chunks):
        if i == after:
            seen.append(started.wait(30))
        yield chunk


def test_csv_is_parsed_while_the_upload_arrives(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = FirstWrite(monkeypatch)
    chunks = pieces(body())
    seen: list[bool] = []
    result = lake.ingest_csv("live", held_back(chunks, len(chunks) - 2, first.event, seen))
    assert seen == [True]  # the first batch was parsed before the upload's last chunks came
    assert result.rows_written == ROWS
    got = lake.query("SELECT count(*) AS n, sum(id) AS s, max(name) AS m FROM live").read_all()
    assert got.to_pylist() == [{"n": ROWS, "s": ROWS * (ROWS - 1) // 2, "m": "name 99999"}]
    assert list(Path(lake.settings.spool_dir).iterdir()) == []


def test_a_late_value_widens_its_column_while_the_upload_arrives(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = FirstWrite(monkeypatch)
    chunks = pieces(body(last="12345678901234567890123,late,2.5"))
    seen: list[bool] = []
    lake.ingest_csv("widen", held_back(chunks, len(chunks) - 1, first.event, seen))
    assert seen == [True]
    schema = lake.dataset("widen").schema
    assert schema.field("id").type == pa.decimal128(38, 0)  # beyond int64: every digit kept
    assert schema.field("score").type == pa.float64()
    got = lake.query("SELECT CAST(id AS VARCHAR) AS id, score FROM widen WHERE name = 'late'")
    assert got.read_all().to_pylist() == [{"id": "12345678901234567890123", "score": 2.5}]
    assert lake.query("SELECT count(*) AS n FROM widen").read_all().to_pylist() == [{"n": ROWS + 1}]


def test_an_upload_that_breaks_midway_commits_nothing(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = FirstWrite(monkeypatch)
    chunks = pieces(body())

    def broken() -> Iterator[bytes]:
        yield from chunks[: 3 * len(chunks) // 4]
        assert first.event.wait(30)  # the parse and the Parquet writer are under way
        raise InvalidInput("upload cancelled by the client; nothing committed")

    with pytest.raises(InvalidInput, match="upload cancelled by the client"):
        lake.ingest_csv("cut", broken())
    with pytest.raises(NotFound):
        lake.dataset("cut")
    assert data_keys(lake) == set()
    assert list(Path(lake.settings.spool_dir).iterdir()) == []


def test_nul_bytes_late_in_the_upload_are_refused_by_name(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = FirstWrite(monkeypatch)
    chunks = pieces(body(last="7,bad\x00name,3"))
    seen: list[bool] = []
    with pytest.raises(InvalidInput, match="CSV has NUL bytes"):
        lake.ingest_csv("nul", held_back(chunks, len(chunks) - 1, first.event, seen))
    assert seen == [True]
    assert data_keys(lake) == set()


REFUSED_EARLY = """
import sys, tempfile
from pathlib import Path
from flightlake.errors import Conflict, InvalidInput
from flightlake.lake import Lake
from tests.servers import local_settings

lake = Lake(local_settings(Path(tempfile.mkdtemp())))
lake.ingest_csv("t", [b"id,name\\n1,a\\n"])
data = sys.argv[1].encode().decode("unicode_escape").encode() + b"1234567,abcdefghij\\n" * 1_000_000
read = []
def chunks():
    for i in range(0, len(data), 1 << 16):
        read.append(len(data[i : i + (1 << 16)]))
        yield data[i : i + (1 << 16)]
try:
    lake.ingest_csv("t", chunks(), "append")
except (Conflict, InvalidInput) as exc:
    print(f"{type(exc).__name__}: {exc}")
print("read", sum(read), "of", len(data))
lake.close()
"""


@pytest.mark.parametrize(
    ("start", "says"),
    [
        ("other,cols\\n", "Conflict: CSV header does not match the dataset"),
        ("id,name\\n1,2,3,4\\n", "InvalidInput: malformed CSV: a row has 4 fields"),
    ],
)
def test_a_csv_refused_early_stops_reading_the_upload(start: str, says: str) -> None:
    """A header that is not the dataset's, or a malformed row, near the start of a 19 MB
    upload: the refusal comes without reading the rest, and nothing is left waiting on the
    spool (a read-ahead left blocked made the interpreter abort at exit: 'Fatal Python
    error: PyGILState_Release'). In a subprocess, so that its exit is seen."""
    done = subprocess.run(
        [sys.executable, "-c", REFUSED_EARLY, start],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Fatal Python error" not in done.stderr, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(says), done.stdout
    _, read, _, total = lines[1].split()
    assert int(read) < int(total) // 2, lines[1]  # stopped early: not the whole upload


def test_growth_wait_returns_at_the_end_and_raises_when_cut() -> None:
    growth = csvbytes.Growth()
    growth.grew(10)
    assert growth.wait(5) == 10
    done = threading.Thread(target=lambda: (growth.grew(5), growth.finish()))
    done.start()
    assert growth.wait(100) == 15  # complete: a short read, as at the end of a file
    done.join()
    cut = csvbytes.Growth()
    threading.Thread(target=cut.fail).start()
    with pytest.raises(csvbytes.SpoolCut):
        cut.wait(1)


def test_a_writer_thread_error_surfaces_and_abort_removes_the_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flightlake.storage import Storage

    storage = Storage(load_settings(env={"FLIGHTLAKE_STORAGE": str(tmp_path / "lake")}))
    monkeypatch.setattr(ingest, "ROW_GROUP_ROWS", 1000)
    calls = {"n": 0}
    check = storage.check_free_space

    def third_group_fails(nbytes: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk on fire")
        check(nbytes)

    monkeypatch.setattr(storage, "check_free_space", third_group_fails)
    schema = pa.schema([("x", pa.int64())])
    sink = ingest.ParquetSink(storage, "t", schema)
    batch = pa.record_batch([pa.array(range(1000), pa.int64())], schema=schema)

    def write_all() -> None:
        for _ in range(10):
            sink.write(batch)
        sink.close()

    with pytest.raises(StorageError, match="disk on fire"):
        write_all()
    assert calls["n"] == 3  # the writer stopped at the failed group
    assert list(storage.list("data"))  # the first two groups' object was started
    sink.abort()
    assert list(storage.list("data")) == []


def pool_of(env: dict[str, str]) -> str:
    code = "import flightlake.cli, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_the_command_line_makes_jemalloc_the_arrow_pool_unless_told() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert pool_of(env) == "jemalloc"
    assert pool_of({**env, "ARROW_DEFAULT_MEMORY_POOL": "system"}) == "system"


def test_memory_decay_setting_is_checked() -> None:
    assert load_settings(env={"FLIGHTLAKE_MEMORY_DECAY_MS": "250"}).memory_decay_ms == 250
    with pytest.raises(InvalidInput, match="FLIGHTLAKE_MEMORY_DECAY_MS"):
        load_settings(env={"FLIGHTLAKE_MEMORY_DECAY_MS": "-1"})


_DECAY_PROBE = r"""
import sys
import pyarrow as pa
from flightlake import memory
from flightlake.lake import Lake
from tests.servers import make_settings

assert pa.default_memory_pool().backend_name == "jemalloc"
settings = make_settings(sys.argv[1], memory_decay_ms=0)
memory.configure(settings)
lake = Lake(settings)
during = []


def batches():
    during.append(memory.current_decay_ms())
    yield pa.record_batch([pa.array([1, 2])], names=["a"])


print("between", memory.current_decay_ms())
lake.ingest_arrow("d", pa.schema([("a", pa.int64())]), batches())
print("during", during[0])
print("after", memory.current_decay_ms())
lake.close()
"""


def test_decay_is_the_setting_during_ingests_and_a_second_between(tmp_path) -> None:
    """jemalloc returns freed pages at once (memory_decay_ms 0) while an ingest runs, and
    keeps them QUERY_DECAY_MS between ingests (query results reuse them: `SELECT *` of the
    500k-row table 49 ms instead of 58 ms), in a process whose Arrow pool is jemalloc, as
    the CLI makes it."""
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    out = subprocess.run(
        [sys.executable, "-c", _DECAY_PROBE, str(tmp_path)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split("\n")
    assert out[:3] == ["between 1000", "during 0", "after 1000"]
