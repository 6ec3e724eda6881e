"""A listing cut at `max_list` says so (issue 18): a CLI footer, HTTP headers, a field in the
Flight `list` action's answer when asked for, and a log line. The bare listing keeps its shape."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.config import Settings
from flightlake.lake import Lake
from tests.subprocess_server import (
    FLIGHTLAKE,
    ServerProcess,
    answers_flight,
    answers_http,
    env_without_flightlake,
    flightlake_serve,
)

NAMES = ("a_one", "b_two", "c_three")


def put(client: flight.FlightClient, name: str) -> None:
    table = pa.table({"x": [1, 2]})
    writer, meta = client.do_put(flight.FlightDescriptor.for_path(name), table.schema)
    with writer:
        writer.write_table(table)
        writer.done_writing()
        meta.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with max_list=2 holding three datasets."""
    lake = tmp_path_factory.mktemp("truncation") / "lake"
    env = env_without_flightlake({"FLIGHTLAKE_MAX_LIST": "2"})
    with flightlake_serve(
        "--storage", str(lake), env=env, ready=lambda s: answers_flight(s) and answers_http(s)
    ) as server:
        with flight.FlightClient(server.flight) as client:
            for name in NAMES:
                put(client, name)
        yield server


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLIGHTLAKE, *args, "--server", server.flight],
        env=env_without_flightlake(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_truncated_listing_cli_footer(served: ServerProcess) -> None:
    out = cli(served, "datasets").stdout
    assert "a_one" in out
    assert "b_two" in out
    assert "c_three" not in out
    assert out.rstrip().endswith("… 1 more not shown (max_list=2)")
    shown = cli(served, "datasets", "--json")
    assert [m["name"] for m in json.loads(shown.stdout)] == ["a_one", "b_two"]  # still JSON
    assert shown.stderr.strip() == "… 1 more not shown (max_list=2)"


def test_truncated_listing_http_headers(served: ServerProcess) -> None:
    response = httpx.get(f"{served.http}/v1/datasets")
    assert response.status_code == 200
    assert [m["name"] for m in response.json()] == ["a_one", "b_two"]  # the same array
    assert response.headers["x-flightlake-truncated"] == "true"
    assert response.headers["x-flightlake-total"] == "3"


def test_truncated_listing_flight_list_action(served: ServerProcess) -> None:
    with flight.FlightClient(served.flight) as client:
        [bare] = client.do_action(flight.Action("list", b""))
        assert [m["name"] for m in json.loads(bare.body.to_pybytes())] == ["a_one", "b_two"]
        [full] = client.do_action(flight.Action("list", b'{"with_total": true}'))
        answer = json.loads(full.body.to_pybytes())
        assert [m["name"] for m in answer["datasets"]] == ["a_one", "b_two"]
        assert (answer["total"], answer["truncated"], answer["max_list"]) == (3, True, 2)
        with pytest.raises(pa.ArrowInvalid, match="list takes an empty body"):
            list(client.do_action(flight.Action("list", b"[1]")))
        assert len(list(client.list_flights())) == 2


def test_truncated_listing_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lake = Lake(Settings(storage=str(tmp_path / "lake"), max_list=1))
    try:
        table = pa.table({"x": [1]})
        lake.ingest_arrow("one", table.schema, table.to_batches())
        assert lake.datasets_page()[1] == 1
        assert not [r for r in caplog.records if "max_list" in r.getMessage()]
        lake.ingest_arrow("two", table.schema, table.to_batches())
        with caplog.at_level(logging.WARNING, logger="flightlake.lake"):
            shown, total = lake.datasets_page()
            assert [m.name for m in lake.datasets()] == ["one"]  # the old call, same shape
        assert ([m.name for m in shown], total) == (["one"], 2)
        messages = [r.getMessage() for r in caplog.records]
        assert "dataset listing cut at max_list=1: 1 of 2 datasets shown" in messages
    finally:
        lake.close()


def test_untruncated_listing_says_nothing(tmp_path: Path) -> None:
    with flightlake_serve(
        "--storage",
        str(tmp_path / "lake"),
        env=env_without_flightlake(),
        ready=lambda s: answers_flight(s) and answers_http(s),
    ) as server:
        with flight.FlightClient(server.flight) as client:
            put(client, "only")
        out = cli(server, "datasets").stdout
        assert "more not shown" not in out
        assert out.rstrip().endswith("(1 rows)")
        response = httpx.get(f"{server.http}/v1/datasets")
        assert "x-flightlake-truncated" not in response.headers
        assert response.headers["x-flightlake-total"] == "1"
