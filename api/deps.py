"""Dependencies of the routes, as `Annotated` aliases.

- `Conn`: an async connection from the pool, returned to it after the request.
- `ApiKey`: the caller's key (401 when it is missing, malformed, unknown or revoked; 429 with
  `Retry-After` when the key is over its request rate).
- `heavy_slot`: one of the key's concurrent aggregate/readings slots (429 when all are taken),
  and one of the pool's connections that such requests may use (the rest stay free for
  /ready and key lookups; 503 after `api_pool_timeout` when none frees up).
- `Lab`: the `{lab}` path parameter, checked against the key's scope (404 when outside it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.keys import KeyCache, KeyInfo, is_well_formed
from api.limits import ConcurrencyCap, RateLimiter, too_many
from api.params import LAB_PATTERN
from api.settings import Settings
from schemas.names import is_lab


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    async with get_pool(request).connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(get_conn)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`llk_...`) made with `livelab-api create-key`.",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def get_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> KeyInfo:
    if credentials is None:
        raise _unauthorized("an API key is required: send the header 'Authorization: Bearer <key>'")
    if not is_well_formed(credentials.credentials):  # refused before the database is asked
        raise _unauthorized("the API key is not valid (not a livelab key)")
    cache: KeyCache = request.app.state.key_cache
    info = await cache.lookup(credentials.credentials)
    if info is None:
        raise _unauthorized("the API key is not valid (unknown or revoked)")
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None and (wait := limiter.take(info.id)):
        raise too_many(f"too many requests for this API key: retry in {math.ceil(wait)} s", wait)
    return info


ApiKey = Annotated[KeyInfo, Depends(get_api_key)]


async def heavy_slot(request: Request, key: ApiKey) -> AsyncIterator[None]:
    """Holds one of the key's concurrent aggregate/readings slots for the request, taken
    before the request asks the pool for a connection (429 when the key has none free)."""
    cap: ConcurrencyCap | None = request.app.state.concurrency_cap
    if cap is not None and not cap.acquire(key.id):
        raise too_many(
            f"this API key already has {cap.limit} aggregate/readings requests running: "
            "retry when one has finished",
            1,
        )
    gate: asyncio.Semaphore = request.app.state.heavy_gate
    settings: Settings = request.app.state.settings
    try:
        try:
            async with asyncio.timeout(settings.api_pool_timeout):
                await gate.acquire()
        except TimeoutError:
            raise HTTPException(
                status_code=503,
                detail="every connection for aggregate/readings requests is busy: retry soon",
                headers={"Retry-After": "1"},
            ) from None
        try:
            yield
        finally:
            gate.release()
    finally:
        if cap is not None:
            cap.release(key.id)


def lab_not_found(lab: str) -> HTTPException:
    shown = lab if len(lab) <= 80 else lab[:77] + "..."
    return HTTPException(status_code=404, detail=f"lab {shown!r} not found")


async def get_lab(
    lab: Annotated[
        str,
        Path(
            description="The lab's name. Any other name answers 404, like a lab outside the "
            "key's scope.",
            examples=["malmo-air"],
            # Documented, not validated here: a bad name is a 404, not a 400 (see below).
            json_schema_extra={"pattern": LAB_PATTERN},
        ),
    ],
    key: ApiKey,
    conn: Conn,
) -> str:
    """The lab, when the key may see it and it exists; 404 otherwise (the same answer both ways,
    so a key cannot learn which other labs exist)."""
    if not is_lab(lab) or not key.may_see(lab):
        raise lab_not_found(lab)
    if not key.all_labs:
        # Named in the key's scope: it exists for this key even before its first reading.
        return lab
    # `conn` is the request's connection (FastAPI resolves `Conn` once per request).
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM series WHERE lab = %s) "
        "OR EXISTS (SELECT 1 FROM rejections WHERE lab = %s)",
        (lab, lab),
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        raise lab_not_found(lab)
    return lab


Lab = Annotated[str, Depends(get_lab)]
