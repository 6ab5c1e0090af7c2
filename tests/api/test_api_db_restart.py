"""The API across a database restart: 503 at worst while it is down, never a 500, and fine after."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api import keys
from api.app import create_app
from api.settings import Settings
from schemas.migrate import migrate


def test_api_recovers_after_a_database_restart(private_postgres, lab) -> None:
    import psycopg

    url = private_postgres.database("livelab")
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        key, _ = keys.create_key(conn, "restart", [lab])
    auth = {"Authorization": f"Bearer {key}"}
    settings = Settings(
        database_url=url, api_pool_min_size=2, api_pool_timeout=2, api_key_cache_seconds=0
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/labs", headers=auth).status_code == 200
        private_postgres.stop()
        down = client.get("/v1/labs", headers=auth)
        assert down.status_code == 503, down.text
        assert client.get("/ready").status_code == 503
        private_postgres.start()  # returns once the server accepts connections
        # No warm-up: the pool still holds connections from before the restart. Each must be
        # noticed and replaced as it is handed out, not fail a request.
        statuses = [client.get("/v1/labs", headers=auth).status_code for _ in range(6)]
        assert statuses == [200] * 6
        assert client.get("/ready").status_code == 200
