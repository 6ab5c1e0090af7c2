"""Apply livelab's SQL migrations (``schemas/migrations/NNNN_name.sql``) in order.

Safe when several processes start at once: the whole run holds a PostgreSQL advisory lock, and
each migration is applied in its own transaction together with its row in
``livelab_migrations``. Run as ``livelab-migrate`` or ``python -m schemas.migrate``; the ingest
worker and the API call `migrate` at start-up too.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger("livelab.migrate")

DEFAULT_DATABASE_URL = "postgresql://livelab:livelab@127.0.0.1:5432/livelab"
# Any constant works; it only has to be the same for every livelab process.
_LOCK_KEY = 0x11FE1AB


class MigrationError(RuntimeError):
    """The schema could not be brought up to date; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("schemas.migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return found


def migrate(conninfo: str) -> list[int]:
    """Bring the database at `conninfo` up to date; return the versions applied now."""
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise MigrationError(f"cannot connect to the database: {exc}".strip()) from exc
    applied_now = []
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS livelab_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM livelab_migrations")
            }
            for mig in load_migrations():
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        log.warning(
                            "migration %04d_%s changed after it was applied; "
                            "edit schemas by adding a new migration instead",
                            mig.version,
                            mig.name,
                        )
                    continue
                log.info("applying migration %04d_%s", mig.version, mig.name)
                try:
                    with conn.transaction():
                        conn.execute(mig.sql.encode())
                        conn.execute(
                            "INSERT INTO livelab_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (mig.version, mig.name, mig.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(_explain(mig, exc)) from exc
                applied_now.append(mig.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _explain(mig: Migration, exc: psycopg.Error) -> str:
    text = str(exc).strip()
    hint = ""
    if "timescaledb" in text and ("control file" in text or "not available" in text):
        hint = (
            " -- the timescaledb extension is not installed in this PostgreSQL server; "
            "run scripts/setup (Debian/Ubuntu) or use the timescale/timescaledb image"
        )
    elif "shared_preload_libraries" in text:
        hint = (
            " -- add timescaledb to shared_preload_libraries and restart PostgreSQL "
            "(scripts/setup does this)"
        )
    return f"migration {mig.version:04d}_{mig.name} failed: {text}{hint}"


def add_database_url_argument(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, by default LIVELAB_DATABASE_URL (for the schema commands' CLIs)."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LIVELAB_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL connection URL (env LIVELAB_DATABASE_URL; default %(default)s)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livelab-migrate",
        description="Create or upgrade the livelab schema (TimescaleDB) to the newest version. "
        "Safe to run at any time and from several processes at once.",
    )
    add_database_url_argument(parser)
    parser.add_argument("--list", action="store_true", help="list the migrations and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.list:
        for mig in load_migrations():
            print(f"{mig.version:04d}_{mig.name}")
        return 0
    try:
        applied = migrate(args.database_url)
    except MigrationError as exc:
        log.error("%s", exc)
        return 1
    log.info("schema is up to date (%s)", f"applied {applied}" if applied else "nothing to apply")
    return 0


if __name__ == "__main__":
    sys.exit(main())
