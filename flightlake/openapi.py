"""The OpenAPI 3 description of the HTTP shim (flightlake/http.py), served at /openapi.json.

Written by hand, compactly: ``_op`` adds the shared error shape and the auth statuses to each
operation. tests/test_http.py checks that it names exactly the routes the app serves.
"""

from __future__ import annotations

from typing import Any

ARROW_STREAM = "application/vnd.apache.arrow.stream"
UPLOAD_FORMATS = ["csv", "parquet", "arrow"]
RESULT_TYPES = ["application/json", ARROW_STREAM, "text/csv"]

_BINARY = {"type": "string", "format": "binary"}
_MANIFEST = {"$ref": "#/components/schemas/Manifest"}
_OBJECT = {"type": "object"}


def _content(schema: dict[str, Any], *types: str) -> dict[str, Any]:
    return {t: {"schema": schema} for t in types or ("application/json",)}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> Any:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: dict[int, str],
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    """One OpenAPI operation: 200 with ``ok`` content, the error statuses in the one shape."""
    if auth:
        errors = {**errors, 401: "Missing or unknown credentials", 403: "Role lacks 'write'"}
    error = _content({"$ref": "#/components/schemas/Error"})
    responses = {"200": {"description": "OK", "content": ok}}
    responses |= {str(s): {"description": d, "content": error} for s, d in errors.items()}
    op = {"summary": summary, "parameters": list(params), "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


_HEALTH = {
    "type": "object",
    "required": ["status", "service"],
    "properties": {
        "status": {"enum": ["ok", "unavailable"]},
        "service": {"type": "string"},
        "version": {"type": "string"},
        "datasets": {"type": "integer"},
        "storage": {"type": "string"},
        "error": {"type": "string"},
    },
}


def _health_op(summary: str, auth: bool) -> dict[str, Any]:
    """200 and 503 both answer the health object (503 with Retry-After: 5)."""
    op = _op(summary, _content(_HEALTH), {}, auth=auth)
    op["responses"]["503"] = {
        "description": "Not ready, or the object store does not answer (Retry-After: 5)",
        "content": _content(_HEALTH),
    }
    return op


def _listing(op: dict[str, Any]) -> dict[str, Any]:
    """``op`` whose 200 answer carries the listing's headers (how many, whether cut)."""
    op["responses"]["200"]["headers"] = {
        "X-Flightlake-Total": {
            "description": "How many datasets there are",
            "schema": {"type": "integer"},
        },
        "X-Flightlake-Truncated": {
            "description": "'true' when max_list cut the listing",
            "schema": {"type": "string"},
        },
    }
    return op


_NAME = _param("name", "path", {"type": "string"}, required=True)
_SQL_BODY = {"type": "object", "required": ["sql"], "properties": {"sql": {"type": "string"}}}
_UPLOAD = {"type": "object", "required": ["file"], "properties": {"file": _BINARY}}
_INGEST_PARAMS = (
    _param("name", "query", {"type": "string"}, required=True),
    _param("mode", "query", {"enum": ["append", "overwrite", "create"], "default": "append"}),
    _param("format", "query", {"enum": UPLOAD_FORMATS}),
    _param("Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 128}),
)
_MANIFEST_PROPS = {
    **{k: {"type": "string"} for k in ("dataset_id", "name", "created_at", "updated_at")},
    **{k: {"type": "integer"} for k in ("version", "row_count", "total_bytes")},
    "schema_fingerprint": {"type": "string"},
    "objects": {"type": "array", "items": {"type": "string"}},
    "object_rows": {"type": "array", "items": {"type": "integer"}},
    "object_bytes": {"type": "array", "items": {"type": "integer"}},
    "columns": {"type": "array", "items": _OBJECT},
    "schema": {"type": "string", "description": "The Arrow schema, IPC-serialised, base64"},
    "dropped": {"type": "boolean"},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "flightlake HTTP shim", "version": "1"},
    "paths": {
        "/health": {"get": _health_op(
            "Ready: lake loaded, Flight serving, the object store answers. "
            "{status, service} only, unless the Authorization header is valid", auth=False)},
        "/v1/status": {"get": _health_op(
            "/health with details: version, datasets, storage, error", auth=True)},
        "/metrics": {"get": _op(
            "Prometheus metrics: requests, errors, rows and bytes in/out, durations, "
            "ingests in flight", _content({"type": "string"}, "text/plain"), {})},
        "/v1/ingest": {"post": _op(
            "Upload CSV, Parquet or Arrow IPC (multipart field 'file', or the raw body); "
            "answers the dataset's manifest plus rows_written",
            _content(_MANIFEST), {
                400: "Bad name, mode, body or file", 409: "Schema conflict or mode=create",
                413: "Body over max_upload_bytes", 503: "Ingest slots busy (Retry-After: 5)"},
            _INGEST_PARAMS,
            {**_content(_UPLOAD, "multipart/form-data"),
             **_content(_BINARY, "text/csv", "application/vnd.apache.parquet", ARROW_STREAM)})},
        "/v1/sql": {"post": _op(
            "Run one SELECT; rows stream as JSON (default), Arrow IPC or CSV by Accept",
            {**_content({"type": "array", "items": _OBJECT}),
             **_content(_BINARY, ARROW_STREAM), **_content({"type": "string"}, "text/csv")},
            {400: "Bad SQL or not one SELECT", 404: "Unknown dataset", 413: "Body over 1 MiB"},
            (_param("Accept", "header", {"enum": RESULT_TYPES}),),
            _content(_SQL_BODY))},
        "/v1/datasets": {"get": _listing(_op(
            "Every dataset's manifest, by name, at most max_list of them",
            _content({"type": "array", "items": _MANIFEST}), {}))},
        "/v1/datasets/{name}": {
            "get": _op("One dataset's manifest", _content(_MANIFEST),
                       {404: "Unknown dataset"}, (_NAME,)),
            "delete": _op("Drop a dataset: answers {dropped, version}", _content(_OBJECT),
                          {404: "Unknown dataset"}, (_NAME,))},
        "/openapi.json": {"get": _op("This document", _content(_OBJECT), {}, auth=False)},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "status"], "properties": {
            "error": {"type": "string"}, "status": {"type": "integer"}}},
        "Manifest": {"type": "object", "properties": _MANIFEST_PROPS},
    }},
}  # fmt: skip
