"""Headless Chromium for the dashboard: Debian's `chromium` package, driven by Playwright.

Playwright's own browser download needs the internet; Debian's chromium (installed by
scripts/setup) is used through `executable_path` instead. Used by the browser tests and by
`scripts/screenshot`.
"""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CANDIDATES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    """The Chromium executable: $LIVELAB_CHROMIUM, else chromium on PATH, else None."""
    explicit = os.environ.get("LIVELAB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium executable for a test: missing, it fails the test in CI (CI=true), where
    scripts/setup must have installed it, and skips it with the reason elsewhere."""
    import pytest

    executable = find_chromium()
    if executable is None:
        message = "chromium is not installed (scripts/setup installs Debian's chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return executable


def launch(playwright: Playwright, executable: str) -> Browser:
    # Playwright passes --no-sandbox (chromium_sandbox=False), which Chromium needs as root.
    return playwright.chromium.launch(executable_path=executable, headless=True)


_running: list[tuple[Playwright, Browser]] = []


def shared_browser() -> Browser:
    """One browser for the whole test process, started on first use, closed at exit.

    Playwright's sync API allows one running instance per thread, so every test that needs a
    browser (tests/dashboard, tests/test_demo.py) shares this one.
    """
    if not _running:
        executable = require_chromium()
        playwright = sync_playwright().start()
        _running.append((playwright, launch(playwright, executable)))
        atexit.register(_stop)
    return _running[0][1]


def _stop() -> None:
    while _running:
        playwright, browser = _running.pop()
        browser.close()
        playwright.stop()


def sign_in(page: Page, base_url: str, key: str, query: str = "") -> None:
    """Open the dashboard, sign in with `key` and wait until the series table is filled."""
    page.goto(f"{base_url}/{query}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#series tbody tr").first.wait_for()


def wait_for_chart(page: Page, traces: int) -> None:
    """Wait until plotly has drawn `traces` traces (3 per series: min, max band and avg)."""
    page.wait_for_function(
        "n => document.querySelectorAll('#chart .scatterlayer .trace').length === n", arg=traces
    )
