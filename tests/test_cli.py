"""End to end through the public interfaces: a real `flightlake serve` subprocess, the CLI as
a subprocess, and pyarrow.flight — including the prototype's G0 gate on real S3."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.flight as flight
import pytest

from scripts.gen_workers import il_role_counts
from tests.helpers import free_port
from tests.subprocess_server import FLIGHTLAKE, flightlake_serve


@contextmanager
def serve(env: dict[str, str], *args: str) -> Iterator[str]:
    """Run `flightlake serve` on free ports until the block ends; yield its Flight location."""
    with flightlake_serve(*args, env={**os.environ, **env}) as server:
        yield server.flight


def cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*FLIGHTLAKE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"flightlake {args} failed: {result.stderr}")
    return result


def sql_json(location: str, query: str) -> list[dict]:
    out = cli("sql", query, "--format", "json", "--server", location).stdout
    return [json.loads(line) for line in out.splitlines() if line]


def test_cli_smoke_local(tmp_path: Path) -> None:
    csv = tmp_path / "tiny.csv"
    csv.write_text("id,state\n1,IL\n2,CA\n3,IL\n")
    env = {"FLIGHTLAKE_STORAGE": str(tmp_path / "lake")}
    with serve(env) as location:
        out = cli("ingest", str(csv), "--name", "tiny", "--server", location).stdout
        assert "tiny: 3 rows written (version 0)" in out
        assert sql_json(location, "SELECT count(*) AS n FROM tiny") == [{"n": 3}]
        table = cli(
            "sql",
            "SELECT state, count(*) AS n FROM tiny GROUP BY state ORDER BY 1",
            "--server",
            location,
        ).stdout
        assert table.splitlines()[0].split() == ["state", "n"]
        assert "IL     2" in table
        csv_out = cli(
            "sql", "SELECT id FROM tiny ORDER BY id", "--format", "csv", "--server", location
        ).stdout
        assert csv_out.splitlines() == ['"id"', "1", "2", "3"]
        listing = cli("datasets", "--server", location).stdout
        assert "tiny" in listing
        bad = cli("sql", "SELEKT 1", "--server", location, check=False)
        assert bad.returncode == 1
        assert bad.stderr.startswith("error: ")
        assert "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        missing = cli("drop", "nope", "--server", location, check=False)
        assert missing.returncode == 1
        assert "not found" in missing.stderr
        assert "dropped tiny" in cli("drop", "tiny", "--server", location).stdout
    assert (tmp_path / "lake" / "data" / "tiny").is_dir()  # the Delta table folder
    log = tmp_path / "lake" / "data" / "tiny" / "_delta_log"
    assert not log.exists() or list(log.iterdir()) == []  # dropped: no commit left


def test_cli_unreachable_server_is_one_line() -> None:
    result = cli("datasets", "--server", f"grpc://127.0.0.1:{free_port()}", check=False, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_cli_ingests_parquet_and_arrow(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": list(range(1000)), "y": ["a"] * 1000})
    pq.write_table(table, tmp_path / "t.parquet")
    with (
        pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as w,
    ):
        w.write_table(table)
    with serve({"FLIGHTLAKE_STORAGE": str(tmp_path / "lake")}) as location:
        cli("ingest", str(tmp_path / "t.parquet"), "--name", "t", "--server", location)
        cli("ingest", str(tmp_path / "t.arrow"), "--name", "t", "--server", location)
        assert sql_json(location, "SELECT count(*) AS n FROM t") == [{"n": 2000}]


@pytest.mark.s3
@pytest.mark.slow
def test_g0_gate_on_s3(s3_env: dict[str, str], workers_csv_500k: Path) -> None:
    """Ingest 500k workers rows with the CLI into a server on S3; count, group-by, restart,
    then an Arrow do_put append moves the count by exactly its rows."""
    expected = il_role_counts(workers_csv_500k)
    group_by = (
        "SELECT role, count(*) AS n FROM workers_500k WHERE state='IL' GROUP BY role ORDER BY role"
    )
    with serve(s3_env) as location:
        out = cli(
            "ingest", str(workers_csv_500k), "--name", "workers_500k", "--server", location
        ).stdout
        assert "500000 rows written" in out
        assert sql_json(location, "SELECT count(*) FROM workers_500k") == [{"count_star()": 500000}]
        got = {r["role"]: r["n"] for r in sql_json(location, group_by)}
        assert got == expected
    with serve(s3_env) as location:  # a fresh process sees the same catalog
        assert sql_json(location, "SELECT count(*) AS n FROM workers_500k") == [{"n": 500000}]
        assert {r["role"]: r["n"] for r in sql_json(location, group_by)} == expected
        client = flight.FlightClient(location)
        info = client.get_flight_info(flight.FlightDescriptor.for_path("workers_500k"))
        assert info.total_records == 500000
        extra = client.do_get(flight.Ticket(b"SELECT * FROM workers_500k LIMIT 1234")).read_all()
        writer, meta = client.do_put(flight.FlightDescriptor.for_path("workers_500k"), extra.schema)
        with writer:
            writer.write_table(extra)
            writer.done_writing()
            answer = json.loads(meta.read().to_pybytes())
        assert answer["rows_written"] == 1234
        assert sql_json(location, "SELECT count(*) AS n FROM workers_500k") == [
            {"n": 500000 + 1234}
        ]
        client.close()


def test_cli_versions_and_compact(tmp_path: Path) -> None:
    csv = tmp_path / "v.csv"
    csv.write_text("id\n1\n2\n")
    env = {"FLIGHTLAKE_STORAGE": str(tmp_path / "lake"), "FLIGHTLAKE_COMPACT_FILES": "0"}
    with serve(env) as location:
        for _ in range(3):
            cli("ingest", str(csv), "--name", "v", "--server", location)
        out = cli("compact", "v", "--server", location).stdout
        assert out == "v: 3 files -> 1 (version 3)\n"
        listed = json.loads(cli("versions", "v", "--json", "--server", location).stdout)
        assert [(v["version"], v["operation"]) for v in listed] == [
            (3, "COMPACT"),
            (2, "WRITE"),
            (1, "WRITE"),
            (0, "CREATE TABLE"),
        ]
        table = cli("versions", "v", "--server", location).stdout
        assert table.splitlines()[0].split() == [
            "version",
            "timestamp",
            "operation",
            "rows_added",
            "rows_total",
        ]
        assert sql_json(location, "SELECT count(*) AS n FROM v AT (VERSION => 0)") == [{"n": 2}]
        missing = cli("versions", "nope", "--server", location, check=False)
        assert missing.returncode == 1
        assert "not found" in missing.stderr
