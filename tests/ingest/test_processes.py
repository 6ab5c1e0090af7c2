"""`livelab-ingest --processes N`: N workers in one share group, each message stored once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import Publisher, count_readings, forget_session, form2_messages, wait_for


def _acks(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    match = re.search(r"^livelab_ingest_acks_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


def test_two_processes_split_the_stream_and_store_each_reading_once(
    worker_env, mqtt_broker, db, lab, tmp_path: Path
):
    port = int(worker_env["LIVELAB_INGEST_HTTP_PORT"])
    worker_env.update(
        LIVELAB_MQTT_HOST=mqtt_broker[0],
        LIVELAB_MQTT_PORT=str(mqtt_broker[1]),
        LIVELAB_INGEST_SHARE_GROUP=f"g{lab}",
    )
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "--processes", "2"],
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pub = Publisher(*mqtt_broker)
    try:
        wait_for(lambda: _acks(port) >= 0 and _acks(port + 1) >= 0, what="both workers' HTTP")
        time.sleep(1.0)  # both subscribed
        pub.publish_many(form2_messages(lab, 2000))
        wait_for(lambda: count_readings(db, lab) >= 2000, timeout=60, what="all readings")
        time.sleep(0.5)
        assert count_readings(db, lab) == 2000
        assert _acks(port) > 0 and _acks(port + 1) > 0, "both workers took part"
        assert _acks(port) + _acks(port + 1) == 2000
        # A worker that dies is started again by the supervisor (README, Scaling out).
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        wait_for(lambda: "restarting it" in log.read_text(), what="the supervisor's restart")
        wait_for(lambda: _acks(port) == 0 or _acks(port + 1) == 0, what="a new worker's HTTP")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        pub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for i in (1, 2):
            forget_session(*mqtt_broker, f"{worker_env['LIVELAB_INGEST_CLIENT_ID']}-{i}")
    text = log.read_text()
    assert "started worker 2 of 2" in text
    assert "all 2 workers stopped" in text
