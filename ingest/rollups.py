"""Keep, rebuild and verify the rollups (`schemas.rollups`), and the ``livelab-rollups`` command.

Ingest keeps them exact by adding, in the statement that inserts a batch's readings, the
partials of exactly the rows that ``INSERT ... ON CONFLICT DO NOTHING`` inserted (`MAINTAIN`,
spliced into `ingest.store`'s move statement after its ``inserted`` CTE): a duplicate or a
redelivery inserts nothing and so adds nothing, and a late reading lands in its bucket in the
same transaction. Workers lock the series rows they touch (in id order) before the move, so
two workers never update one series' partials at once.

livelab-rollups rebuild --lab L [--start T] [--end T]   # recompute from the readings
livelab-rollups verify --lab L [--start T] [--end T]    # compare; exit 1 on any difference
livelab-rollups zone [NAME]                             # the daily partials' zone: show, set
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql

from schemas.migrate import add_database_url_argument
from schemas.rollups import DAILY, TIERS, ZONE_SQL, ZONE_YEARS, Tier
from schemas.times import local_day_start, parse_rfc3339

log = logging.getLogger("livelab.rollups")


def _source(tier: Tier) -> Tier | None:
    """The tier `tier` is added from (None: the readings)."""
    i = TIERS.index(tier)
    return None if i == 0 else TIERS[0] if tier.local else TIERS[i - 1]


def _partials(tier: Tier, source: str, zone: str = ZONE_SQL, extra: str = "") -> str:
    """SELECT series_id, bucket, n, total, lo, hi (then `extra`, columns of the readings) of
    `tier`, from `source`: the readings (the first tier) or the partials of the tier it is
    added from (`_source`)."""
    iv = f"INTERVAL '{tier.interval}'"
    if _source(tier) is None:
        return (
            f"SELECT series_id, time_bucket({iv}, time) AS bucket, count(*) AS n, "
            f"sum(value) AS total, min(value) AS lo, max(value) AS hi{extra} "
            f"FROM {source} GROUP BY 1, 2"
        )
    bucket = f"time_bucket({iv}, bucket, {zone})" if tier.local else f"time_bucket({iv}, bucket)"
    return (
        f"SELECT series_id, {bucket} AS bucket, sum(n)::bigint AS n, "
        f"sum(total) AS total, min(lo) AS lo, max(hi) AS hi FROM {source} GROUP BY 1, 2"
    )


def _maintain() -> str:
    ctes = []
    for tier in TIERS:
        below = _source(tier)
        part = f"p_{tier.table}"
        if below is None:
            # The first tier's partials also carry their first and last reading's time, for
            # the series' statistics (`SERIES_STATS`).
            select = _partials(tier, "inserted", extra=", min(time) AS first, max(time) AS last")
        else:
            select = _partials(tier, f"p_{below.table}")
        ctes.append(f"{part} AS ({select})")
        ctes.append(
            f"u_{tier.table} AS (INSERT INTO {tier.table} AS r "
            f"SELECT series_id, bucket, n, total, lo, hi FROM {part} ORDER BY series_id, bucket "
            "ON CONFLICT (series_id, bucket) DO UPDATE SET n = r.n + excluded.n, "
            "total = r.total + excluded.total, lo = LEAST(r.lo, excluded.lo), "
            "hi = GREATEST(r.hi, excluded.hi))"
        )
    return ",\n".join(ctes)


# CTEs to follow ``inserted AS (INSERT INTO readings ... RETURNING series_id, time, value)``.
MAINTAIN = _maintain()

# The first time, last time and count of the inserted readings per series (the `series`
# statistics the writer keeps), from the first tier's partials MAINTAIN computes anyway: one
# row per series and quarter hour to group instead of one per reading.
SERIES_STATS = (
    f"per_series AS (SELECT series_id, min(first) AS first, max(last) AS last, "
    f"sum(n)::bigint AS n FROM p_{TIERS[0].table} GROUP BY series_id)"
)

# Rebuild and verify work on whole UTC days [lo, hi) for the 15-minute and hourly partials, and
# on the local days that meet them for the daily ones: those need the 15-minute partials of up
# to a day before lo and two after hi (days last 23 to 25 hours, offsets are within +-14 h).
_BEFORE, _AFTER = timedelta(days=1), timedelta(days=2)


def day_span(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[start, end) widened to whole UTC days; open ends become all time."""
    day = timedelta(days=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    lo = datetime(1, 1, 5, tzinfo=UTC) if start is None else epoch + (start - epoch) // day * day
    hi = datetime(9999, 12, 27, tzinfo=UTC) if end is None else epoch - (epoch - end) // day * day
    return lo, hi


def _lock_series(conn: psycopg.Connection, lab: str) -> list[int]:
    # The same row locks, in the same order, that the ingest writer takes before it moves a
    # batch: a rebuild and a writer never interleave on one series.
    rows = conn.execute(
        "SELECT id FROM series WHERE lab = %s ORDER BY id FOR NO KEY UPDATE", (lab,)
    ).fetchall()
    return [row[0] for row in rows]


def _bounds(tier: Tier) -> str:
    """The buckets of `tier` that rebuild and verify handle."""
    if tier.local:  # the local days that meet [lo, hi)
        return f"bucket >= time_bucket(INTERVAL '1 day', %(lo)s, {ZONE_SQL}) AND bucket < %(hi)s"
    return "bucket >= %(lo)s AND bucket < %(hi)s"


def rebuild(
    conn: psycopg.Connection, lab: str, start: datetime | None = None, end: datetime | None = None
) -> int:
    """Recompute every tier of `lab`'s series over [start, end) widened to whole UTC days (and
    the local days that meet them), from the readings, in one transaction. Returns the number
    of 15-minute partials written."""
    lo, hi = day_span(start, end)
    params: dict[str, object] = {"lo": lo, "hi": hi, "wlo": lo - _BEFORE, "whi": hi + _AFTER}
    with conn.transaction():
        params["ids"] = _lock_series(conn, lab)
        for tier in TIERS:
            conn.execute(
                f"DELETE FROM {tier.table} WHERE series_id = ANY(%(ids)s) AND {_bounds(tier)}",
                params,
            )
        written = 0
        for tier in TIERS:
            below = _source(tier)
            if below is None:
                source = (
                    "(SELECT * FROM readings WHERE series_id = ANY(%(ids)s) "
                    "AND time >= %(lo)s AND time < %(hi)s) AS r"
                )
            else:
                source = (
                    f"(SELECT * FROM {below.table} WHERE series_id = ANY(%(ids)s) "
                    "AND bucket >= %(wlo)s AND bucket < %(whi)s) AS r"
                )
            cur = conn.execute(
                f"INSERT INTO {tier.table} SELECT * FROM ({_partials(tier, source)}) AS p "
                f"WHERE {_bounds(tier)}",
                params,
            )
            written = written or cur.rowcount
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
    """Compare every tier of `lab`'s series over [start, end) (widened to whole UTC days, and
    every local day that meets them) with the readings: counts, min and max exactly, sums to
    `rel_tol` of the sum of |value|. Returns up to `limit` differences (none: exact)."""
    lo, hi = day_span(start, end)
    out: list[Difference] = []
    with conn.transaction():
        ids = [row[0] for row in conn.execute("SELECT id FROM series WHERE lab = %s", (lab,))]
        params = {"ids": ids, "lo": lo, "hi": hi, "wlo": lo - _BEFORE, "whi": hi + _AFTER}
        params |= {"tol": rel_tol, "limit": limit}
        conn.execute(
            "CREATE TEMPORARY TABLE livelab_verify ON COMMIT DROP AS "
            "SELECT series_id, time_bucket(INTERVAL '15 minutes', time) AS bucket, "
            "count(*) AS n, sum(value) AS total, sum(abs(value)) AS mag, min(value) AS lo, "
            "max(value) AS hi FROM readings WHERE series_id = ANY(%(ids)s) "
            "AND time >= %(wlo)s AND time < %(whi)s GROUP BY 1, 2",
            params,
        )
        for tier in TIERS:
            iv = sql.Literal(tier.interval)
            bucket = (
                sql.SQL("time_bucket({}::interval, bucket, {})").format(iv, sql.SQL(ZONE_SQL))
                if tier.local
                else sql.SQL("time_bucket({}::interval, bucket)").format(iv)
            )
            query = sql.SQL(
                "WITH a AS (SELECT * FROM (SELECT series_id, {bucket} AS bucket, "
                "sum(n)::bigint AS n, sum(total) AS total, sum(mag) AS mag, min(lo) AS lo, "
                "max(hi) AS hi FROM livelab_verify GROUP BY 1, 2) AS g WHERE {bounds}), "
                "s AS (SELECT * FROM {table} WHERE series_id = ANY(%(ids)s) AND {bounds}) "
                "SELECT coalesce(s.series_id, a.series_id), coalesce(s.bucket, a.bucket), "
                "s.n, s.total, s.lo, s.hi, a.n, a.total, a.lo, a.hi "
                "FROM s FULL JOIN a USING (series_id, bucket) "
                "WHERE s.n IS DISTINCT FROM a.n OR s.lo IS DISTINCT FROM a.lo "
                "OR s.hi IS DISTINCT FROM a.hi "
                "OR abs(s.total - a.total) > %(tol)s * greatest(a.mag, 1e-290) "
                "ORDER BY 1, 2 LIMIT %(limit)s"
            ).format(bucket=bucket, bounds=sql.SQL(_bounds(tier)), table=sql.Identifier(tier.table))
            for row in conn.execute(query, params):
                stored = None if row[2] is None else tuple(row[2:6])
                actual = None if row[6] is None else tuple(row[6:10])
                out.append(Difference(tier.table, row[0], row[1], stored, actual))  # type: ignore[arg-type]
    return out[:limit]


def check_zone(conn: psycopg.Connection, name: str) -> str | None:
    """Why `name` cannot be the daily rollup's zone (None: it can). Over `ZONE_YEARS`, each
    local midnight must fall on a quarter hour (the daily partials are added from 15-minute
    ones) and the database's local days must be Python's (the API's)."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not an IANA time zone name (e.g. Europe/Stockholm, UTC)"
    day, last = date(ZONE_YEARS[0], 1, 1), date(ZONE_YEARS[1], 1, 1)
    starts = []
    while day < last:
        starts.append(local_day_start(day, zone))
        day += timedelta(days=1)
    odd = next((s for s in starts if s.timestamp() % 900), None)
    if odd is not None:
        local = odd.astimezone(zone).isoformat()
        return f"{name}: its local day starting {local} does not start on a quarter hour"
    try:
        row = conn.execute(
            "SELECT s FROM unnest(%s::timestamptz[]) AS s "
            "WHERE time_bucket(INTERVAL '1 day', s, %s) <> s LIMIT 1",
            (starts, name),
        ).fetchone()
    except psycopg.errors.InvalidParameterValue:
        return f"the database does not know the time zone {name!r}"
    if row is not None:
        return f"{name}: the database's local day at {row[0].isoformat()} differs from Python's"
    return None


def zone_of(conn: psycopg.Connection) -> str:
    row = conn.execute(f"SELECT {ZONE_SQL}").fetchone()
    return str(row[0]) if row else "UTC"


def set_zone(conn: psycopg.Connection, name: str) -> int:
    """Make `name` the daily rollup's zone and recompute the daily partials in it from the
    15-minute ones, in one transaction that the ingest writers wait for (and that waits for
    them). Returns the number of daily partials written. `check_zone` first."""
    with conn.transaction():
        # Writers lock series rows (ROW SHARE) before they add to the partials: none is
        # between its lock and its commit while the zone and the daily partials change.
        conn.execute("LOCK TABLE series IN EXCLUSIVE MODE")
        conn.execute("UPDATE rollup_settings SET zone = %s", (name,))
        conn.execute(f"DELETE FROM {DAILY.table}")
        cur = conn.execute(
            f"INSERT INTO {DAILY.table} {_partials(DAILY, TIERS[0].table, zone='%(zone)s')}",
            {"zone": name},
        )
        return cur.rowcount


def _time(text: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livelab-rollups",
        description="Rebuild or verify the rollups (15-minute, hourly and daily partials) of a "
        "lab from its raw readings (ranges are widened to whole UTC days and the local days "
        "that meet them), or show or set the zone whose local days the daily partials follow.",
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
    text = (
        "show the zone of the daily partials, or set it (e.g. Europe/Stockholm) and recompute "
        "them in it: daily, weekly and monthly aggregates in that zone read one partial per day"
    )
    cmd = commands.add_parser("zone", help=text, description=text)
    cmd.add_argument("name", nargs="?", help="IANA time zone name; omit to show the current one")
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
        if args.command == "zone":
            return _zone_command(conn, args.name)
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


def _zone_command(conn: psycopg.Connection, name: str | None) -> int:
    current = zone_of(conn)
    if name is None:
        print(current)
        return 0
    if name == current:
        log.info("the daily rollups already follow %s", name)
        return 0
    why = check_zone(conn, name)
    if why is not None:
        log.error("cannot use this zone for the daily rollups: %s", why)
        return 2
    n = set_zone(conn, name)
    log.info("the daily rollups now follow %s (was %s): %d daily partials", name, current, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
