"""Every example in clients/ runs, as a user would run it, against a live `flightlake serve`
subprocess, and prints the right answers; so the examples never rot.

Most run on local storage (one server for the module); the pyarrow.flight example also runs
on the SeaweedFS S3 server. Each example is run twice where it overwrites its dataset, so
re-running it (as users do) keeps working.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pyarrow.flight as flight
import pytest

from tests.subprocess_server import (
    ServerProcess,
    answers_flight,
    answers_http,
    env_without_flightlake,
    flightlake_serve,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "clients"
EXAMPLES = ("pyarrow_flight.py", "pandas_polars.py", "adbc.py", "curl.sh")
HTTP_AVAILABLE = importlib.util.find_spec("flightlake.http") is not None
FLIGHT_SQL_AVAILABLE = importlib.util.find_spec("flightlake.flight.flightsql") is not None

# clients/data/sales.csv, by state: (orders, revenue)
SALES_BY_STATE = {"CA": (2, 22.0), "IL": (3, 61.5), "NY": (2, 61.0), "TX": (1, 60.0)}


def answers(server: ServerProcess) -> bool:
    """Flight `health` answers, and HTTP /health too where the HTTP front end is built."""
    return answers_flight(server) and (not HTTP_AVAILABLE or answers_http(server))


def running_server(env: dict[str, str], workdir: Path) -> AbstractContextManager[ServerProcess]:
    """`flightlake serve` on free ports in ``workdir`` until the block ends."""
    return flightlake_serve(env=env_without_flightlake(env), cwd=workdir, ready=answers)


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("clients")
    with running_server({"FLIGHTLAKE_STORAGE": str(workdir / "lake")}, workdir) as server:
        yield server


def run_example(script: str, *args: str, cwd: Path) -> str:
    """Run clients/<script> the way its docstring says; return its stdout."""
    path = CLIENTS / script
    cmd = ["bash", str(path)] if script.endswith(".sh") else [sys.executable, str(path)]
    result = subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        env=env_without_flightlake(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def rows(server: ServerProcess, sql: str) -> list[dict[str, object]]:
    client = flight.FlightClient(server.flight)
    try:
        return client.do_get(flight.Ticket(sql.encode())).read_all().to_pylist()
    finally:
        client.close()


def check_sales_output(out: str, version: int) -> None:
    assert f'"rows_written": 8, "version": {version}' in out
    assert re.search(
        r"example_sales: 8 rows, \d+ bytes, columns order_id, order_date, state, "
        r"product, quantity, unit_price",
        out,
    )
    assert "read example_sales: 8 rows" in out
    for state, (orders, revenue) in SALES_BY_STATE.items():
        assert f"  {state}: {orders} orders, {revenue:.2f}\n" in out
    assert "last order: 2024-01-08" in out
    assert "unknown dataset -> NOT_FOUND" in out
    assert "bad SQL -> INVALID_ARGUMENT" in out


# -- the examples ----------------------------------------------------------------------------
def test_pyarrow_flight_example(local_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("pyarrow_flight.py", "--server", local_server.flight, cwd=tmp_path)
    assert out.startswith('health: {"status": "ok"')
    check_sales_output(out, version=0)
    again = run_example("pyarrow_flight.py", "--server", local_server.flight, cwd=tmp_path)
    check_sales_output(again, version=1)  # mode=overwrite: a re-run replaces the dataset
    assert rows(local_server, "SELECT count(*) AS n FROM example_sales") == [{"n": 8}]


def test_pyarrow_flight_example_with_another_csv(
    local_server: ServerProcess, tmp_path: Path
) -> None:
    csv = tmp_path / "mine.csv"
    csv.write_text(
        "order_id,order_date,state,product,quantity,unit_price\n1,2024-02-01,WA,widget,2,5.00\n"
    )
    out = run_example(
        "pyarrow_flight.py",
        "--server",
        local_server.flight,
        "--csv",
        str(csv),
        "--name",
        "mine",
        cwd=tmp_path,
    )
    assert "  WA: 1 orders, 10.00" in out
    assert rows(local_server, "SELECT count(*) AS n FROM mine") == [{"n": 1}]


def test_csv_option_with_other_columns_does_not_crash(
    local_server: ServerProcess, tmp_path: Path
) -> None:
    """Regression: `--csv FILE` ingested the file, then both examples crashed on their sales
    query (`Binder Error: ... "quantity" not found`); they now ask about the file's columns."""
    csv = tmp_path / "cities.csv"
    csv.write_text('"city name",pop\nRome,3\nOslo,1\nRome,4\n')
    out = run_example(
        "pyarrow_flight.py",
        "--server",
        local_server.flight,
        "--csv",
        str(csv),
        "--name",
        "cities",
        cwd=tmp_path,
    )
    assert "most frequent values of city name:\n  Rome: 2 rows\n  Oslo: 1 rows\n" in out
    assert "largest city name: Rome" in out
    if HTTP_AVAILABLE:
        out = run_example(
            "curl.sh",
            "--http",
            local_server.http,
            "--csv",
            str(csv),
            "--name",
            "cities_http",
            cwd=tmp_path,
        )
        sections = dict(re.findall(r"^== ([^\n]+)\n(.*?)(?=^== |\Z)", out, re.M | re.S))
        assert json.loads(sections["sql -> JSON rows"]) == [{"rows": 3}]
        assert sections["sql -> CSV"].splitlines() == ['"value","n"', '"Rome",2', '"Oslo",1']


@pytest.mark.s3
def test_pyarrow_flight_example_on_s3(s3_env: dict[str, str], tmp_path: Path) -> None:
    with running_server(s3_env, tmp_path) as server:
        out = run_example("pyarrow_flight.py", "--server", server.flight, cwd=tmp_path)
        check_sales_output(out, version=0)
    with running_server(s3_env, tmp_path) as server:  # the data outlives the server
        assert rows(server, "SELECT count(*) AS n FROM example_sales") == [{"n": 8}]


def test_pandas_polars_example(local_server: ServerProcess, tmp_path: Path) -> None:
    for pandas_version, polars_version in ((0, 1), (2, 3)):  # overwrite, then append
        out = run_example("pandas_polars.py", "--server", local_server.flight, cwd=tmp_path)
        assert (
            f'from pandas: {{"dataset": "example_readings", "rows_written": 5, '
            f'"version": {pandas_version}}}'
        ) in out
        assert (
            f'from polars: {{"dataset": "example_readings", "rows_written": 2, '
            f'"version": {polars_version}}}'
        ) in out
        assert "polars: 7 rows; hottest reading 25.25 on c" in out
    table = out.split("pandas result:\n", 1)[1].split("polars:", 1)[0].split("\n")
    assert table[0].split() == ["sensor", "n", "mean_c"]
    assert [line.split() for line in table[1:5]] == [
        ["a", "2", "21.75"],
        ["b", "2", "19.25"],
        ["c", "2", "25.00"],
        ["d", "1", "18.00"],
    ]
    assert rows(local_server, "SELECT count(*) AS n FROM example_readings") == [{"n": 7}]


@pytest.mark.skipif(
    not FLIGHT_SQL_AVAILABLE,
    reason="the Flight SQL front end (flightlake.flight.flightsql) is not built "
    "yet; ADBC connects through it",
)
def test_adbc_example(local_server: ServerProcess, tmp_path: Path) -> None:
    for _ in range(2):  # mode="replace" then "append": the same answer on every run
        out = run_example("adbc.py", "--server", local_server.flight, cwd=tmp_path)
        assert "adbc_ingest: 6 rows into example_trips" in out
        assert "adbc_ingest: 2 more rows appended" in out
        assert "dbapi: (8, 53.1)" in out
        assert "parameters: [3, 5]" in out
        assert "  2024-06-01: 33.9 km\n  2024-06-02: 9.3 km\n  2024-06-03: 9.9 km" in out
        table = out.split("pandas.read_sql:\n", 1)[1].split("polars.read_database:", 1)[0]
        assert [line.split() for line in table.strip().splitlines()] == [
            ["city", "trips", "km"],
            ["Austin", "2", "7.5"],
            ["Boston", "1", "9.9"],
            ["Chicago", "5", "35.7"],
        ]
    assert rows(local_server, "SELECT count(*) AS n FROM example_trips") == [{"n": 8}]


@pytest.mark.skipif(
    not HTTP_AVAILABLE, reason="the HTTP front end (flightlake.http) is not built yet"
)
def test_curl_example(local_server: ServerProcess, tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is needed to run clients/curl.sh"
    for version in (0, 1):
        out = run_example("curl.sh", "--http", local_server.http, cwd=tmp_path)
        sections = dict(re.findall(r"^== ([^\n]+)\n(.*?)(?=^== |\Z)", out, re.M | re.S))
        assert json.loads(sections["health"])["status"] == "ok"
        ingest = next(v for k, v in sections.items() if k.startswith("ingest"))
        manifest = json.loads(ingest)
        assert manifest["name"] == "example_sales_http"
        assert manifest["row_count"] == 8
        assert manifest["version"] == version
        answer = json.loads(sections["sql -> JSON rows"])
        assert {r["state"]: (r["orders"], r["revenue"]) for r in answer} == SALES_BY_STATE
        assert sections["sql -> CSV"].splitlines() == [
            '"product","units"',
            '"gadget",6',
            '"gizmo",3',
            '"widget",17',
        ]
        names = [m["name"] for m in json.loads(sections["datasets"])]
        assert "example_sales_http" in names
        assert json.loads(sections["one dataset's manifest"])["row_count"] == 8
        error = json.loads(sections["errors are JSON with a status"])
        assert error["status"] == 404
    # Ingested over HTTP, visible over Flight.
    assert rows(local_server, "SELECT count(*) AS n FROM example_sales_http") == [{"n": 8}]


# -- the examples' documentation -------------------------------------------------------------
def test_every_example_is_documented_and_tested() -> None:
    readme = (CLIENTS / "README.md").read_text()
    on_disk = {p.name for p in CLIENTS.iterdir() if p.suffix in (".py", ".sh")}
    assert on_disk == set(EXAMPLES), "add new examples to EXAMPLES and test them here"
    tested = Path(__file__).read_text()
    for name in EXAMPLES:
        assert f"clients/{name}" in readme, f"clients/README.md does not mention {name}"
        assert f'run_example("{name}"' in tested
        option = "--http" if name.endswith(".sh") else "--server"
        assert option in (CLIENTS / name).read_text()


def test_examples_print_help() -> None:
    for name in EXAMPLES:
        path = CLIENTS / name
        cmd = ["bash", str(path)] if name.endswith(".sh") else [sys.executable, str(path)]
        result = subprocess.run(
            [*cmd, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        option = "--http" if name.endswith(".sh") else "--server"
        assert option in result.stdout
