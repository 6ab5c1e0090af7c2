"""Fixtures for the dashboard tests: the API as a real server process on the session's
database, Debian's chromium through Playwright, and a page that records every request.

Without chromium the browser tests are skipped with the reason, except in CI (CI=true),
where a missing browser is a failure: scripts/setup installs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request

from api import keys
from tests.dashboard.browser import shared_browser
from tests.dashboard.seed import BUSY, QUIET
from tests.helpers import Publisher, count_readings, free_port, rejections, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def api_url(database_url: str) -> Iterator[str]:
    """Base URL of `livelab-api serve` running on the session's database."""
    port = free_port()
    env = dict(
        os.environ,
        LIVELAB_DATABASE_URL=database_url,
        LIVELAB_API_MIGRATE="false",
        LIVELAB_API_KEY_CACHE_SECONDS="0",
    )
    exe = Path(sys.executable).parent / "livelab-api"
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"livelab-api exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, timeout=30, what="livelab-api serve")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def browser() -> Browser:
    return shared_browser()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # A fixed zone unlike the server's UTC, so that "the browser's zone" is visible.
    ctx = browser.new_context(
        timezone_id="America/New_York", viewport={"width": 1280, "height": 900}
    )
    yield ctx
    ctx.close()


@pytest.fixture
def requests_seen(context: BrowserContext) -> list[str]:
    """Every URL the pages of `context` requested (documents, scripts, fetches, ...)."""
    seen: list[str] = []

    def record(request: Request) -> None:
        seen.append(request.url)

    context.on("request", record)
    # Recorded first, then refused: a request elsewhere fails the test and goes nowhere.
    context.route(re.compile(r"^(?!http://127\.0\.0\.1[:/])"), lambda route: route.abort())
    return seen


@pytest.fixture
def page(context: BrowserContext, requests_seen: list[str]) -> Page:
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


@pytest.fixture
def make_key(db: psycopg.Connection) -> Callable[..., str]:
    def make(*labs: str) -> str:
        key, _ = keys.create_key(db, "dashboard-test", list(labs))
        return key

    return make


@pytest.fixture
def seeded(start_worker, publisher: Publisher, db, lab: str, make_key) -> str:
    """The test's lab with two devices (one silent for 2 hours) and one rejection; its key."""
    start_worker()
    # aq-busy sends SenML (which carries the unit), aq-quiet telemetry form 2.
    pack = [{"bu": "ug/m3"}] + [{"n": "no2", "t": t.timestamp(), "v": v} for t, v in BUSY]
    publisher.publish(f"livelab/{lab}/aq-busy/senml", json.dumps(pack))
    for t, v in QUIET:
        payload = {"ts": t.isoformat().replace("+00:00", "Z"), "values": {"no2": v}}
        publisher.publish(f"livelab/{lab}/aq-quiet/telemetry", json.dumps(payload))
    publisher.publish(f"livelab/{lab}/aq-quiet/telemetry", b'{"no2": 17.4,')
    wait_for(lambda: count_readings(db, lab) == len(BUSY) + len(QUIET), what="readings stored")
    wait_for(lambda: len(rejections(db, lab)) == 1, what="the rejection")
    key: str = make_key(lab)
    return key
