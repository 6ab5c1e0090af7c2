"""The OpenAPI document, made to describe the API as it answers.

FastAPI's generated document is post-processed once (`install(app)` replaces `app.openapi`):

- Every operation with parameters lists FastAPI's automatic "422 Validation Error". This API
  never answers 422: `api.errors` turns a `RequestValidationError` into a 400 with a plain
  `{"detail": "..."}` (CONTRACT.md). So 422 is removed, a 400 `ErrorDetail` is documented in
  its place, and the then unused `HTTPValidationError` / `ValidationError` schemas are dropped.
- An optional query parameter typed `X | None` in Python comes out as
  ``anyOf: [X, {type: null}]``. A query string cannot carry a JSON null (leaving the parameter
  out is how it is "not given"; `required: false` says that), so the schema becomes just ``X``.

The response documents shared by the `/v1` routers are here too.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from api.models import ErrorDetail

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}

# Responses of every `/v1` operation (router-level `responses=`).
V1_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorDetail,
        "description": "The API key is missing, unknown or revoked.",
        "headers": {
            "WWW-Authenticate": {
                "description": "Always `Bearer`.",
                "schema": {"type": "string"},
            }
        },
    },
    429: {
        "model": ErrorDetail,
        "description": "The API key is over its request rate, or (aggregates, readings) has "
        "its most concurrent requests running.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before the next request.",
                "schema": {"type": "integer"},
            }
        },
    },
    503: {
        "model": ErrorDetail,
        "description": "The database is not reachable or the query took too long; try again "
        "(with a smaller request, if the query was cancelled).",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait, when the database is not reachable.",
                "schema": {"type": "integer"},
            }
        },
    },
}

# Responses of the `/v1/labs/{lab}/...` operations (route-level `responses=`).
LAB_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "A parameter is not valid; `detail` says which."},
    404: {
        "model": ErrorDetail,
        "description": "No such lab, or not in the key's scope (the same answer both ways).",
    },
}

_UNUSED_IF_UNREFERENCED = ("HTTPValidationError", "ValidationError")


def _collapse_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    not_null = [b for b in branches if b != {"type": "null"}]
    if len(not_null) != 1 or len(not_null) == len(branches):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**not_null[0], **rest}


def fix_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Apply the changes of the module docstring to a FastAPI-generated document, in place."""
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for param in operation.get("parameters", ()):
                if param.get("in") == "query" and not param.get("required", False):
                    param["schema"] = _collapse_nullable(param["schema"])
            responses = operation["responses"]
            if responses.pop("422", None) is not None:
                responses.setdefault(
                    "400",
                    {
                        "description": "A parameter is not valid; `detail` says which.",
                        "content": _ERROR_CONTENT,
                    },
                )
            # Keep the status codes in numeric order on the docs pages.
            operation["responses"] = dict(sorted(responses.items()))
    schemas = spec.get("components", {}).get("schemas", {})
    for name in _UNUSED_IF_UNREFERENCED:
        if name in schemas:
            rest = {k: v for k, v in schemas.items() if k not in _UNUSED_IF_UNREFERENCED}
            text = json.dumps([spec.get("paths"), rest])
            if f'"#/components/schemas/{name}"' not in text:
                del schemas[name]
    if '"#/components/schemas/ErrorDetail"' in json.dumps(spec.get("paths")):
        schemas.setdefault("ErrorDetail", ErrorDetail.model_json_schema())
    return spec


def install(app: FastAPI) -> None:
    """Serve the fixed document at /openapi.json (and to /docs, /redoc)."""
    generate = app.openapi  # FastAPI's own: builds the document once and caches it

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = fix_openapi(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
