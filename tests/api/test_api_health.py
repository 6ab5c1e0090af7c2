"""/health, /ready, /metrics, the OpenAPI page, and start-up."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.settings import Settings
from schemas.migrate import MigrationError


def test_health(client: TestClient) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_ready(client: TestClient) -> None:
    resp = client.get("/ready")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_ready_without_database(api_settings: Settings) -> None:
    app = create_app(api_settings.model_copy(update={"api_migrate": False}))
    with TestClient(app) as test_client:
        real = app.state.pool
        # A pool that was never opened cannot hand out connections.
        app.state.pool = AsyncConnectionPool("postgresql://127.0.0.1:1/none", open=False)
        try:
            resp = test_client.get("/ready")
        finally:
            app.state.pool = real
        assert resp.status_code == 503
        assert "database not reachable" in resp.json()["detail"]
        assert test_client.get("/health").status_code == 200


def test_metrics(client: TestClient, lab: str, auth: dict[str, str]) -> None:
    client.get(f"/v1/labs/{lab}/aggregates", headers=auth, params={"start": "x", "end": "y"})
    client.get("/no/such/page")
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert (
        'livelab_api_requests_total{method="GET",route="/v1/labs/{lab}/aggregates",status="400"}'
        in text
    )
    assert 'route="unmatched",status="404"' in text
    assert lab not in text  # route templates, never raw paths
    assert "livelab_api_request_duration_seconds_bucket" in text
    assert "livelab_api_requests_in_flight" in text
    assert "livelab_api_db_pool_size" in text


def test_openapi_documents_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    agg = spec["paths"]["/v1/labs/{lab}/aggregates"]["get"]
    names = {p["name"] for p in agg["parameters"]}
    assert {"start", "end", "bucket", "tz", "stats", "device", "sensor", "format", "fill"} <= names
    assert all(p.get("description") for p in agg["parameters"])
    assert "Europe/Stockholm" in str(agg)
    assert spec["paths"]["/v1/labs"]["get"]["description"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_startup_migrates(api_settings: Settings) -> None:
    # the session database is already migrated: the lifespan's migrate is a no-op that works
    with TestClient(create_app(api_settings.model_copy(update={"api_migrate": True}))) as c:
        assert c.get("/ready").status_code == 200


def test_startup_retries_then_fails_when_database_is_down(
    api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings.model_copy(
        update={"database_url": "postgresql://livelab@127.0.0.1:1/none", "api_startup_attempts": 2}
    )
    with pytest.raises(MigrationError, match="cannot connect"), TestClient(create_app(settings)):
        pass
    assert "database not reachable (attempt 1 of 2)" in caplog.text


def test_docs_pages_work_without_internet(client: TestClient) -> None:
    """Swagger UI and ReDoc come from the app itself, not a CDN."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
        assets = re.findall(r'(?:src|href)="(/static-offline-docs/[^"]+)"', html)
        assert assets, html
        for asset in assets:
            resp = client.get(asset)
            assert resp.status_code == 200, asset
            assert len(resp.content) > 1000, asset


def test_openapi_documents_the_answers_given(client: TestClient) -> None:
    """400 (not FastAPI's 422) for bad parameters, 401 on every /v1 call, 404 for a lab, and
    parameter schemas as strict as the checks the routes make."""
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "ValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        op = item["get"]
        assert "422" not in op["responses"], path
        if path.startswith("/v1/"):
            assert op["responses"]["401"]["headers"]["WWW-Authenticate"], path
        if path.startswith("/v1/labs/"):
            assert {"400", "404"} <= set(op["responses"]), path
            for param in op["parameters"]:
                assert "anyOf" not in param["schema"], (path, param)
    params = {
        p["name"]: p["schema"]
        for p in spec["paths"]["/v1/labs/{lab}/aggregates"]["get"]["parameters"]
    }
    assert params["lab"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$"
    assert params["bucket"]["enum"] == ["1m", "5m", "15m", "1h", "6h", "1d", "1w", "1mo"]
    assert params["format"]["enum"] == ["json", "csv"]
    assert params["start"]["format"] == params["end"]["format"] == "date-time"
    assert params["device"]["items"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$"
    assert params["sensor"]["items"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_\\-.:/]{0,127}$"
    assert params["stats"]["type"] == "array" and "avg" in params["stats"]["items"]["pattern"]
