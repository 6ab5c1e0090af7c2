"""Large answers are streamed by a real server and do not hold up other requests; readings
pages scan from the cursor on."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.routes.readings import page_query
from api.settings import Settings
from tests.helpers import free_port

T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    """The app under uvicorn in a thread, on a port of its own."""
    port = free_port()
    settings = Settings(database_url=database_url, api_key_cache_seconds=0, api_migrate=False)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            threading.Event().wait(0.05)
    yield base
    srv.should_exit = True
    thread.join(30)


def test_big_export_is_streamed_and_does_not_block_other_requests(
    server: str, lab: str, add_series: Callable[..., int], auth: dict[str, str]
) -> None:
    # 60 000 one-minute buckets (raw readings: finer than any rollup), about 4 MB of CSV.
    add_series(lab, "dev-1", "t", [(T0 + timedelta(minutes=i), i * 0.5) for i in range(60_000)])
    add_series(lab, "dev-2", "t", [(T0 + timedelta(hours=i), 1.0) for i in range(48)])
    big = {"start": T0.isoformat(), "end": (T0 + timedelta(days=60)).isoformat(),
           "bucket": "1m", "format": "csv", "device": "dev-1"}  # fmt: skip
    small = {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat(),
             "bucket": "1d", "device": "dev-2", "stats": "count"}  # fmt: skip
    url = f"{server}/v1/labs/{lab}/aggregates"
    with (
        httpx.Client(headers=auth, timeout=60) as exporter,
        httpx.Client(headers=auth, timeout=60) as other,
        exporter.stream("GET", url, params=big) as export,
    ):
        assert export.status_code == 200
        # Streamed: no length known in advance, sent in chunks.
        assert "content-length" not in export.headers
        assert export.headers["transfer-encoding"] == "chunked"
        chunks = export.iter_bytes()
        head = next(chunks)
        assert head.startswith(b"device,sensor,bucket,avg,min,max,count\n")
        # The export is open and unread (the server is held by backpressure): others answer.
        assert other.get(f"{server}/health").status_code == 200
        answer = other.get(url, params=small)
        assert answer.status_code == 200
        assert answer.json()["data"] == [
            {"device": "dev-2", "sensor": "t", "bucket": "2025-06-01T00:00:00Z", "count": 24}
        ]
        body = head + b"".join(chunks)
    lines = body.decode().splitlines()
    assert len(lines) == 1 + 60_000
    assert lines[-1] == "dev-1,t,2025-07-12T15:59:00Z,29999.5,29999.5,29999.5,1"

    # Exports abandoned mid-answer leave no cursor or transaction behind on the pool's
    # connections: every later request (more than the pool holds) still answers in full.
    for _ in range(3):
        with (
            httpx.Client(headers=auth, timeout=60) as quitter,
            quitter.stream("GET", url, params=big) as export,
        ):
            next(export.iter_bytes())
    for _ in range(12):
        again = httpx.get(url, params={**big, "format": "json"}, headers=auth, timeout=60)
        assert again.status_code == 200 and len(again.json()["data"]) == 60_000


def test_wide_layout_json_and_csv(
    server: str, lab: str, add_series: Callable[..., int], auth: dict[str, str]
) -> None:
    add_series(lab, "dev-1", "t", [(T0 + timedelta(hours=h), float(h)) for h in (0, 1, 25)])
    add_series(lab, "dev-2", "rh", [(T0 + timedelta(hours=2), 50.0)])
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(days=3)).isoformat(),
              "bucket": "1d", "stats": "max,count", "layout": "wide"}  # fmt: skip
    url = f"{server}/v1/labs/{lab}/aggregates"
    data = httpx.get(url, params=params, headers=auth).json()["data"]
    assert data == [
        {"bucket": "2025-06-01T00:00:00Z", "dev-1/t/max": 1.0, "dev-1/t/count": 2,
         "dev-2/rh/max": 50.0, "dev-2/rh/count": 1},
        {"bucket": "2025-06-02T00:00:00Z", "dev-1/t/max": 25.0, "dev-1/t/count": 1,
         "dev-2/rh/max": None, "dev-2/rh/count": 0},
    ]  # fmt: skip
    text = httpx.get(url, params={**params, "format": "csv", "fill": "null"}, headers=auth).text
    assert text.splitlines() == [
        "bucket,dev-1/t/max,dev-1/t/count,dev-2/rh/max,dev-2/rh/count",
        "2025-06-01T00:00:00Z,1.0,2,50.0,1",
        "2025-06-02T00:00:00Z,25.0,1,,0",
        "2025-06-03T00:00:00Z,,0,,0",
    ]


def _scanned_chunks(plan: object) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "_hyper_" in str(node.get("Relation Name", "")):
                found.add(node["Relation Name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return found


def test_readings_page_scan_starts_at_the_cursor(
    db: psycopg.Connection, lab: str, add_series: Callable[..., int]
) -> None:
    # Eight weeks of hourly readings: eight 7-day chunks or more.
    sid = add_series(lab, "dev-1", "t", [(T0 + timedelta(hours=h), 1.0) for h in range(8 * 168)])
    after = T0 + timedelta(days=54)
    params = {"ids": [sid], "start": T0, "end": T0 + timedelta(days=56), "limit": 1001,
              "after_time": after, "after_id": sid}  # fmt: skip
    row = db.execute("EXPLAIN (FORMAT JSON) " + page_query(after=True), params).fetchone()
    assert row is not None
    scanned = _scanned_chunks(row[0] if not isinstance(row[0], str) else json.loads(row[0]))
    chunks = {
        r[0]: (r[1], r[2])
        for r in db.execute(
            "SELECT chunk_schema || '.' || chunk_name, range_start, range_end "
            "FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
        )
    }
    names = {name.split(".")[-1] for name in scanned}
    wanted = {
        name.split(".")[-1]
        for name, (lo, hi) in chunks.items()
        if hi > after and lo < params["end"]
    }
    assert names, "the plan scans chunks of readings"
    assert names <= wanted, f"chunks before the cursor are scanned: {sorted(names - wanted)}"
