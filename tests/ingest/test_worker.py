"""The worker on the real Mosquitto and TimescaleDB: exactly once, rejections, recovery."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg

from tests.helpers import Publisher, count_readings, free_port, rejections, wait_for


def test_reading_published_twice_is_stored_once(start_worker, publisher: Publisher, db, lab):
    start_worker()
    topic = f"livelab/{lab}/aq-01/telemetry"
    payload = json.dumps({"ts": "2026-06-01T12:00:00Z", "values": {"no2": 17.4}})
    publisher.publish(topic, payload)
    publisher.publish(topic, payload)
    # A different value for the same (series, time) must not overwrite the first.
    publisher.publish(topic, json.dumps({"ts": "2026-06-01T12:00:00Z", "values": {"no2": 99}}))
    publisher.publish(topic, json.dumps({"ts": "2026-06-01T12:01:00Z", "values": {"no2": 18}}))
    wait_for(lambda: count_readings(db, lab) >= 2, what="readings stored")
    rows = db.execute(
        "SELECT s.device, s.sensor, r.time, r.value, s.reading_count, s.first_time, s.last_time "
        "FROM readings r JOIN series s ON s.id = r.series_id WHERE s.lab = %s ORDER BY r.time",
        (lab,),
    ).fetchall()
    t0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=1)
    assert [(d, s, t, v) for d, s, t, v, *_ in rows] == [
        ("aq-01", "no2", t0, 17.4),
        ("aq-01", "no2", t1, 18.0),
    ]
    assert rows[0][4:] == (2, t0, t1)  # the registry counts each reading once
    assert rejections(db, lab) == []


def test_malformed_message_is_recorded_and_worker_keeps_going(
    start_worker, publisher: Publisher, db, lab
):
    worker = start_worker()
    topic = f"livelab/{lab}/aq-01/telemetry"
    publisher.publish(topic, b'{"no2": 17.4,')  # truncated JSON
    publisher.publish(topic, json.dumps({"no2": 5, "pm25": "high"}))  # one bad value
    publisher.publish(f"livelab/{lab}/aq-01/status", b"{}")  # a topic outside the scheme
    publisher.publish(topic, json.dumps({"ts": 1780315200000, "values": {"no2": 20}}))
    wait_for(lambda: len(rejections(db, lab)) == 3 and count_readings(db, lab) == 2)
    rows = rejections(db, lab)
    assert rows[0][0] == topic
    assert rows[0][1].startswith("malformed JSON")
    assert bytes(rows[0][3]) == b'{"no2": 17.4,'
    assert rows[0][4] == 13
    assert "value of sensor 'pm25' is a string" in rows[1][1]
    assert rows[1][2] == 1
    assert "unknown format 'status'" in rows[2][1]
    assert worker.metrics.messages.labels("stored")._value.get() == 1
    assert worker.metrics.messages.labels("partial")._value.get() == 1
    assert worker.metrics.messages.labels("rejected")._value.get() == 2


def test_rejected_payload_is_truncated(start_worker, publisher: Publisher, db, lab):
    start_worker(ingest_rejection_payload_bytes=16, ingest_max_payload_bytes=1000)
    big = json.dumps({"x": "y" * 2000}).encode()
    publisher.publish(f"livelab/{lab}/d/telemetry", big)
    wait_for(lambda: len(rejections(db, lab)) == 1)
    (_, reason, _, payload, size) = rejections(db, lab)[0]
    assert "the limit is 1000 bytes" in reason
    assert bytes(payload) == big[:16]
    assert size == len(big)


def test_qos0_and_senml_are_stored(start_worker, publisher: Publisher, db, lab):
    start_worker()
    publisher.publish(f"livelab/{lab}/d/telemetry", json.dumps({"a": 1}), qos=0)
    pack = [{"bn": "sea:", "bt": 1780311600, "bu": "cm", "n": "level", "v": 12.5}]
    publisher.publish(f"livelab/{lab}/d/senml", json.dumps(pack))
    wait_for(lambda: count_readings(db, lab) == 2)
    unit = db.execute(
        "SELECT unit FROM series WHERE lab = %s AND sensor = 'sea:level'", (lab,)
    ).fetchone()
    assert unit == ("cm",)


def test_database_connection_killed_mid_stream_loses_and_doubles_nothing(
    start_worker, publisher: Publisher, db, lab, database_url
):
    worker = start_worker(ingest_batch_messages=50)
    base = datetime(2026, 6, 1, tzinfo=UTC)
    items = [
        (
            f"livelab/{lab}/dev-{i % 7}/telemetry",
            json.dumps(
                {"ts": (base + timedelta(seconds=i)).isoformat(), "values": {"a": i, "b": -i}}
            ).encode(),
        )
        for i in range(3000)
    ]
    publisher.publish_many(items[:1500])
    # Kill the worker's database session while it writes: the batch in flight rolls back,
    # the worker reconnects and retries, and nothing is acknowledged before it commits.
    wait_for(lambda: count_readings(db, lab) > 0, what="first readings")
    with psycopg.connect(database_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'livelab-ingest' AND datname = current_database()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    publisher.publish_many(items[1500:])
    wait_for(lambda: count_readings(db, lab) >= 6000, timeout=60, what="all 6000 readings")
    assert count_readings(db, lab) == 6000
    assert worker.metrics.db_retries._value.get() >= 1
    total = db.execute("SELECT sum(reading_count) FROM series WHERE lab = %s", (lab,)).fetchone()
    assert total == (6000,)


def test_health_ready_and_metrics_endpoints(start_worker, publisher: Publisher, db, lab):
    import urllib.error
    import urllib.request

    port = free_port()
    start_worker(ingest_http_port=port)
    publisher.publish(f"livelab/{lab}/d/telemetry", json.dumps({"a": 1, "b": "x"}))
    wait_for(lambda: count_readings(db, lab) == 1)
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/health") as resp:
        assert json.load(resp) == {"status": "ok"}
    with urllib.request.urlopen(f"{base}/ready") as resp:
        assert json.load(resp)["status"] == "ready"
    with urllib.request.urlopen(f"{base}/metrics") as resp:
        text = resp.read().decode()
    assert 'livelab_ingest_messages_total{outcome="partial"} 1.0' in text
    assert 'livelab_ingest_readings_total{outcome="stored"} 1.0' in text
    assert "livelab_ingest_mqtt_connected 1.0" in text
    try:
        urllib.request.urlopen(f"{base}/nope")
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404


def test_retained_messages_are_not_replayed_on_subscribe(
    start_worker, publisher: Publisher, db, lab
):
    # A device left a retained form-1 message. Storing it on every (re)subscribe would add a
    # reading stamped "now" each time the worker reconnects.
    topic = f"livelab/{lab}/d/telemetry"
    info = publisher.client.publish(topic, json.dumps({"stale": 1}), qos=1, retain=True)
    info.wait_for_publish(10)
    try:
        start_worker()
        start_worker()  # a second worker (new session) must not get it either
        publisher.publish(topic, json.dumps({"fresh": 2}))
        wait_for(lambda: count_readings(db, lab) >= 2, what="the fresh reading, twice at most")
        time.sleep(0.3)
        sensors = db.execute("SELECT DISTINCT sensor FROM series WHERE lab = %s", (lab,)).fetchall()
        assert sensors == [("fresh",)]
    finally:
        publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)


def test_a_parser_bug_becomes_a_rejection_not_a_crash(
    start_worker, publisher: Publisher, db, lab, monkeypatch
):
    # Fault injection into pure code only: the broker and the database stay real.
    import ingest.worker

    real = ingest.worker.parse_message

    def buggy(topic, payload, received_at, limits):
        if payload == b'{"boom": 1}':
            raise KeyError("boom")
        return real(topic, payload, received_at, limits)

    monkeypatch.setattr(ingest.worker, "parse_message", buggy)
    worker = start_worker()
    topic = f"livelab/{lab}/d/telemetry"
    publisher.publish(topic, b'{"boom": 1}')
    publisher.publish(topic, json.dumps({"ok": 1}))
    wait_for(lambda: count_readings(db, lab) == 1 and len(rejections(db, lab)) == 1)
    (_, reason, count, payload, _) = rejections(db, lab)[0]
    assert reason.startswith("internal error while reading the message (KeyError")
    assert count == 0
    assert bytes(payload) == b'{"boom": 1}'
    assert worker.ready()[0]
    # Acknowledged, so there is no redelivery crash loop.
    wait_for(lambda: worker.metrics.acks._value.get() == 2, what="both messages acknowledged")


def test_a_failed_writer_turns_ready_red(start_worker, publisher: Publisher, lab, monkeypatch):
    worker = start_worker()

    def broken(batch):
        raise RuntimeError("injected")

    monkeypatch.setattr(worker, "_process", broken)
    publisher.publish(f"livelab/{lab}/d/telemetry", json.dumps({"a": 1}))
    wait_for(lambda: worker.failed.is_set(), what="the writer to fail")
    assert worker.ready() == (False, "the writer thread failed; see the log")
    assert worker.metrics.acks._value.get() == 0  # nothing acknowledged: it is redelivered


def test_workers_in_a_share_group_split_the_stream(start_worker, publisher: Publisher, db, lab):
    group = f"g{lab}"
    first = start_worker(ingest_share_group=group)
    second = start_worker(ingest_share_group=group)
    base = datetime(2026, 6, 1, tzinfo=UTC)
    publisher.publish_many(
        [
            (
                f"livelab/{lab}/d{i % 3}/telemetry",
                json.dumps(
                    {"ts": (base + timedelta(seconds=i)).isoformat(), "values": {"v": i}}
                ).encode(),
            )
            for i in range(400)
        ]
    )
    wait_for(lambda: count_readings(db, lab) >= 400, what="all 400 readings")
    time.sleep(0.3)
    assert count_readings(db, lab) == 400
    shares = [w.metrics.messages.labels("stored")._value.get() for w in (first, second)]
    assert sum(shares) == 400  # each message went to exactly one worker
    assert min(shares) > 0, shares  # and both got some
