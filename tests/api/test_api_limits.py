"""Per-key limits on the real API and database: request rate (429 + Retry-After), concurrent
heavy requests, /ready and key lookups while the pool is taken, malformed and random keys."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import AsyncConnectionPool

from api import keys
from api.app import create_app
from api.keys import KeyCache
from api.limits import ConcurrencyCap, RateLimiter
from api.settings import Settings
from tests.helpers import wait_for

RANGE = {"start": "2026-06-01T00:00:00Z", "end": "2026-06-02T00:00:00Z"}


@contextlib.contextmanager
def _client(database_url: str, **settings) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, api_migrate=False, **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_burst_from_one_key_gets_429_while_another_key_is_served(
    database_url: str, make_key: Callable[..., str], lab: str
) -> None:
    a, b = make_key(lab, name="a"), make_key(lab, name="b")
    with _client(database_url, api_rate_limit=0.01, api_rate_burst=3) as client:
        url = f"/v1/labs/{lab}/sensors"
        assert [client.get(url, headers=_bearer(a)).status_code for _ in range(3)] == [200] * 3
        refused = client.get(url, headers=_bearer(a))
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "too many requests" in refused.json()["detail"]
        assert client.get(url, headers=_bearer(b)).status_code == 200
        assert client.get("/ready").status_code == 200  # no key, no limit


def test_a_malformed_key_is_refused_before_the_database_is_asked(
    database_url: str, make_key: Callable[..., str], lab: str
) -> None:
    with _client(database_url) as client:
        # A key cache whose pool is closed: any lookup fails (503), so a 401 means none was made.
        closed = AsyncConnectionPool(database_url, open=False)
        client.app.state.key_cache = KeyCache(closed, ttl=0)  # type: ignore[attr-defined]
        url = f"/v1/labs/{lab}/sensors"
        for bad in [
            "x",
            "llk_short",
            "llk_" + "a" * 42 + "!",
            "llk_" + "a" * 44,
            "Llk_" + "a" * 43,
        ]:
            response = client.get(url, headers=_bearer(bad))
            assert response.status_code == 401, bad
            assert "not a livelab key" in response.json()["detail"]
        well_formed = keys.generate_key()
        assert client.get(url, headers=_bearer(well_formed)).status_code == 503
    assert keys.is_well_formed(make_key(lab))


def test_random_keys_do_not_flush_a_valid_key_from_the_cache(
    database_url: str, db: psycopg.Connection, lab: str
) -> None:
    key, info = keys.create_key(db, "cached", [lab])

    async def run() -> None:
        async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
            cache = KeyCache(pool, ttl=3600, max_entries=5)
            assert await cache.lookup(key) is not None
            for _ in range(50):
                assert await cache.lookup(keys.generate_key()) is None
            db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (info.id,))
            # Still the cached answer: the misses did not evict it (it is re-read after ttl).
            assert await cache.lookup(key) is not None

    asyncio.run(run())


def test_the_per_key_cap_and_ready_while_heavy_requests_hold_the_pool(
    database_url: str, db: psycopg.Connection, make_key: Callable[..., str], lab: str
) -> None:
    a, b = make_key(lab, name="a"), make_key(lab, name="b")
    with _client(
        database_url, api_pool_max_size=3, api_pool_reserved=1, api_key_max_concurrent=1
    ) as client:
        url = f"/v1/labs/{lab}/readings"
        statuses: list[int] = []
        with psycopg.connect(database_url) as locker:
            locker.execute("LOCK TABLE series IN ACCESS EXCLUSIVE MODE")  # readings waits on it

            def heavy(key: str, client: TestClient = client, url: str = url) -> None:
                statuses.append(client.get(url, params=RANGE, headers=_bearer(key)).status_code)

            threads = [threading.Thread(target=heavy, args=(k,)) for k in (a, b)]
            for t in threads:
                t.start()

            def waiting() -> bool:
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'SELECT id, device, sensor FROM series%%'"
                ).fetchone()
                return row is not None and row[0] == 2

            wait_for(waiting, what="both heavy requests waiting on the lock")
            # Two of the three pooled connections are taken, all that heavy requests may use.
            # Key a's second heavy request is refused at once; /ready and key lookups get the
            # reserved connection.
            refused = client.get(url, params=RANGE, headers=_bearer(a))
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            assert client.get("/ready").status_code == 200
            assert client.get(url, headers=_bearer(keys.generate_key())).status_code == 401
            locker.rollback()
        for t in threads:
            t.join(30)
        assert statuses == [200, 200]
        # The slots are free again.
        assert client.get(url, params=RANGE, headers=_bearer(a)).status_code == 200


def test_rate_limiter_refills_and_says_when() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert [limiter.take(1, now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take(1, now=0.0) == pytest.approx(0.5)
    assert limiter.take(2, now=0.0) == 0.0  # another key has its own bucket
    assert limiter.take(1, now=0.5) == 0.0
    assert limiter.take(1, now=10.0) == 0.0 and limiter.take(1, now=10.0) == 0.0
    assert limiter.take(1, now=10.0) > 0
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_concurrency_cap_counts_per_key() -> None:
    cap = ConcurrencyCap(2)
    assert cap.acquire(1) and cap.acquire(1) and not cap.acquire(1)
    assert cap.acquire(2)
    cap.release(1)
    assert cap.acquire(1)
