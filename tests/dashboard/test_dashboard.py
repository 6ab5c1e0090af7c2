"""The dashboard at `/` in a real browser (Debian's chromium through Playwright), on data that
went through the real broker, ingest worker and database, served by a real API process."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page

from tests.dashboard.browser import sign_in, wait_for_chart
from tests.dashboard.seed import BUSY, QUIET
from tests.helpers import Publisher


def get(url: str, key: str | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    return urllib.request.urlopen(request, timeout=10)


def test_page_and_its_scripts_are_served_by_the_app(api_url: str) -> None:
    with get(f"{api_url}/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        html = resp.read().decode()
    assert '<script src="/vendor/plotly.min.js"' in html
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html
    with get(f"{api_url}/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        etag = resp.headers["ETag"]
    with get(f"{api_url}/vendor/plotly.min.js") as resp:
        assert resp.headers.get("Content-Encoding") is None
        assert b"plotly.js" in resp.read(2000)
    try:
        get(f"{api_url}/vendor/plotly.min.js", headers={"If-None-Match": etag})
        raise AssertionError("expected 304")
    except urllib.error.HTTPError as exc:
        assert exc.code == 304
    with get(f"{api_url}/static/dashboard.js") as resp:
        assert b"livelab" in resp.read()
    # The dashboard is not part of the partner API's document.
    with get(f"{api_url}/openapi.json") as resp:
        assert "/" not in json.load(resp)["paths"]


def test_sign_in_shows_series_chart_and_rejections_all_from_127_0_0_1(
    page: Page, requests_seen: list[str], api_url: str, seeded: str, lab: str
) -> None:
    sign_in(page, api_url, seeded)
    assert page.locator("#lab").input_value() == lab
    rows = page.locator("#series tbody tr")
    assert rows.count() == 2
    busy, quiet = rows.nth(0), rows.nth(1)
    cells = busy.locator("td").all_inner_texts()
    assert cells[1:4] == ["aq-busy", "no2", "ug/m3"]
    assert float(cells[4]) == pytest.approx(BUSY[-1][1])
    assert cells[7] == str(len(BUSY))
    assert cells[8] == "reporting"
    # The last reading in the browser's zone (America/New_York, see conftest).
    assert cells[5] == BUSY[-1][0].astimezone(ZoneInfo("America/New_York")).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    assert quiet.locator("td").nth(8).inner_text() == "silent"
    assert "silent" in (quiet.get_attribute("class") or "")
    assert "1 of 2 devices silent for more than 15 min: aq-quiet" in page.inner_text(
        "#silent-summary"
    )

    # The chart: both no2 series (the first sensor's), avg line and min/max band each.
    wait_for_chart(page, 6)
    chart = page.evaluate("window.livelab.state.chart")
    assert chart["bucket"] == "15m"  # 24 h by default
    plotted = page.evaluate(
        "[...document.getElementById('chart').data].map(t => ({name: t.name, x: t.x, y: t.y}))"
    )
    for i, device in enumerate(["aq-busy", "aq-quiet"]):
        query = {
            "start": chart["start"],
            "end": chart["end"],
            "bucket": chart["bucket"],
            "tz": "America/New_York",
            "stats": "avg,min,max,count",
            "device": device,
            "sensor": "no2",
            "fill": "null",
        }
        url = f"{api_url}/v1/labs/{lab}/aggregates?{urlencode(query)}"
        with get(url, seeded) as resp:
            data = json.load(resp)["data"]
        assert any(row["count"] for row in data)
        low, high, avg = plotted[3 * i : 3 * i + 3]
        assert avg["name"] == f"{device} no2 avg"
        assert avg["y"] == [row["avg"] for row in data]
        assert low["y"] == [row["min"] for row in data]
        assert high["y"] == [row["max"] for row in data]
        first = datetime.fromisoformat(data[0]["bucket"]).astimezone(ZoneInfo("America/New_York"))
        assert avg["x"][0] == first.strftime("%Y-%m-%d %H:%M:%S")

    reasons = page.locator("#rejections tbody tr").all_inner_texts()
    assert len(reasons) == 1 and "malformed JSON" in reasons[0]

    # Every request of the page went to this server on 127.0.0.1, and nowhere else.
    assert requests_seen
    for url in requests_seen:
        parts = urlsplit(url)
        assert parts.scheme in ("http", "blob", "data"), url
        if parts.scheme == "http":
            assert parts.netloc == urlsplit(api_url).netloc, url


def test_wrong_key_shows_a_clear_error(page: Page, api_url: str) -> None:
    page.goto(api_url)
    page.get_by_label("API key").fill("llk_" + "x" * 43)  # well formed, unknown
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert").filter(has_text="Sign-in failed")
    alert.wait_for()
    assert "the API key is not valid (unknown or revoked)" in alert.inner_text()
    assert page.locator("#board").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_key_stays_in_the_tab_session_only(
    page: Page, browser, api_url: str, lab: str, make_key
) -> None:
    key = make_key(lab)
    page.goto(api_url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#board").wait_for()
    assert page.evaluate("sessionStorage.getItem('livelab.key')") == key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.reload()  # same tab: still signed in
    page.locator("#board").wait_for()
    assert "sees 1 lab" in page.inner_text("#whoami")
    other = browser.new_context()  # a new browser session: signed out
    try:
        fresh = other.new_page()
        fresh.goto(api_url)
        assert fresh.locator("#sign-in").is_visible()
    finally:
        other.close()
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.length") == 0


def test_latest_values_refresh_while_the_page_is_open(
    page: Page, api_url: str, seeded: str, lab: str, publisher: Publisher
) -> None:
    sign_in(page, api_url, seeded, "?refresh=1")
    value = page.locator("#series tbody tr[data-device=aq-quiet] td").nth(4)
    assert float(value.inner_text()) == QUIET[-1][1]
    t = datetime.now(UTC).replace(microsecond=0)
    payload = {"ts": t.isoformat().replace("+00:00", "Z"), "values": {"no2": 123.5}}
    publisher.publish(f"livelab/{lab}/aq-quiet/telemetry", json.dumps(payload))
    page.wait_for_function(
        "() => document.querySelector('#series tr[data-device=aq-quiet] td:nth-child(5)')"
        ".textContent === '123.5'"
    )
    row = page.locator("#series tbody tr[data-device=aq-quiet]")
    assert row.locator("td").nth(8).inner_text() == "reporting"


def test_ranges_pick_buckets_and_a_chosen_zone_shows_its_times(
    page: Page, api_url: str, seeded: str
) -> None:
    sign_in(page, api_url, seeded)
    wait_for_chart(page, 6)
    ranges = [
        ("6 h", timedelta(hours=6), "5m"),
        ("7 d", timedelta(days=7), "1h"),
        ("30 d", timedelta(days=30), "6h"),
        ("1 y", timedelta(days=365), "1d"),
    ]
    for label, span, bucket in ranges:
        page.get_by_label(label, exact=True).check()
        page.wait_for_function("b => window.livelab.state.chart?.bucket === b", arg=bucket)
        chart = page.evaluate("window.livelab.state.chart")
        assert datetime.fromisoformat(chart["end"]) - datetime.fromisoformat(chart["start"]) == span

    # A chosen IANA zone: the table's times and a custom range are read in that zone.
    page.get_by_label("Time zone").select_option("Asia/Tokyo")
    tokyo = ZoneInfo("Asia/Tokyo")
    cell = page.locator("#series tbody tr[data-device=aq-busy] td").nth(5)
    assert cell.inner_text() == BUSY[-1][0].astimezone(tokyo).strftime("%Y-%m-%d %H:%M:%S")
    page.get_by_label("custom", exact=True).check()
    page.get_by_label("Start", exact=True).fill("2026-03-29T01:30")
    page.get_by_label("End", exact=True).fill("2026-03-30T01:30")
    page.get_by_role("button", name="Draw").click()
    # 01:30 in Tokyo (UTC+9) is 16:30 UTC the day before.
    page.wait_for_function("() => window.livelab.state.chart?.start === '2026-03-28T16:30:00.000Z'")
    chart = page.evaluate("window.livelab.state.chart")
    assert chart["end"] == "2026-03-29T16:30:00.000Z"
    assert chart["bucket"] == "5m"  # a custom range: the smallest bucket for <= 400 points
    assert "(Asia/Tokyo)" in page.inner_text("#chart-summary")
    # Across a DST change (Stockholm, 2026-03-29 02:00 -> 03:00).
    start = page.evaluate(
        "window.livelab.instantOfWallTime('2026-03-29T04:00', 'Europe/Stockholm').toISOString()"
    )
    assert start == "2026-03-29T02:00:00.000Z"


def test_csv_links_download_what_is_shown(page: Page, api_url: str, seeded: str, lab: str) -> None:
    sign_in(page, api_url, seeded)
    wait_for_chart(page, 6)
    link = page.get_by_role("link", name="CSV: aq-busy no2")
    with page.expect_download() as info:
        link.click()
    got = Path(info.value.path()).read_text()
    with get(api_url + (link.get_attribute("href") or ""), seeded) as resp:
        assert got == resp.read().decode()
    assert got.startswith("device,sensor,bucket,avg,min,max,count\n")
    with page.expect_download() as info:
        page.locator("#rejections-csv").click()
    lines = Path(info.value.path()).read_text().splitlines()
    assert lines[0] == (
        "received_at,last_received_at,device,topic,reason,count,rejected_count,payload_size"
    )
    assert len(lines) == 2 and "malformed JSON" in lines[1]
    with page.expect_download() as info:
        page.locator("#series-csv").click()
    lines = Path(info.value.path()).read_text().splitlines()
    assert lines[1].startswith(f"aq-busy,no2,ug/m3,{BUSY[-1][1]},")
