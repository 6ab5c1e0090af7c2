"""Keep, rebuild and verify the rollups (`schemas.rollups`), and the ``livelab-rollups`` command.

Ingest keeps them exact by adding, in the statement that inserts a batch's readings, the
partials of exactly the rows that ``INSERT ... ON CONFLICT DO NOTHING`` inserted (`MAINTAIN`,
spliced into `ingest.store`'s move statement after its ``inserted`` CTE): a duplicate or a
redelivery inserts nothing and so adds nothing, and a late reading lands in its bucket in the
same transaction. Workers lock the series rows they touch (in id order) before the move, so
two workers never update one series' partials at once.

livelab-rollups rebuild --lab L [--start T] [--end T]   # recompute from the readings
livelab-rollups verify --lab L [--start T] [--end T]    # compare; exit 1 on any difference
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from schemas.migrate import add_database_url_argument
from schemas.rollups import TIERS, Tier
from schemas.times import parse_rfc3339

log = logging.getLogger("livelab.rollups")


def _partials(tier: Tier, source: str, below: Tier | None) -> str:
    """SELECT series_id, bucket, n, total, lo, hi of `tier`, from readings or the tier below."""
    iv = f"INTERVAL '{tier.interval}'"
    if below is None:
        return (
            f"SELECT series_id, time_bucket({iv}, time) AS bucket, count(*) AS n, "
            f"sum(value) AS total, min(value) AS lo, max(value) AS hi FROM {source} GROUP BY 1, 2"
        )
    return (
        f"SELECT series_id, time_bucket({iv}, bucket) AS bucket, sum(n)::bigint AS n, "
        f"sum(total) AS total, min(lo) AS lo, max(hi) AS hi FROM {source} GROUP BY 1, 2"
    )


def _maintain() -> str:
    ctes = []
    source = "inserted"
    below: Tier | None = None
    for tier in TIERS:
        part = f"p_{tier.table}"
        ctes.append(f"{part} AS ({_partials(tier, source, below)})")
        ctes.append(
            f"u_{tier.table} AS (INSERT INTO {tier.table} AS r "
            f"SELECT * FROM {part} ORDER BY series_id, bucket "
            "ON CONFLICT (series_id, bucket) DO UPDATE SET n = r.n + excluded.n, "
            "total = r.total + excluded.total, lo = LEAST(r.lo, excluded.lo), "
            "hi = GREATEST(r.hi, excluded.hi))"
        )
        source, below = part, tier
    return ",\n".join(ctes)


# CTEs to follow ``inserted AS (INSERT INTO readings ... RETURNING series_id, time, value)``.
MAINTAIN = _maintain()


def day_span(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[start, end) widened to whole UTC days (the coarsest tier); open ends become all time."""
    day = timedelta(days=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    lo = datetime(1, 1, 2, tzinfo=UTC) if start is None else epoch + (start - epoch) // day * day
    hi = datetime(9999, 12, 30, tzinfo=UTC) if end is None else epoch - (epoch - end) // day * day
    return lo, hi


def _lock_series(conn: psycopg.Connection, lab: str) -> list[int]:
    # The same row locks, in the same order, that the ingest writer takes before it moves a
    # batch: a rebuild and a writer never interleave on one series.
    rows = conn.execute(
        "SELECT id FROM series WHERE lab = %s ORDER BY id FOR NO KEY UPDATE", (lab,)
    ).fetchall()
    return [row[0] for row in rows]


def rebuild(
    conn: psycopg.Connection, lab: str, start: datetime | None = None, end: datetime | None = None
) -> int:
    """Recompute every tier of `lab`'s series over [start, end) widened to whole UTC days, from
    the readings, in one transaction. Returns the number of 15-minute partials written."""
    lo, hi = day_span(start, end)
    params = {"lo": lo, "hi": hi}
    with conn.transaction():
        params["ids"] = _lock_series(conn, lab)  # type: ignore[assignment]
        for tier in TIERS:
            conn.execute(
                f"DELETE FROM {tier.table} WHERE series_id = ANY(%(ids)s) "
                "AND bucket >= %(lo)s AND bucket < %(hi)s",
                params,
            )
        written = 0
        source = (
            "(SELECT * FROM readings WHERE series_id = ANY(%(ids)s) "
            "AND time >= %(lo)s AND time < %(hi)s) AS r"
        )
        below: Tier | None = None
        for tier in TIERS:
            cur = conn.execute(f"INSERT INTO {tier.table} {_partials(tier, source, below)}", params)
            written = written or cur.rowcount
            source = (
                f"(SELECT * FROM {tier.table} WHERE series_id = ANY(%(ids)s) "
                "AND bucket >= %(lo)s AND bucket < %(hi)s) AS r"
            )
            below = tier
    return written


@dataclass(frozen=True)
class Difference:
    table: str
    series_id: int
    bucket: datetime
    stored: tuple[int, float, float, float] | None  # n, total, lo, hi in the rollup
    actual: tuple[int, float, float, float] | None  # ... computed from the readings

    def __str__(self) -> str:
        return (
            f"{self.table} series {self.series_id} bucket {self.bucket.isoformat()}: "
            f"rollup has {self.stored}, readings give {self.actual}"
        )


def verify(
    conn: psycopg.Connection,
    lab: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    rel_tol: float = 1e-9,
    limit: int = 100,
) -> list[Difference]:
    """Compare every tier of `lab`'s series over [start, end) (widened to whole UTC days) with
    the readings: counts, min and max exactly, sums to `rel_tol` of the sum of |value|.
    Returns up to `limit` differences (none: the rollups are exact)."""
    lo, hi = day_span(start, end)
    out: list[Difference] = []
    with conn.transaction():
        ids = [row[0] for row in conn.execute("SELECT id FROM series WHERE lab = %s", (lab,))]
        params = {"ids": ids, "lo": lo, "hi": hi, "tol": rel_tol, "limit": limit}
        conn.execute(
            "CREATE TEMPORARY TABLE livelab_verify ON COMMIT DROP AS "
            "SELECT series_id, time_bucket(INTERVAL '15 minutes', time) AS bucket, "
            "count(*) AS n, sum(value) AS total, sum(abs(value)) AS mag, min(value) AS lo, "
            "max(value) AS hi FROM readings WHERE series_id = ANY(%(ids)s) "
            "AND time >= %(lo)s AND time < %(hi)s GROUP BY 1, 2",
            params,
        )
        for tier in TIERS:
            query = sql.SQL(
                "WITH a AS (SELECT series_id, time_bucket({iv}::interval, bucket) AS bucket, "
                "sum(n)::bigint AS n, sum(total) AS total, sum(mag) AS mag, min(lo) AS lo, "
                "max(hi) AS hi FROM livelab_verify GROUP BY 1, 2), "
                "s AS (SELECT * FROM {table} WHERE series_id = ANY(%(ids)s) "
                "AND bucket >= %(lo)s AND bucket < %(hi)s) "
                "SELECT coalesce(s.series_id, a.series_id), coalesce(s.bucket, a.bucket), "
                "s.n, s.total, s.lo, s.hi, a.n, a.total, a.lo, a.hi "
                "FROM s FULL JOIN a USING (series_id, bucket) "
                "WHERE s.n IS DISTINCT FROM a.n OR s.lo IS DISTINCT FROM a.lo "
                "OR s.hi IS DISTINCT FROM a.hi "
                "OR abs(s.total - a.total) > %(tol)s * greatest(a.mag, 1e-290) "
                "ORDER BY 1, 2 LIMIT %(limit)s"
            ).format(iv=sql.Literal(tier.interval), table=sql.Identifier(tier.table))
            for row in conn.execute(query, params):
                stored = None if row[2] is None else tuple(row[2:6])
                actual = None if row[6] is None else tuple(row[6:10])
                out.append(Difference(tier.table, row[0], row[1], stored, actual))  # type: ignore[arg-type]
    return out[:limit]


def _time(text: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livelab-rollups",
        description="Rebuild or verify the rollups (15-minute, hourly and daily partials) of a "
        "lab from its raw readings. Ranges are widened to whole UTC days.",
    )
    add_database_url_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("rebuild", "recompute the rollups from the readings (in one transaction)"),
        ("verify", "compare the rollups with the readings; exit 1 on any difference"),
    ):
        cmd = commands.add_parser(name, help=text, description=text)
        cmd.add_argument("--lab", required=True, help="the lab whose series to process")
        cmd.add_argument("--start", type=_time, help="RFC 3339; default: the beginning")
        cmd.add_argument("--end", type=_time, help="RFC 3339, exclusive; default: no end")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        conn = psycopg.connect(args.database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        log.error("cannot connect to the database: %s", str(exc).strip())
        return 2
    with conn:
        if args.command == "rebuild":
            n = rebuild(conn, args.lab, args.start, args.end)
            log.info("rebuilt the rollups of lab %s: %d 15-minute partials", args.lab, n)
            return 0
        differences = verify(conn, args.lab, args.start, args.end)
    for diff in differences:
        print(diff)
    if differences:
        log.error("lab %s: %d rollup rows differ from the readings", args.lab, len(differences))
        return 1
    log.info("lab %s: the rollups match the readings", args.lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
