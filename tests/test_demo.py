"""The README's run command: `scripts/demo` brings the stack up, its printed curl answers
non-empty aggregates within 30 seconds of start, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tests.dashboard.browser import shared_browser, sign_in, wait_for_chart
from tests.helpers import forget_session, free_port

ROOT = Path(__file__).resolve().parent.parent


def look_at_dashboard(url: str, key: str) -> None:
    context = shared_browser().new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, url.rstrip("/"), key)
        assert page.locator("#lab").input_value() == "oceanhamnen"
        assert page.locator("#series tbody tr").count() >= 10
        wait_for_chart(page, 3 * page.evaluate("window.livelab.state.chosen.size"))
        assert page.evaluate("window.livelab.state.chosen.size") > 0
    finally:
        context.close()


def test_demo_runs_and_its_curl_answers_within_30_seconds(database_url, mqtt_broker) -> None:
    client_id = f"test-demo-ingest-{os.getpid()}"
    env = dict(
        os.environ,
        # The test session's database, free ports and a session of its own: the demo must
        # not touch a developer's demo (its database, keys, ports or broker session).
        LIVELAB_DATABASE_URL=database_url,
        LIVELAB_API_PORT=str(free_port()),
        LIVELAB_INGEST_HTTP_PORT=str(free_port()),
        LIVELAB_SIM_METRICS_PORT=str(free_port()),
        LIVELAB_INGEST_CLIENT_ID=client_id,
        LIVELAB_INGEST_TOPICS="livelab/oceanhamnen/#",
        LIVELAB_INGEST_SESSION_EXPIRY="60",
        LIVELAB_MQTT_HOST=mqtt_broker[0],
        LIVELAB_MQTT_PORT=str(mqtt_broker[1]),
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "demo")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's Ctrl-C target
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        while not any("/aggregates?" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() - started < 60, "no banner:\n" + "".join(lines)
            time.sleep(0.1)
        banner = "".join(lines)
        key = re.search(r"Bearer (llk_[\w-]+)", banner)
        url = re.search(
            r'"(http://127\.0\.0\.1:\d+/v1/labs/oceanhamnen/aggregates\?[^"]+)"', banner
        )
        assert key and url, banner
        assert "/docs" in banner
        dashboard = re.search(r"Dashboard: +(http://127\.0\.0\.1:\d+/) ", banner)
        assert dashboard, banner
        with urllib.request.urlopen(dashboard.group(1), timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/html")
            assert "livelab dashboard" in resp.read().decode()
        request = urllib.request.Request(
            url.group(1), headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        data: list[dict] = []
        while not data:
            assert time.monotonic() - started < 30, "no aggregates within 30 s of start"
            with urllib.request.urlopen(request, timeout=5) as resp:
                data = json.load(resp)["data"]
            time.sleep(0.2)
        assert {row["sensor"] for row in data} == {"no2"}
        assert all(row["count"] > 0 for row in data)
        # The demo lab is there to look at: the dashboard, signed in with the printed key.
        look_at_dashboard(dashboard.group(1), key.group(1))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(30)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        forget_session(*mqtt_broker, client_id)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "demo: stopped" in output
