"""The FastAPI application: `create_app(settings)`.

At start-up the lifespan (1) applies the schema migrations when `api_migrate` is set, retrying
with exponential backoff while the database is not up yet, (2) opens the connection pool and
checks that it can hand out a working connection. At shutdown it closes the pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api import errors, openapi
from api.deps import heavy_slot
from api.keys import KeyCache
from api.limits import ConcurrencyCap, RateLimiter
from api.metrics import Metrics, MetricsMiddleware
from api.routes import aggregates, dashboard, health, labs, latest, readings, rejections, sensors
from api.settings import Settings
from schemas.migrate import MigrationError, migrate

log = logging.getLogger("livelab.api")

DESCRIPTION = """
Readings of the livelab sensors, for partners. Every `/v1/...` call needs an API key:
`Authorization: Bearer llk_...` (made by an operator with `livelab-api create-key`).
A key sees only the labs it was made for; any other lab answers 404.
Errors are JSON `{"detail": "..."}`.
"""


async def _migrate_with_retry(settings: Settings) -> None:
    delay = 0.5
    for attempt in range(1, settings.api_startup_attempts + 1):
        try:
            applied = await asyncio.to_thread(migrate, settings.database_url)
        except MigrationError as exc:
            # Only "cannot connect" is worth waiting for; a failing migration fails again.
            if "cannot connect" not in str(exc) or attempt == settings.api_startup_attempts:
                raise
            wait = delay * (1 + random.random() / 2)
            log.warning(
                "database not reachable (attempt %d of %d), retrying in %.1f s: %s",
                attempt,
                settings.api_startup_attempts,
                wait,
                exc,
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, 10)
        else:
            log.info("schema up to date (%s)", f"applied {applied}" if applied else "no changes")
            return


def _make_pool(settings: Settings) -> AsyncConnectionPool:
    timeout_ms = int(settings.api_statement_timeout * 1000)

    async def configure(conn: AsyncConnection) -> None:
        # UTC so times come back with a zero offset; the timeout so one query cannot hog a
        # connection for ever (QueryCanceled becomes a 503).
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute(f"SET statement_timeout = {timeout_ms}")

    return AsyncConnectionPool(
        settings.database_url,
        min_size=settings.api_pool_min_size,
        max_size=settings.api_pool_max_size,
        timeout=settings.api_pool_timeout,
        kwargs={"autocommit": True},
        configure=configure,
        # Test each connection as it is handed out: after a database restart, stale pooled
        # connections are replaced instead of failing one request each.
        check=AsyncConnectionPool.check_connection,
        open=False,
        name="livelab-api",
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.api_migrate:
            await _migrate_with_retry(settings)
        pool = _make_pool(settings)
        await pool.open(wait=True, timeout=max(settings.api_pool_timeout, 10))
        await pool.check()
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        app.state.pool = pool
        app.state.key_cache = KeyCache(pool, ttl=settings.api_key_cache_seconds)
        log.info("connection pool open (%d-%d connections)", pool.min_size, pool.max_size)
        try:
            yield
        finally:
            await pool.close()
            app.state.pool = None

    # The docs pages (/docs, /redoc) serve Swagger UI and ReDoc from the package, not from a
    # CDN: a live lab's network may not reach the internet.
    app = FastAPIOffline(
        title="livelab API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = None
    app.state.rate_limiter = (
        RateLimiter(settings.api_rate_limit, settings.api_rate_burst)
        if settings.api_rate_limit > 0
        else None
    )
    app.state.concurrency_cap = (
        ConcurrencyCap(settings.api_key_max_concurrent) if settings.api_key_max_concurrent else None
    )
    heavy_max = max(1, settings.api_pool_max_size - settings.api_pool_reserved)
    app.state.heavy_gate = asyncio.Semaphore(heavy_max)
    app.state.metrics = Metrics()
    app.state.metrics.watch_pool(lambda: app.state.pool)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(labs.router)
    heavy = [Depends(heavy_slot)]  # per-key and overall caps on the long requests
    app.include_router(aggregates.router, dependencies=heavy)
    app.include_router(sensors.router)
    app.include_router(latest.router)
    app.include_router(readings.router, dependencies=heavy)
    app.include_router(rejections.router)
    dashboard.install(app)  # the page at /, its files, plotly.js
    openapi.install(app)
    return app
