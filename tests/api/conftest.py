"""Fixtures for the API tests: a running app (lifespan and pool) on the session's database,
keys made with `api.keys`, and a helper that stores series and readings with plain SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import keys
from api.app import create_app
from api.settings import Settings
from ingest import rollups

Reading = tuple[datetime, float]


@pytest.fixture(scope="session")
def api_settings(database_url: str) -> Settings:
    # No key cache: tests revoke keys and expect the next request to see it.
    return Settings(
        database_url=database_url, api_key_cache_seconds=0, api_pool_max_size=4, api_rate_limit=0
    )


@pytest.fixture(scope="session")
def client(api_settings: Settings) -> Iterator[TestClient]:
    """One app for the session (lifespan: migrate, open and check the pool)."""
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture
def make_key(db: psycopg.Connection) -> Callable[..., str]:
    """make_key(lab, ...) -> a new key for those labs ('*' for all)."""

    def make(*labs: str, name: str = "test") -> str:
        key, _ = keys.create_key(db, name, list(labs))
        return key

    return make


@pytest.fixture
def auth(make_key: Callable[..., str], lab: str) -> dict[str, str]:
    """Headers with a key scoped to this test's lab."""
    return {"Authorization": f"Bearer {make_key(lab)}"}


@pytest.fixture
def add_series(db: psycopg.Connection) -> Callable[..., int]:
    """add_series(lab, device, sensor, readings, unit=None) -> series id.

    Fills the series registry the way the ingest writer keeps it (first/last time, count),
    and the lab's rollups (rebuilt from its readings, as ``livelab-rollups rebuild`` does).
    """

    def add(
        lab: str, device: str, sensor: str, readings: Iterable[Reading], unit: str | None = None
    ) -> int:
        rows = list(readings)
        times = [t for t, _ in rows]
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO series (lab, device, sensor, unit, first_time, last_time, "
                "reading_count) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    lab,
                    device,
                    sensor,
                    unit,
                    min(times, default=None),
                    max(times, default=None),
                    len(rows),
                ),
            )
            row = cur.fetchone()
            assert row is not None
            series_id: int = row[0]
            with cur.copy("COPY readings (series_id, time, value) FROM STDIN") as copy:
                for t, v in rows:
                    copy.write_row((series_id, t, v))
        rollups.rebuild(db, lab)
        return series_id

    return add
