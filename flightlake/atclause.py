"""``name AT (VERSION => n)`` / ``AT (TIMESTAMP => t)`` in client SQL: finding the clauses and
replacing each table reference by a view over that version's files (query.py provides the
views; this module only edits text, at the byte offsets DuckDB's own parse tree gives).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_AT = re.compile(rb"\bAT\s*\(", re.IGNORECASE)
_AT_TEXT = re.compile(r"\bAT\s*\(", re.IGNORECASE)


class AtClauseError(ValueError):
    """An AT clause whose text could not be read back."""


def mentions(sql: str) -> bool:
    """Whether ``sql`` may hold an AT clause (a cheap pre-check before parsing)."""
    return _AT_TEXT.search(sql) is not None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rewrite(sql: str, refs: list[dict[str, Any]], view_for: Callable[[str, str, str], str]) -> str:
    """``sql`` with each BASE_TABLE node of ``refs`` (those carrying ``at_clause``) and its
    AT clause replaced by the view ``view_for(table, unit, expression text)`` names, aliased
    as the table so column references like ``t.col`` still resolve."""
    raw = sql.encode()
    edits: list[tuple[int, int, bytes]] = []
    for node in refs:
        start = int(node.get("query_location", -1))
        span = _at_span(raw, start)
        if span is None:
            raise AtClauseError("cannot read the AT (...) clause; write name AT (VERSION => n)")
        open_paren, close_paren = span
        unit = str(node["at_clause"].get("unit", "")).upper()
        inner = raw[open_paren + 1 : close_paren].decode()
        expr = inner.split("=>", 1)[1] if "=>" in inner else ""
        table = str(node.get("table_name", ""))
        view = view_for(table, unit, expr)
        alias = "" if node.get("alias") else f" AS {quote_ident(table)}"
        edits.append((start, close_paren + 1, (quote_ident(view) + alias).encode()))
    for start, end, text in sorted(edits, reverse=True):
        raw = raw[:start] + text + raw[end:]
    return raw.decode()


def _at_span(raw: bytes, start: int) -> tuple[int, int] | None:
    """Byte offsets of the parentheses of the AT clause following the table reference that
    starts at ``start`` (quotes inside are skipped)."""
    match = _AT.search(raw, max(start, 0))
    if match is None:
        return None
    open_paren = match.end() - 1
    depth = 0
    quote = 0
    for i in range(open_paren, len(raw)):
        c = raw[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x27, 0x22):  # ' or "
            quote = c
        elif c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return open_paren, i
    return None
