"""Crash and restart recovery with real processes: nothing lost, nothing doubled.

- the worker process is killed with SIGKILL while it stores a stream, then started again;
- the broker (a private Mosquitto with persistence, started by the test) is restarted while
  messages flow.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from ingest.worker import Worker
from schemas.migrate import migrate
from tests.helpers import (
    Publisher,
    WorkerProcess,
    count_readings,
    forget_session,
    form2_messages,
    free_port,
    sigterm_a_waiting_worker,
    wait_for,
    worker_settings,
)


def test_worker_killed_mid_stream_loses_and_doubles_nothing(
    worker_env, mqtt_broker, db, lab, tmp_path: Path
):
    worker_env.update(LIVELAB_MQTT_HOST=mqtt_broker[0], LIVELAB_MQTT_PORT=str(mqtt_broker[1]))
    worker = WorkerProcess(worker_env, tmp_path / "worker.log")
    pub = Publisher(*mqtt_broker)
    try:
        worker.start()
        pub.publish_many(form2_messages(lab, 4000))
        wait_for(lambda: count_readings(db, lab) > 0, what="first readings")
        worker.kill()  # SIGKILL: no shutdown code runs; un-acked messages stay with the broker
        stored_at_kill = count_readings(db, lab)
        pub.publish_many(form2_messages(lab, 1000, offset=4000))  # queued in the worker's session
        worker.start()
        wait_for(lambda: count_readings(db, lab) >= 5000, timeout=60, what="all readings")
        time.sleep(0.5)  # anything doubled would arrive now
        assert count_readings(db, lab) == 5000
        assert stored_at_kill < 5000
    finally:
        pub.close()
        worker.stop()
        forget_session(*mqtt_broker, worker_env["LIVELAB_INGEST_CLIENT_ID"])


def test_broker_restart_loses_and_doubles_nothing(worker_env, private_broker, db, lab, tmp_path):
    host, port, restart = private_broker
    worker_env.update(LIVELAB_MQTT_HOST=host, LIVELAB_MQTT_PORT=str(port))
    worker = WorkerProcess(worker_env, tmp_path / "worker.log")
    try:
        worker.start()
        pub = Publisher(host, port)
        pub.publish_many(form2_messages(lab, 2000))
        pub.close()
        restart()  # the worker loses its connection; its session survives in the broker
        pub = Publisher(host, port)
        pub.publish_many(form2_messages(lab, 2000, offset=2000))
        pub.close()
        wait_for(lambda: count_readings(db, lab) >= 4000, timeout=60, what="all readings")
        time.sleep(0.5)
        assert count_readings(db, lab) == 4000
        log = (tmp_path / "worker.log").read_text()
        assert "reconnecting" in log
        assert "(resumed session)" in log
    finally:
        worker.stop()


def test_worker_waits_for_a_broker_that_is_not_up_yet(worker_env, db, lab, tmp_path):
    port = free_port()
    worker_env.update(LIVELAB_MQTT_HOST="127.0.0.1", LIVELAB_MQTT_PORT=str(port))
    code, out = sigterm_a_waiting_worker(worker_env)
    assert code == 0
    assert b"connecting to MQTT broker" in out


def test_database_restart_loses_and_doubles_nothing(
    private_postgres, mqtt_broker, lab, tmp_path: Path
):
    url = private_postgres.database("livelab")
    migrate(url)
    worker = Worker(worker_settings(url, mqtt_broker, lab, ingest_batch_messages=100))
    worker.start()
    assert worker.wait_ready(10)
    pub = Publisher(*mqtt_broker)
    try:
        pub.publish_many(form2_messages(lab, 2000))
        private_postgres.stop()  # the worker's connection breaks; the server refuses new ones
        pub.publish_many(form2_messages(lab, 2000, offset=2000))  # the broker holds them (un-acked)
        time.sleep(1.5)
        private_postgres.start()
        with psycopg.connect(url, autocommit=True) as db:
            wait_for(lambda: count_readings(db, lab) >= 4000, timeout=60, what="all readings")
            time.sleep(0.5)
            assert count_readings(db, lab) == 4000
        assert worker.metrics.db_retries._value.get() >= 1
    finally:
        pub.close()
        worker.stop(grace=5)
        forget_session(*mqtt_broker, worker.settings.ingest_client_id)
