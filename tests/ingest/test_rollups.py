"""Rollups on the real database: kept by the writer, filled by the migration, rebuilt and
verified by ``livelab-rollups``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from ingest import rollups
from ingest.store import Store
from schemas.migrate import load_migrations, migrate
from tests.schemas.test_migrate import empty_database  # noqa: F401 (a fixture)

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest.rollups", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def stored_lab(database_url: str, lab: str) -> Iterator[str]:
    """Three days of 5-minute readings of two series, stored by the ingest writer."""
    store = Store(database_url)
    try:
        readings = [
            (lab, "dev-1", sensor, T0 + timedelta(minutes=5 * i), float(i % 50) + k)
            for k, sensor in enumerate(("a", "b"))
            for i in range(3 * 288)
        ]
        store.write(readings[::2])
        store.write(readings[1::2] + readings[:10])  # out of order, with redeliveries
    finally:
        store.close()
    yield lab


def partials(db: psycopg.Connection, lab: str, table: str) -> list[tuple]:
    return db.execute(
        f"SELECT s.sensor, r.bucket, r.n, r.total, r.lo, r.hi FROM {table} r "
        "JOIN series s ON s.id = r.series_id WHERE s.lab = %s ORDER BY 1, 2",
        (lab,),
    ).fetchall()


def test_writer_keeps_rollups_of_inserted_rows_only(
    db: psycopg.Connection, stored_lab: str
) -> None:
    days = partials(db, stored_lab, "rollup_1d")
    assert [(sensor, n) for sensor, _, n, *_ in days] == [("a", 288)] * 3 + [("b", 288)] * 3
    hours = partials(db, stored_lab, "rollup_1h")
    assert len(hours) == 2 * 72 and {row[2] for row in hours} == {12}
    assert rollups.verify(db, stored_lab) == []


def test_verify_and_rebuild_commands(
    database_url: str, db: psycopg.Connection, stored_lab: str
) -> None:
    ok = run_cli(database_url, "verify", "--lab", stored_lab)
    assert ok.returncode == 0, ok.stderr
    # Damage one hourly partial on day 1 and one daily partial on day 3.
    db.execute(
        "UPDATE rollup_1h SET n = n + 1 WHERE bucket = %s AND series_id IN "
        "(SELECT id FROM series WHERE lab = %s AND sensor = 'a')",
        (T0 + timedelta(hours=5), stored_lab),
    )
    db.execute(
        "UPDATE rollup_1d SET hi = hi + 1 WHERE bucket = %s AND series_id IN "
        "(SELECT id FROM series WHERE lab = %s AND sensor = 'b')",
        (T0 + timedelta(days=2), stored_lab),
    )
    bad = run_cli(database_url, "verify", "--lab", stored_lab)
    assert bad.returncode == 1
    assert "rollup_1h" in bad.stdout and "rollup_1d" in bad.stdout, bad.stdout
    # A rebuild of day 1 mends day 1 only.
    fixed = run_cli(
        database_url, "rebuild", "--lab", stored_lab,
        "--start", "2025-06-01T03:00:00Z", "--end", "2025-06-01T09:00:00Z",
    )  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    day1 = run_cli(database_url, "verify", "--lab", stored_lab, "--end", "2025-06-02T00:00:00Z")
    assert day1.returncode == 0, day1.stdout
    still = run_cli(database_url, "verify", "--lab", stored_lab)
    assert still.returncode == 1 and "rollup_1d" in still.stdout
    assert "rollup_1h" not in still.stdout
    assert run_cli(database_url, "rebuild", "--lab", stored_lab).returncode == 0
    assert run_cli(database_url, "verify", "--lab", stored_lab).returncode == 0
    assert rollups.verify(db, stored_lab) == []


@pytest.fixture
def first_schema_database(empty_database: str) -> str:  # noqa: F811 (the fixture)
    """A database at schema version 1 only (before the rollups)."""
    first = load_migrations()[0]
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(first.sql.encode())
        conn.execute(
            "CREATE TABLE livelab_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO livelab_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (first.version, first.name, first.checksum),
        )
    return empty_database


def test_migration_fills_rollups_from_existing_readings(first_schema_database: str) -> None:
    url = first_schema_database
    with psycopg.connect(url, autocommit=True) as conn:
        sid = conn.execute(
            "INSERT INTO series (lab, device, sensor) VALUES ('old', 'd', 's') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        with conn.cursor().copy("COPY readings (series_id, time, value) FROM STDIN") as copy:
            for i in range(500):
                copy.write_row((sid, T0 + timedelta(minutes=7 * i), float(i)))
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        n = conn.execute("SELECT sum(n) FROM rollup_1d").fetchone()[0]  # type: ignore[index]
        assert n == 500
        assert rollups.verify(conn, "old") == []


def test_readings_deleted_or_changed_by_hand_leave_the_rollups(
    db: psycopg.Connection, stored_lab: str
) -> None:
    ids = "(SELECT id FROM series WHERE lab = %s)"
    db.execute(
        f"DELETE FROM readings WHERE series_id IN {ids} AND time < %s",
        (stored_lab, T0 + timedelta(minutes=20)),
    )
    db.execute(
        f"UPDATE readings SET value = value + 1000 WHERE series_id IN {ids} AND time = %s",
        (stored_lab, T0 + timedelta(days=1, minutes=5)),
    )
    assert rollups.verify(db, stored_lab) == []
    days = partials(db, stored_lab, "rollup_1d")
    assert [row[2] for row in days] == [284, 288, 288, 284, 288, 288]
    assert days[1][5] == 1000 + 289 % 50  # the changed reading (i = 289) is the day's max


def test_zone_command_moves_the_daily_partials_to_local_days(empty_database: str) -> None:  # noqa: F811
    url = empty_database
    migrate(url)
    lab = "days"
    store = Store(url)
    try:  # 5-minute readings over three days around the October DST change in Stockholm
        start = datetime(2025, 10, 25, 12, tzinfo=UTC)
        store.write(
            [(lab, "d", "s", start + timedelta(minutes=5 * i), float(i)) for i in range(864)]
        )
    finally:
        store.close()
    shown = run_cli(url, "zone")
    assert shown.returncode == 0 and shown.stdout.strip() == "UTC"
    for bad, why in (
        ("Mars/Olympus", "not an IANA time zone"),
        ("Africa/Monrovia", "does not start on a quarter hour"),  # -0:44:30 until 1972
    ):
        refused = run_cli(url, "zone", bad)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    moved = run_cli(url, "zone", "Europe/Stockholm")
    assert moved.returncode == 0, moved.stderr
    assert run_cli(url, "zone").stdout.strip() == "Europe/Stockholm"
    with psycopg.connect(url, autocommit=True) as conn:
        days = partials(conn, lab, "rollup_1d")
        stockholm = ZoneInfo("Europe/Stockholm")
        assert [(b.astimezone(stockholm).isoformat(), n) for _, b, n, *_ in days] == [
            ("2025-10-25T00:00:00+02:00", 120),  # from 12:00 UTC (14:00 local) on
            ("2025-10-26T00:00:00+02:00", 300),  # 25 hours
            ("2025-10-27T00:00:00+01:00", 288),
            ("2025-10-28T00:00:00+01:00", 156),  # until 12:00 UTC (13:00 local)
        ]
        assert rollups.verify(conn, lab) == []
        # The writer and the trigger for hand edits keep local days; rebuild recomputes them.
        store = Store(url)
        try:
            # 00:31 on 27 October, local
            store.write([(lab, "d", "s", datetime(2025, 10, 26, 23, 31, tzinfo=UTC), -1.0)])
        finally:
            store.close()
        # The first 12 hours (UTC): all of 25 October, local, and 2 hours of the 26th.
        conn.execute("DELETE FROM readings WHERE time < %s", (datetime(2025, 10, 26, tzinfo=UTC),))
        assert rollups.verify(conn, lab) == []
        assert [n for _, _, n, *_ in partials(conn, lab, "rollup_1d")] == [276, 289, 156]
        conn.execute("UPDATE rollup_1d SET n = n + 1")
        assert len(rollups.verify(conn, lab)) == 3
        day = datetime(2025, 10, 27, tzinfo=UTC)
        rollups.rebuild(conn, lab, day, day + timedelta(days=1))
        # Mended: the local days that meet 27 October UTC (the 27th from 23:00 UTC on the 26th,
        # and the 28th from 23:00 UTC on the 27th); the 26th is left as it was.
        left = [
            d.bucket.astimezone(stockholm).date().isoformat() for d in rollups.verify(conn, lab)
        ]
        assert left == ["2025-10-26"]


def test_statement_triggers_follow_moved_and_bulk_deleted_readings(
    db: psycopg.Connection, stored_lab: str
) -> None:
    triggers = {
        row[0]
        for row in db.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'readings'::regclass "
            "AND tgname LIKE 'readings_rollups%'"
        )
    }
    assert triggers == {"readings_rollups_delete", "readings_rollups_update"}  # TimescaleDB 2.18+
    ids = "(SELECT id FROM series WHERE lab = %s)"
    # A reading moved to another day and another series (both ends' buckets change).
    db.execute(
        "UPDATE readings SET time = time + INTERVAL '1 day 2 minutes', "
        "series_id = (SELECT max(id) FROM series WHERE lab = %s) "
        "WHERE series_id = (SELECT min(id) FROM series WHERE lab = %s) AND time = %s",
        (stored_lab, stored_lab, T0 + timedelta(hours=3)),
    )
    assert rollups.verify(db, stored_lab) == []
    # All of day 2, both series, in one statement.
    db.execute(
        f"DELETE FROM readings WHERE series_id IN {ids} AND time >= %s AND time < %s",
        (stored_lab, T0 + timedelta(days=1), T0 + timedelta(days=2)),
    )
    assert rollups.verify(db, stored_lab) == []
    days = partials(db, stored_lab, "rollup_1d")
    assert [(sensor, n) for sensor, _, n, *_ in days] == [
        ("a", 287), ("a", 288), ("b", 288), ("b", 288),
    ]  # fmt: skip
