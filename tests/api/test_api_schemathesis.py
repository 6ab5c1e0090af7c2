"""The API answers as its own OpenAPI document says: schemathesis, in-process, on the real database.

Schemathesis loads `/openapi.json` from the ASGI app (no server, no network), generates requests
from it (valid and invalid, deterministically, a bounded number per operation) and checks every
answer against the document: no 5xx, only documented status codes, bodies and content types as
documented, and invalid input refused. The lab has real series, readings and rejections and the
key is a real one, so the generated requests reach the queries, not only the 401/404 paths.

Left out: `positive_data_acceptance`. It expects every request that is valid per the document to
succeed, and some cannot be: `end` must be after `start` (a rule between two parameters, which
OpenAPI cannot state), `cursor` is an opaque value the server hands out, and a well-formed `tz`
may still name no time zone. Those 400s are correct answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from api import keys
from api.app import create_app
from api.settings import Settings
from ingest import rollups

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.ignored_auth,
]
MAX_EXAMPLES = 20  # per operation and generation mode; the whole test takes a few seconds
SEED = 20260601
LAB = "schemathesis-lab"  # fixed, so that the generated requests are the same every run
# The key is chosen now, because schemathesis takes the headers of its config while the tests
# are collected; the `st_key` fixture stores it (through `keys.create_key`) in the database.
KEY = keys.generate_key()


@pytest.fixture(scope="module")
def st_lab(database_url: str) -> str:
    """A lab with two devices, three series of readings around the document's example dates,
    and a few rejections."""
    lab = LAB
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for device, sensor in [("station-1", "no2"), ("station-1", "pm2.5"), ("station-2", "no2")]:
            times = [t0 + timedelta(minutes=7 * i) for i in range(400)]
            row = conn.execute(
                "INSERT INTO series (lab, device, sensor, unit, first_time, last_time, "
                "reading_count) VALUES (%s, %s, %s, 'ug/m3', %s, %s, %s) RETURNING id",
                (lab, device, sensor, times[0], times[-1], len(times)),
            ).fetchone()
            assert row is not None
            with conn.cursor().copy("COPY readings (series_id, time, value) FROM STDIN") as copy:
                for i, t in enumerate(times):
                    copy.write_row((row[0], t, 10 + (i % 17) * 0.5))
        rollups.rebuild(conn, lab)
        for i in range(3):
            payload = f'{{"no2": "high-{i}"}}'.encode()
            conn.execute(
                "INSERT INTO rejections (received_at, lab, device, topic, reason, "
                "rejected_count, payload, payload_size) VALUES (%s, %s, %s, %s, %s, 1, %s, %s)",
                (
                    t0 + timedelta(minutes=i),
                    lab,
                    "station-1",
                    f"livelab/{lab}/station-1/telemetry",
                    f"value of 'no2' is not a number: 'high-{i}'",
                    payload,
                    len(payload),
                ),
            )
    return lab


class _LateApp:
    """An ASGI app forwarding to the real one, which the `st_key` fixture makes once the session's
    database exists (it does not yet while the tests are collected)."""

    app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the st_key fixture installs the app"
        await self.app(scope, receive, send)


APP = _LateApp()


@pytest.fixture(scope="module")
def st_key(database_url: str, st_lab: str) -> Iterator[str]:
    """A key for `st_lab`, with the app running on the session's database. Schemathesis runs the
    app's lifespan (open the pool) on its own event loop thread; `shutdown_lifespans` ends it."""
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        mock.patch.object(keys, "generate_key", return_value=KEY),
    ):
        key, _ = keys.create_key(conn, "schemathesis", [st_lab])
    assert key == KEY
    settings = Settings(
        database_url=database_url, api_key_cache_seconds=0, api_pool_max_size=4, api_rate_limit=0
    )
    APP.app = create_app(settings)
    try:
        yield key
    finally:
        asgi.shutdown_lifespans()
        APP.app = None


# The document does not depend on the settings: it comes from an app that is never started.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="postgresql://unused")).openapi(),
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # As `schemathesis run -H`: schemathesis knows this header is the credentials, so
            # its "without credentials" cases really leave it out.
            "headers": {"Authorization": f"Bearer {KEY}"},
            # The key's lab, so that requests get past the 404 of a lab the key cannot see.
            "parameters": {"path.lab": LAB},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,  # Hypothesis `derandomize`: the same cases every run
                "database": "none",  # no .hypothesis/ example database
                "mode": "all",  # valid and invalid requests
            },
        }
    ),
)
schema.app = APP  # what `schemathesis.openapi.from_asgi` does: send requests to it in-process


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Case, st_key: str) -> None:
    response = case.call_and_validate(checks=CHECKS)
    if case.meta is not None and case.meta.generation.mode.is_positive:
        # 401 is documented, so the checks would pass if the key did not get through.
        assert response.status_code != 401, "the test's key was not accepted"
