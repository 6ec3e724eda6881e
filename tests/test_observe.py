"""Observability: Prometheus /metrics, request ids, JSON log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightlake.observe import JsonFormatter, RequestIdFilter, setup_logging
from tests.http_helpers import http_server
from tests.servers import flight_server, make_settings


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def test_metrics_count_requests_rows_errors_and_ingests(tmp_path: Path) -> None:
    with (
        flight_server(make_settings(str(tmp_path / "lake"))) as srv,
        http_server(srv.lake, srv.lake.settings) as http,
    ):
        before = http.client.get("/metrics").text
        table = pa.table({"x": list(range(1000))})
        writer, meta = srv.client.do_put(flight.FlightDescriptor.for_path("m"), table.schema)
        with writer:
            writer.write_table(table)
            writer.done_writing()
            meta.read()
        srv.client.do_get(flight.Ticket(b"SELECT * FROM m")).read_all()
        with pytest.raises(pa.ArrowInvalid):
            srv.client.do_get(flight.Ticket(b"SELEKT")).read_all()
        http.client.post("/v1/ingest?name=h", files={"file": ("h.csv", b"a\n1\n2\n")})
        assert http.client.get("/v1/datasets/nope").status_code == 404
        after = http.client.get("/metrics")
        assert after.status_code == 200
        assert after.headers["content-type"].startswith("text/plain")
        text = after.text

        def delta(name: str, **labels: str) -> float:
            return metric(text, name, **labels) - metric(before, name, **labels)

        assert (
            delta("flightlake_requests_total", frontend="flight", method="do_put", code="ok") == 1
        )
        assert delta("flightlake_rows_total", direction="in") == 1002
        assert delta("flightlake_rows_total", direction="out") == 1000
        assert delta("flightlake_bytes_total", direction="out") > 0
        assert delta("flightlake_errors_total", frontend="flight", code="invalid_argument") == 1
        assert delta("flightlake_errors_total", frontend="http", code="not_found") == 1
        assert (
            delta("flightlake_requests_total", frontend="http", method="POST /v1/ingest", code="ok")
            == 1
        )
        assert delta("flightlake_ingest_duration_seconds_count") == 2
        assert delta("flightlake_query_duration_seconds_count") == 1
        assert metric(text, "flightlake_ingests_in_flight") == 0
        assert metric(text, "flightlake_datasets") == 2


def test_http_request_id_is_echoed_and_logged(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="flightlake.request")
    with (
        flight_server(make_settings(str(tmp_path / "lake"))) as srv,
        http_server(srv.lake, srv.lake.settings) as http,
    ):
        answer = http.client.get("/v1/datasets", headers={"x-request-id": "abc123"})
        assert answer.headers["x-request-id"] == "abc123"
        fresh = http.client.get("/v1/datasets").headers["x-request-id"]
        assert fresh
        assert fresh != "abc123"
    lines = [r for r in caplog.records if r.name == "flightlake.request"]
    assert any(getattr(r, "fields", {}).get("method") == "GET /v1/datasets" for r in lines)


def test_json_log_lines_carry_request_id_and_fields() -> None:
    record = logging.LogRecord(
        "flightlake.request", logging.INFO, __file__, 1, "do_get %s", ("x",), None
    )
    record.fields = {"method": "do_get", "rows": 5}
    RequestIdFilter().filter(record)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "do_get x"
    assert doc["rows"] == 5
    assert doc["level"] == "INFO"
    assert "request_id" in doc
    assert doc["time"].endswith("Z")


def test_setup_logging_json_format(capsys) -> None:
    setup_logging("INFO", "json")
    try:
        logging.getLogger("flightlake.test").info("hello %s", "world")
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(err)["message"] == "hello world"
    finally:
        logging.getLogger().handlers.clear()


@pytest.mark.parametrize("worker", [None, 0, 3])
def test_a_workers_lines_name_the_worker(capsys, worker: int | None) -> None:
    """Under serve --workers N every worker logs to the same stderr: each line says which."""
    for fmt in ("text", "json"):
        setup_logging("INFO", fmt, worker=worker)
        try:
            logging.getLogger("flightlake.test").info("hello")
            line = capsys.readouterr().err.strip().splitlines()[-1]
        finally:
            logging.getLogger().handlers.clear()
        if fmt == "json":
            assert json.loads(line).get("worker") == worker
        elif worker is None:
            assert " INFO flightlake.test [-] hello" in line
            assert "worker" not in line
        else:
            assert f" INFO flightlake.test worker={worker} [-] hello" in line


def test_do_get_log_line_has_request_id_and_plain_sql(tmp_path: Path, caplog) -> None:
    """Regression: do_get lines were logged from the stream's thread without the request id,
    and their sql field was JSON-encoded twice."""
    caplog.set_level(logging.INFO, logger="flightlake.request")
    with flight_server(make_settings(str(tmp_path / "lake"))) as srv:
        srv.client.do_get(flight.Ticket(b"SELECT 'a b' AS x")).read_all()
    [line] = [r for r in caplog.records if getattr(r, "fields", {}).get("method") == "do_get"]
    assert line.fields["sql"] == "SELECT 'a b' AS x"
    assert line.fields["request_id"] != "-"
