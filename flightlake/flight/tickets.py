"""Descriptors, commands and tickets of the plain Flight protocol (see docs/protocol.md).

- ``do_put`` descriptor ``for_path(NAME)`` → Arrow stream appended to NAME;
  ``for_command(JSON)`` → ``{"ingest": NAME, "format": "arrow"|"csv", "mode": ...,
  "idempotency_key": KEY}`` (the key optional: a retry with a committed key is a replay).
- Tickets: plain SQL text, or JSON the server hands out: ``{"sql": "..."}`` or
  ``{"dataset": NAME}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow.flight as flight

from flightlake.catalog import validate_name
from flightlake.errors import InvalidInput
from flightlake.lake import check_mode
from flightlake.query import quote_ident

FORMATS = ("arrow", "csv")


@dataclass(frozen=True)
class PutCommand:
    """What a do_put asks for."""

    dataset: str
    format: str = "arrow"
    mode: str = "append"
    idempotency_key: str | None = None


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8 text") from exc


def parse_put(descriptor: flight.FlightDescriptor) -> PutCommand:
    if descriptor.descriptor_type == flight.DescriptorType.PATH:
        path = [
            p.decode("utf-8", "replace") if isinstance(p, bytes) else p for p in descriptor.path
        ]
        if len(path) != 1:
            raise InvalidInput(f"do_put path must have exactly one part (the dataset), got {path}")
        return PutCommand(validate_name(path[0]))
    doc = _json_object(descriptor.command, "do_put command")
    name = doc.get("ingest")
    if not isinstance(name, str):
        raise InvalidInput('do_put command needs "ingest": "<dataset name>"')
    fmt = doc.get("format", "arrow")
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    unknown = set(doc) - {"ingest", "format", "mode", "idempotency_key"}
    if unknown:
        raise InvalidInput(f"unknown do_put command fields: {', '.join(sorted(unknown))}")
    key = doc.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise InvalidInput('"idempotency_key" must be a string of 1 to 128 printable characters')
    return PutCommand(validate_name(name), fmt, check_mode(doc.get("mode")), key)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    text = _text(raw, what)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return doc


def ticket_sql(raw: bytes) -> str:
    """The SQL a ticket runs: the ticket itself, or the "sql"/"dataset" of a JSON ticket."""
    return ticket_parts(raw)[0]


def ticket_parts(raw: bytes) -> tuple[str, str | None]:
    """The SQL a ticket runs, and the id of the result the server already started for it
    (``"pending"`` in tickets it handed out; None otherwise)."""
    text = _text(raw, "ticket").strip()
    if text.startswith("{"):
        doc = _json_object(raw, "ticket")
        pending = doc.get("pending") if isinstance(doc.get("pending"), str) else None
        if isinstance(doc.get("sql"), str):
            return str(doc["sql"]), pending
        if isinstance(doc.get("dataset"), str):
            return f"SELECT * FROM {quote_ident(validate_name(doc['dataset']))}", None
        raise InvalidInput('JSON ticket needs "sql" or "dataset"')
    if not text:
        raise InvalidInput("ticket is empty")
    return text, None


def sql_ticket(sql: str, pending: str | None = None) -> flight.Ticket:
    """A ticket running ``sql``; ``pending`` names a result already started for it here."""
    doc = {"sql": sql, "pending": pending} if pending else {"sql": sql}
    return flight.Ticket(json.dumps(doc).encode())


def dataset_ticket(name: str) -> flight.Ticket:
    return flight.Ticket(json.dumps({"dataset": name}).encode())


def command_sql(command: bytes) -> str:
    """The SQL of a ``for_command`` descriptor's command: plain text or ``{"sql": ...}``."""
    return ticket_sql(command)
