"""Rejections are bounded: repeats merge into one row with a count; retention, a cap (issue 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.store import RejectionRow, Store
from tests.helpers import Publisher, wait_for


def _rows(db, lab: str) -> list[tuple]:
    return db.execute(
        "SELECT reason, repeats, rejected_count, payload FROM rejections WHERE lab = %s "
        "ORDER BY id",
        (lab,),
    ).fetchall()


def test_a_device_repeating_garbage_gets_one_row_with_a_count(
    start_worker, publisher: Publisher, db, lab
):
    worker = start_worker()
    topic = f"livelab/{lab}/broken-1/telemetry"
    publisher.publish_many([(topic, b"garbage %d" % i) for i in range(100)])
    publisher.publish(f"livelab/{lab}/other-1/telemetry", b"garbage")  # another device
    wait_for(lambda: sum(r[1] for r in _rows(db, lab)) == 101, what="101 rejected messages")
    rows = _rows(db, lab)
    assert len(rows) <= 4  # one per device and merge interval (a minute boundary may split)
    broken = [r for r in rows if bytes(r[3]).startswith(b"garbage ")]
    assert sum(r[1] for r in broken) == 100
    assert bytes(broken[0][3]) == b"garbage 0"  # the first payload is kept
    assert worker.metrics.rejections._value.get() == 101


def test_merging_can_be_turned_off(start_worker, publisher: Publisher, db, lab):
    start_worker(ingest_rejection_merge_seconds=0)
    topic = f"livelab/{lab}/broken-1/telemetry"
    publisher.publish_many([(topic, b"garbage")] * 5)
    wait_for(lambda: len(_rows(db, lab)) == 5, what="a row per message")
    assert {r[1] for r in _rows(db, lab)} == {1}


def _row(lab: str, reason: str, when: datetime) -> RejectionRow:
    return RejectionRow(
        received_at=when,
        lab=lab,
        device="d",
        topic=f"livelab/{lab}/d/telemetry",
        reason=reason,
        rejected_count=0,
        payload=b"x",
        payload_size=1,
    )


def test_retention_and_the_per_lab_cap(database_url, db, lab):
    store = Store(database_url)
    now = datetime.now(UTC)
    try:
        old = [_row(lab, f"old {i}", now - timedelta(days=40)) for i in range(3)]
        new = [_row(lab, f"new {i}", now - timedelta(seconds=10 - i)) for i in range(10)]
        other = [_row(f"{lab}x", "other", now)]
        store.write([], old + new + other)
        deleted = store.trim_rejections(older_than=now - timedelta(days=30), per_lab=4)
        assert deleted >= 3 + 6  # (other tests' labs share this database)
        assert [r[0] for r in _rows(db, lab)] == ["new 6", "new 7", "new 8", "new 9"]
        assert len(_rows(db, f"{lab}x")) == 1
    finally:
        store.close()
