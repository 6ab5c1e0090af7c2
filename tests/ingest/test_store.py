"""`ingest.store.Store` on the real database: the fast path and the exact path agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.store import Store

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _rows(db, lab):
    return db.execute(
        "SELECT s.sensor, r.time, r.value FROM readings r JOIN series s ON s.id = r.series_id "
        "WHERE s.lab = %s ORDER BY 1, 2",
        (lab,),
    ).fetchall()


def _count(db, lab):
    return db.execute("SELECT sum(reading_count) FROM series WHERE lab = %s", (lab,)).fetchone()[0]


def test_repeats_in_a_batch_and_across_batches_are_stored_once_first_value_wins(
    database_url, db, lab
):
    store = Store(database_url)
    try:
        t = [T0 + timedelta(minutes=i) for i in range(4)]
        first = store.write(
            [(lab, "d", "a", t[0], 1.0), (lab, "d", "a", t[1], 2.0), (lab, "d", "a", t[0], 9.0)]
        )  # a repeat inside the batch: the fast path, the first value wins
        assert (first.inserted, first.duplicates) == (2, 1)
        second = store.write(
            [(lab, "d", "a", t[1], 8.0), (lab, "d", "a", t[2], 3.0), (lab, "d", "b", t[3], 4.0)]
        )  # t[1] exists already: the exact path
        assert (second.inserted, second.duplicates) == (2, 1)
        assert _rows(db, lab) == [("a", t[0], 1.0), ("a", t[1], 2.0), ("a", t[2], 3.0),
                                  ("b", t[3], 4.0)]  # fmt: skip
        assert _count(db, lab) == 4
        again = store.write([(lab, "d", "a", t[0], 7.0)])  # a redelivery: nothing changes
        assert (again.inserted, again.duplicates) == (0, 1)
        assert _count(db, lab) == 4
    finally:
        store.close()
