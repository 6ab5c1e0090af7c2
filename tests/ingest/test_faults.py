"""Server-side faults are outages, never rejections; /ready tells the truth (issue 7).

Each test makes the database refuse or stall the worker the way an operator's mistake or an
incident would (a missing grant, a read-only session, a held lock), checks that nothing is
rejected or acknowledged meanwhile and that /ready says why, then fixes the cause and checks that
everything the broker kept is stored, once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from schemas.rollups import TIERS
from tests.helpers import Publisher, count_readings, form2_messages, rejections, wait_for

WRITER_TABLES = (
    "readings",
    "series",
    "rejections",
    "ingest_receipts",
    "ingest_clients",
    *(tier.table for tier in TIERS),
    "rollup_settings",
)


@pytest.fixture
def role(db: psycopg.Connection, database_url: str, lab: str) -> Iterator[tuple[str, str]]:
    """A login role with the writer's privileges, and a URL that connects as it.

    Request it before `start_worker`, so that the workers stop before the role is dropped.
    """
    name = f"ingest_{lab}"
    db.execute(f'CREATE ROLE "{name}" LOGIN')
    for table in WRITER_TABLES:
        db.execute(f'GRANT SELECT, INSERT, UPDATE ON {table} TO "{name}"')
    params = conninfo_to_dict(database_url)
    params.pop("password", None)
    params["user"] = name
    yield name, make_conninfo(**params)

    def sessions() -> int:
        row = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
            (name,),
        ).fetchone()
        return row[0] if row else 0

    wait_for(lambda: sessions() == 0, what=f"the sessions of {name} to end")
    db.execute(f'DROP OWNED BY "{name}"')
    db.execute(f'DROP ROLE "{name}"')


def _rejections_all(db: psycopg.Connection, lab: str) -> list[tuple]:
    return db.execute("SELECT reason FROM rejections WHERE lab = %s", (lab,)).fetchall()


@pytest.mark.parametrize("table", ["readings", "rejections"])
def test_a_missing_grant_is_an_outage_not_rejections(
    role, start_worker, publisher: Publisher, db, lab, table
):
    name, url = role
    db.execute(f'REVOKE INSERT ON {table} FROM "{name}"')
    worker = start_worker(database_url=url)
    publisher.publish(f"livelab/{lab}/dev-1/telemetry", b'{"v": ')  # truncated: a rejection
    publisher.publish_many(form2_messages(lab, 50))
    wait_for(lambda: worker.metrics.db_retries._value.get() >= 2, what="retries")
    ok, why = worker.ready()
    assert not ok
    assert "permission denied" in why and "GRANT" in why.upper(), why
    assert worker.metrics.db_outage._value.get() == 1
    assert worker.metrics.acks._value.get() == 0
    assert count_readings(db, lab) == 0
    assert _rejections_all(db, lab) == []  # a fault of ours is never a device's rejection

    db.execute(f'GRANT INSERT ON {table} TO "{name}"')  # the operator fixes the grant
    wait_for(lambda: count_readings(db, lab) == 50 and len(_rejections_all(db, lab)) == 1,
             timeout=60, what="everything the broker kept")  # fmt: skip
    [(reason,)] = _rejections_all(db, lab)
    assert reason.startswith("malformed JSON")
    wait_for(lambda: worker.ready()[0], what="/ready green again")
    assert worker.metrics.db_outage._value.get() == 0


def test_ready_names_a_missing_grant_before_any_message(role, start_worker, db):
    name, url = role
    db.execute(f'REVOKE UPDATE ON series FROM "{name}"')
    worker = start_worker(database_url=url)
    ok, why = worker.ready()
    assert not ok
    assert "lacks UPDATE on series" in why


def test_a_read_only_database_is_an_outage(role, start_worker, publisher: Publisher, db, lab):
    name, url = role
    db.execute(f'ALTER ROLE "{name}" SET default_transaction_read_only = on')
    worker = start_worker(database_url=url)
    publisher.publish_many(form2_messages(lab, 20))
    wait_for(lambda: worker.metrics.db_retries._value.get() >= 1, what="retries")
    ok, why = worker.ready()
    assert not ok and "read-only" in why, why
    assert _rejections_all(db, lab) == []
    db.execute(f'ALTER ROLE "{name}" RESET default_transaction_read_only')
    wait_for(lambda: count_readings(db, lab) == 20, timeout=60, what="readings after the fix")
    assert _rejections_all(db, lab) == []


def test_a_held_lock_times_out_and_turns_ready_red(
    start_worker, publisher: Publisher, db, database_url, lab
):
    worker = start_worker(ingest_db_lock_timeout=0.5)
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        publisher.publish_many(form2_messages(lab, 10))
        wait_for(lambda: worker.metrics.db_retries._value.get() >= 1, what="lock timeout retry")
        ok, why = worker.ready()
        assert not ok and "lock" in why, why
    wait_for(lambda: count_readings(db, lab) == 10, timeout=60, what="readings after unlock")
    wait_for(lambda: worker.ready()[0], what="/ready green again")


def test_a_writer_that_makes_no_progress_turns_ready_red(
    start_worker, publisher: Publisher, db, database_url, lab
):
    # A lock wait shorter than its timeout, but longer than the progress bound: the writer is
    # not failing, it is stuck, and /ready must say so.
    worker = start_worker(ingest_db_lock_timeout=120, ingest_ready_max_wait=1)
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        publisher.publish_many(form2_messages(lab, 10))
        wait_for(lambda: not worker.ready()[0], what="/ready red")
        assert "without a commit" in worker.ready()[1]
    wait_for(lambda: count_readings(db, lab) == 10, timeout=60, what="readings after unlock")
    assert worker.ready()[0]


def test_the_writer_connection_has_timeouts_and_keepalives(
    start_worker, publisher: Publisher, db, lab
):
    worker = start_worker(ingest_db_statement_timeout=12, ingest_db_lock_timeout=3)
    publisher.publish_many(form2_messages(lab, 1))
    wait_for(lambda: count_readings(db, lab) == 1, what="the writer's first commit")
    conn = worker._store._conn  # the writer's own connection (psycopg connections lock)
    assert conn is not None
    assert conn.execute("SHOW statement_timeout").fetchone() == ("12s",)
    assert conn.execute("SHOW lock_timeout").fetchone() == ("3s",)
    params = conn.info.get_parameters()
    assert params.get("keepalives") == "1"
    assert int(params["keepalives_idle"]) > 0
    assert int(params["tcp_user_timeout"]) > 0


def test_shutdown_with_a_stuck_queue_and_a_qos0_flood_returns(
    start_worker, publisher: Publisher, db, database_url, lab
):
    # The writer is stuck on a lock, the queue fills with QoS 0 messages, paho's thread waits
    # to put the next one: stop() must still return (paho's loop_stop() used to hang here).
    worker = start_worker(
        ingest_receive_maximum=1, ingest_batch_messages=1, ingest_db_lock_timeout=120
    )
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        publisher.publish_many(form2_messages(lab, 50), qos=0)
        wait_for(lambda: not worker._inbox.room(), what="a full queue")
        done = threading.Event()
        stopper = threading.Thread(target=lambda: (worker.stop(grace=1), done.set()), daemon=True)
        stopper.start()
        # The bound is generous (the writer is abandoned after 1 s of grace + 10 s): this only
        # tells "returns" from "hangs for ever".
        assert done.wait(45), "stop() hangs"
        locker.rollback()
    assert rejections(db, lab) == []
