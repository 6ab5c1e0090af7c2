"""Liveness, readiness and metrics: no API key needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import get_pool
from api.models import ErrorDetail, Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (does not touch the database)."""
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Health,
    responses={503: {"model": ErrorDetail, "description": "The database is not reachable."}},
)
async def ready(request: Request) -> Response:
    """The database answers `SELECT 1` through the connection pool (else 503)."""
    try:
        async with asyncio.timeout(5):
            async with get_pool(request).connection(timeout=5) as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:
        return JSONResponse(
            status_code=503,
            content={"detail": f"database not reachable: {type(exc).__name__}: {exc}".strip()},
        )
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, in-flight requests, connection pool."""
    body = generate_latest(request.app.state.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
