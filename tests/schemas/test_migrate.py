"""Migrations on the real server: in order, once, and safe when processes start together."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from schemas.migrate import load_migrations, migrate
from tests.conftest import scratch_database


@pytest.fixture
def empty_database() -> Iterator[str]:
    with scratch_database("livelab_mig") as url:
        yield url


def test_migrations_are_numbered_and_ordered() -> None:
    versions = [m.version for m in load_migrations()]
    # Gaps are allowed (branches number their migrations apart); order and uniqueness are not.
    assert versions == sorted(set(versions))
    assert versions[0] == 1


def test_processes_starting_together_apply_each_migration_once(empty_database: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "schemas.migrate", "--database-url", empty_database],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    applying = sum(out.count("applying migration 0001_initial") for out in outputs)
    assert applying == 1, outputs
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version FROM livelab_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in load_migrations()]
        hyper = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        ).fetchall()
        assert hyper == [("readings",)]
    assert migrate(empty_database) == []  # nothing left to do


def test_unreachable_database_is_a_clear_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "schemas.migrate", "--database-url",
         "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot connect to the database" in run.stderr
