"""A broker crash while the worker is away: what the broker queued survives, but for its last
save window.

Mosquitto keeps a session's queue in memory and writes it to its persistence file on a clean
exit and every `autosave_interval`. The test runs a private Mosquitto with
deploy/mosquitto/livelab.conf's options (what scripts/setup installs and compose mounts),
queues readings for an absent worker, waits at most the save window README promises, SIGKILLs
the broker, starts it again and lets the worker drain its session into the database.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg

from ingest.settings import Settings
from ingest.worker import Worker
from tests.conftest import PrivateBroker
from tests.helpers import Publisher, count_readings, wait_for, worker_settings

# README: a crash loses at most what the broker acknowledged in the last 2 s (a save every
# 2 s with autosave_interval 1). The margin only absorbs a loaded machine: the wait ends as
# soon as the broker has saved.
SAVE_WINDOW_S = 2.0
MARGIN_S = 10.0
T0_MS = 1_780_000_000_000  # 2026-05-28, inside the worker's accepted time range


def _stream(lab: str, n: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """n form 2 messages, one reading each, at distinct times on 4 devices."""
    return [
        (
            f"livelab/{lab}/dev-{i % 4}/telemetry",
            json.dumps({"ts": T0_MS + i * 1000, "values": {"level": float(i)}}).encode(),
        )
        for i in range(offset, offset + n)
    ]


def _file_version(path: Path) -> tuple[int, int] | None:
    # Mosquitto writes mosquitto.db.new, fsyncs it and renames it over mosquitto.db.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_for_a_save(broker: PrivateBroker, timeout: float) -> bool:
    """Wait until the broker writes its persistence file again; False if it did not in time.

    Mosquitto is single-threaded: a save that ends after every PUBACK was received began after
    the last message was queued, so it holds them all.
    """
    before = _file_version(broker.db_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _file_version(broker.db_file) != before:
            return True
        time.sleep(0.02)
    return False


def _drain(settings: Settings, db: psycopg.Connection, lab: str, broker: PrivateBroker) -> int:
    """Start the worker, let it store its whole session, stop it; the lab's reading count.

    A marker published after the worker is back comes after everything queued for it (one
    queue per session, in order), and the worker commits in arrival order: once the marker is
    stored, all that survived is.
    """
    worker = Worker(settings)
    worker.start()
    try:
        assert worker.wait_ready(10), "worker did not connect and subscribe"
        marker = Publisher(broker.host, broker.port)
        marker.publish(
            f"livelab/{lab}/marker/telemetry", json.dumps({"ts": T0_MS, "values": {"m": 1}})
        )
        marker.close()
        sql = "SELECT 1 FROM series WHERE lab = %s AND device = 'marker' AND reading_count > 0"
        wait_for(lambda: db.execute(sql, (lab,)).fetchone() is not None, what="marker stored")
    finally:
        worker.stop(grace=5)
    return count_readings(db, lab) - 1


def test_broker_killed_while_the_worker_is_away_keeps_what_it_saved(
    livelab_broker: PrivateBroker, database_url: str, db: psycopg.Connection, lab: str
) -> None:
    broker = livelab_broker
    settings = worker_settings(database_url, (broker.host, broker.port), lab)
    worker = Worker(settings)
    worker.start()
    assert worker.wait_ready(10), "worker did not connect and subscribe"
    worker.stop(grace=5)  # away: its persistent session stays with the broker and queues
    # A clean restart writes the session to disk whatever the autosave settings: from here on,
    # only the queue is at stake.
    broker.restart()

    saved, tail = 2000, 200
    pub = Publisher(broker.host, broker.port)
    pub.publish_many(_stream(lab, saved))  # each one PUBACKed: the broker has taken them over
    saved_in_time = _wait_for_a_save(broker, SAVE_WINDOW_S + MARGIN_S)
    pub.publish_many(_stream(lab, tail, offset=saved))  # mid-stream: after the last save
    broker.kill()
    pub.close()
    broker.start()

    survived = _drain(settings, db, lab, broker)
    assert saved <= survived <= saved + tail, (
        f"{survived} of {saved + tail} queued readings survived the broker's SIGKILL; the "
        f"{saved} queued before it saved must (a save was "
        f"{'' if saved_in_time else 'not '}seen within {SAVE_WINDOW_S + MARGIN_S} s)"
    )
