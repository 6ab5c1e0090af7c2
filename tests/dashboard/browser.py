"""Headless Chromium for the dashboard: Debian's `chromium` package, driven by Playwright.

Playwright's own browser download needs the internet; Debian's chromium (installed by
scripts/setup) is used through `executable_path` instead. Used by the browser tests and by
`scripts/screenshot`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

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
