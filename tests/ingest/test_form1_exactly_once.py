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
    start_worker, mqtt_broker, publisher: Publisher, db, database_url, lab
):
    proxy = DroppingProxy(mqtt_broker)
    try:
        worker = start_worker(
            mqtt_host="127.0.0.1",
            mqtt_port=proxy.port,
            ingest_batch_messages=100,
            ingest_db_lock_timeout=60,
        )
        rounds, per_round = 3, 1500
        total = rounds * per_round
        for r in range(rounds):
            # Hold the writer (a lock on readings) until its queue holds messages of the
            # connection about to be cut, one batch of them already being written; then cut
            # and let the worker reconnect before the writer goes on. The broker redelivers
            # all of them on the new connection.
            with psycopg.connect(database_url) as locker:
                locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
                publisher.publish_many(_form1(lab, per_round, offset=r * per_round))
                wait_for(lambda: len(worker._inbox) >= 100, what="messages queued")
                accepted = proxy.accepted
                proxy.cut()
                wait_for(lambda a=accepted: proxy.accepted > a, timeout=30, what="a reconnect")
                time.sleep(0.5)  # the broker starts redelivering behind the stale copies
        wait_for(lambda: count_readings(db, lab) >= total, timeout=90, what="all readings")
        time.sleep(1.0)
        assert _values(db, lab) == [float(i) for i in range(total)]
        assert _series_count_matches_rows(db, lab)
        assert worker.metrics.stale_dropped._value.get() > 0  # queued copies left to the broker
        assert worker.metrics.redeliveries_matched._value.get() > 0  # the batch being written
    finally:
        proxy.close()
