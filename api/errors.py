"""Error answers: every error is JSON ``{"detail": "<plain words>"}``.

- `RequestValidationError` (a parameter FastAPI could not parse) becomes a 400 naming the
  parameter, instead of FastAPI's 422 with a list of dicts.
- `psycopg.DataError` (a value PostgreSQL refuses, e.g. a time zone it does not know) is a 400.
- `psycopg.errors.QueryCanceled` (statement timeout) and a pool that cannot hand out a
  connection become 503: the request was fine, the database could not answer in time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

log = logging.getLogger("livelab.api")


def describe_validation_errors(errors: Sequence[Any]) -> str:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:]) if len(loc) > 1 else ""
        kind = {"query": "query parameter", "path": "path parameter", "header": "header"}.get(
            where, where
        )
        msg = err.get("msg", "is not valid")
        if err.get("type") == "missing":
            parts.append(f"{kind} {name!r} is required")
        else:
            parts.append(f"{kind} {name!r}: {msg}".replace(" '': ", ": "))
    return "; ".join(parts) or "the request is not valid"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=400, content={"detail": describe_validation_errors(exc.errors())}
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # Input that passed our checks but not PostgreSQL's (e.g. a time zone name that Python's
    # tzdata knows and the server's does not): still the request's fault, so a 400.
    assert isinstance(exc, psycopg.Error)
    message = (exc.diag.message_primary or str(exc)).strip()
    log.warning("database refused the parameters of %s: %s", request.url.path, message)
    return JSONResponse(
        status_code=400, content={"detail": f"the database refused the request: {message}"}
    )


async def _query_canceled(request: Request, exc: Exception) -> JSONResponse:
    log.warning("query cancelled on %s: %s", request.url.path, exc)
    return JSONResponse(
        status_code=503,
        content={
            "detail": "the query took too long and was cancelled; ask for a shorter time "
            "range, a larger bucket or fewer series"
        },
    )


async def _db_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable on %s: %s", request.url.path, exc)
    return JSONResponse(
        status_code=503,
        content={"detail": "the database is not available right now; try again shortly"},
        headers={"Retry-After": "5"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(psycopg.errors.QueryCanceled, _query_canceled)
    app.add_exception_handler(psycopg.DataError, _data_error)
    app.add_exception_handler(PoolTimeout, _db_unavailable)
    app.add_exception_handler(psycopg.OperationalError, _db_unavailable)
