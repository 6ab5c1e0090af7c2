"""Form 1 (stamped with the receive time) exactly once across crashes and reconnects (issue 7).

A form 1 reading's time is the worker's receive time, so the (series, time) key alone cannot
tell a redelivery from a new reading. These tests count rows and check every value is stored
exactly once: a doubled reading shows up as a second row with the same value.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.helpers import (
    DroppingProxy,
    Publisher,
    WorkerProcess,
    count_readings,
    forget_session,
    wait_for,
)

# The worker, with its ack step replaced by SIGKILL: the process dies after its first COMMIT
# and before any PUBACK leaves, which is the window in which a redelivery used to be stored
# again with a new receive time.
KILLED_AFTER_COMMIT = """
import os, signal, sys
import ingest.worker
def _ack(self, batch):
    os.kill(os.getpid(), signal.SIGKILL)
ingest.worker.Worker._ack = _ack
from ingest.__main__ import main
sys.exit(main())
"""


def _form1(lab: str, n: int, offset: int = 0) -> list[tuple[str, bytes]]:
    return [
        (f"livelab/{lab}/counter-{i % 3}/telemetry", json.dumps({"v": i}).encode())
        for i in range(offset, offset + n)
    ]


def _values(db: psycopg.Connection, lab: str) -> list[float]:
    rows = db.execute(
        "SELECT r.value FROM readings r JOIN series s ON s.id = r.series_id WHERE s.lab = %s "
        "ORDER BY r.value",
        (lab,),
    ).fetchall()
    return [row[0] for row in rows]


def _series_count_matches_rows(db: psycopg.Connection, lab: str) -> bool:
    row = db.execute("SELECT sum(reading_count) FROM series WHERE lab = %s", (lab,)).fetchone()
    return row is not None and int(row[0] or 0) == count_readings(db, lab)


def test_form1_killed_between_commit_and_ack_is_stored_once(
    worker_env, mqtt_broker, db, lab, tmp_path: Path
):
    worker_env.update(
        LIVELAB_MQTT_HOST=mqtt_broker[0],
        LIVELAB_MQTT_PORT=str(mqtt_broker[1]),
        LIVELAB_INGEST_BATCH_MESSAGES="50",
    )
    worker = WorkerProcess(worker_env, tmp_path / "worker.log")
    pub = Publisher(*mqtt_broker)
    try:
        worker.start()  # creates the persistent session and its subscription
        worker.stop()
        pub.publish_many(_form1(lab, 300))  # queued for the absent worker
        with (tmp_path / "killed.log").open("wb") as out:
            killed = subprocess.run(
                [sys.executable, "-c", KILLED_AFTER_COMMIT],
                env=worker_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
            )
        assert killed.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
        committed_unacked = count_readings(db, lab)
        assert 0 < committed_unacked < 300
        worker.start()  # the broker redelivers the committed, unacknowledged messages
        wait_for(lambda: count_readings(db, lab) >= 300, timeout=60, what="all readings")
        time.sleep(1.0)  # a doubled reading would arrive now
        assert _values(db, lab) == [float(i) for i in range(300)]
        assert _series_count_matches_rows(db, lab)
    finally:
        pub.close()
        worker.stop()
        forget_session(*mqtt_broker, worker_env["LIVELAB_INGEST_CLIENT_ID"])


def test_form1_through_connection_cuts_is_stored_once(
    start_worker, mqtt_broker, publisher: Publisher, db, lab
):
    proxy = DroppingProxy(mqtt_broker)
    try:
        worker = start_worker(
            mqtt_host="127.0.0.1", mqtt_port=proxy.port, ingest_batch_messages=100
        )
        total = 8000
        publisher.publish_many(_form1(lab, total))
        cuts = 0
        for threshold in (1000, 3000, 5000):
            wait_for(lambda t=threshold: count_readings(db, lab) >= t, timeout=60, what="progress")
            accepted = proxy.accepted
            proxy.cut()  # the worker's queue still holds messages of the cut connection
            cuts += 1
            wait_for(lambda a=accepted: proxy.accepted > a, timeout=30, what="a reconnect")
        wait_for(lambda: count_readings(db, lab) >= total, timeout=90, what="all readings")
        time.sleep(1.0)
        assert _values(db, lab) == [float(i) for i in range(total)]
        assert _series_count_matches_rows(db, lab)
        assert proxy.accepted >= 1 + cuts
        assert worker.metrics.stale_dropped._value.get() > 0
    finally:
        proxy.close()
