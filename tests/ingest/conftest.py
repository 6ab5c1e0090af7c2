"""Fixtures of the ingest tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import free_port


@pytest.fixture
def worker_env(database_url: str, lab: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LIVELAB_DATABASE_URL=database_url,
        LIVELAB_MIGRATE="false",
        LIVELAB_INGEST_CLIENT_ID=f"test-crash-{lab}",
        LIVELAB_INGEST_TOPICS=f"livelab/{lab}/#",
        LIVELAB_INGEST_SESSION_EXPIRY="300",
        LIVELAB_INGEST_HTTP_PORT=str(free_port()),
        LIVELAB_INGEST_BATCH_MESSAGES="100",
        LIVELAB_LOG_LEVEL="INFO",
    )
    return env
