"""The secrets: S3 credentials and the principals (bearer tokens, username/password pairs)
that may call the server. They come from the secrets file (``conf/secrets.toml`` or
``FLIGHTLAKE_SECRETS_FILE``) or the standard ``AWS_*`` variables, never from the main config
file, and their values stay out of every repr and error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flightlake.errors import InvalidInput


@dataclass(frozen=True)
class Credentials:
    """S3 credentials; kept out of repr so they never reach logs."""

    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)

    def __bool__(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)


@dataclass(frozen=True)
class Principal:
    """A bearer token or a username/password pair with its role (read | write)."""

    name: str
    role: str
    token: str = field(default="", repr=False)
    password: str = field(default="", repr=False)


def load_secrets(
    data: Mapping[str, Any], env: Mapping[str, str], path: Path | None
) -> tuple[Credentials, Credentials, tuple[Principal, ...]]:
    """The S3 credentials (``[s3]``, else ``AWS_*``), the query credentials (``[s3.query]``,
    else ``FLIGHTLAKE_QUERY_*``) and the ``[[tokens]]`` / ``[[users]]`` principals of the
    secrets file at ``path``, parsed as ``data`` (empty when there is none). Raises
    InvalidInput naming the file and the entry (never a secret) when an entry is malformed."""
    s3 = data.get("s3", {})
    creds = Credentials(
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or s3.get("access_key_id", ""),
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or s3.get("secret_access_key", ""),
        session_token=env.get("AWS_SESSION_TOKEN") or s3.get("session_token", ""),
    )
    query = s3.get("query", {})
    query_creds = Credentials(
        access_key_id=env.get("FLIGHTLAKE_QUERY_ACCESS_KEY_ID") or query.get("access_key_id", ""),
        secret_access_key=env.get("FLIGHTLAKE_QUERY_SECRET_ACCESS_KEY")
        or query.get("secret_access_key", ""),
    )
    principals: list[Principal] = []
    for i, entry in enumerate(_entries(data, "tokens", path), 1):
        token = _field(entry, "tokens", i, "token", path)
        name = str(entry.get("name", "token"))
        principals.append(Principal(name, _role(entry, path), token=token))
    for i, entry in enumerate(_entries(data, "users", path), 1):
        username = _field(entry, "users", i, "username", path)
        password = _field(entry, "users", i, "password", path)
        principals.append(Principal(username, _role(entry, path), password=password))
    return creds, query_creds, tuple(principals)


def _entries(data: Mapping[str, Any], table: str, path: Path | None) -> list[Mapping[str, Any]]:
    entries = data.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidInput(f"secrets file {path}: write each entry as a [[{table}]] table")
    return entries


def _field(entry: Mapping[str, Any], table: str, index: int, key: str, path: Path | None) -> str:
    """``entry[key]`` as a non-empty string, else InvalidInput naming the entry and field
    (by its position and name, never by its secret)."""
    value = entry.get(key)
    if isinstance(value, str | int) and str(value).strip():
        return str(value)
    label = f"[[{table}]] entry {index}"
    if "name" in entry or "username" in entry:
        label += f" ({str(entry.get('name', entry.get('username')))!r})"
    state = "has no" if value is None else "has an empty or non-text"
    raise InvalidInput(f"secrets file {path}: {label} {state} {key!r}")


def _role(entry: Mapping[str, Any], path: Path | None) -> str:
    role = str(entry.get("role", "read"))
    if role not in ("read", "write"):
        raise InvalidInput(f"secrets file {path}: role must be 'read' or 'write', got {role!r}")
    return role
