"""Time buckets of the aggregates endpoint, and the SQL that groups readings into them.

Two kinds of bucket:

- calendar buckets (``1d``, ``1w``, ``1mo``) follow local calendar days in `tz`: TimescaleDB's
  ``time_bucket(interval, time, tz)`` buckets the local wall-clock time, so a Europe/Stockholm
  day has 23 or 25 hours around a DST change, a week starts on Monday 00:00 local (ISO; the
  function's default origin, 2000-01-03, is a Monday) and a month on the 1st 00:00 local.
- fixed buckets (``1m`` ... ``6h``) are exact lengths of elapsed time, aligned to local midnight
  (in `tz`) of the day `start` falls on. Bucketing local wall-clock time would merge the
  repeated hour when clocks go back (two hours of readings in one "1h" bucket, with a start
  after some of its readings), so these stay in absolute time; across a DST change a ``6h``
  bucket is then labelled 07:00 instead of 06:00, but it still holds exactly six hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from psycopg import sql


@dataclass(frozen=True)
class Bucket:
    name: str
    interval: str  # a PostgreSQL interval literal
    nominal: timedelta  # for the "too many buckets" limit; a month counts as 30 days
    calendar: bool


BUCKETS: dict[str, Bucket] = {
    b.name: b
    for b in (
        Bucket("1m", "1 minute", timedelta(minutes=1), False),
        Bucket("5m", "5 minutes", timedelta(minutes=5), False),
        Bucket("15m", "15 minutes", timedelta(minutes=15), False),
        Bucket("1h", "1 hour", timedelta(hours=1), False),
        Bucket("6h", "6 hours", timedelta(hours=6), False),
        Bucket("1d", "1 day", timedelta(days=1), True),
        Bucket("1w", "7 days", timedelta(days=7), True),
        Bucket("1mo", "1 month", timedelta(days=30), True),
    )
}

Stat = Literal["avg", "min", "max", "sum", "count"]
STATS: tuple[Stat, ...] = ("avg", "min", "max", "sum", "count")
DEFAULT_STATS: tuple[Stat, ...] = ("avg", "min", "max", "count")

_STAT_SQL = {
    "avg": "avg(value)",
    "min": "min(value)",
    "max": "max(value)",
    "sum": "sum(value)",
    "count": "count(*)",
}


def count_buckets(start: datetime, end: datetime, bucket: Bucket) -> int:
    """How many nominal buckets [start, end) spans (rounded up)."""
    return -(-(end - start) // bucket.nominal)


def local_midnight(at: datetime, tz: ZoneInfo) -> datetime:
    local = at.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def aggregate_query(bucket: Bucket, stats: list[Stat], *, fill: bool) -> sql.Composed:
    """The aggregates query over raw readings; parameters ``ids, start, end, tz, origin``.

    The API composes its answers from the rollups instead (`api.compose`); this plain
    ``time_bucket`` scan is the baseline `bench.api` measures them against.

    Rows: device, sensor, bucket (timestamptz), then one column per stat in `stats`.
    """
    interval = sql.Literal(bucket.interval)
    if bucket.calendar:
        bucket_expr = sql.SQL("time_bucket({}::interval, time, %(tz)s)").format(interval)
    else:
        bucket_expr = sql.SQL("time_bucket({}::interval, time, %(origin)s::timestamptz)").format(
            interval
        )
    agg_cols = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.SQL(_STAT_SQL[s]), sql.Identifier(s)) for s in stats
    )
    agg = sql.SQL(
        "SELECT series_id, {bucket} AS bucket, {cols} FROM readings "
        "WHERE series_id = ANY(%(ids)s) AND time >= %(start)s AND time < %(end)s "
        "GROUP BY series_id, bucket"
    ).format(bucket=bucket_expr, cols=agg_cols)

    if not fill:
        out_cols = sql.SQL(", ").join(sql.SQL("a.{}").format(sql.Identifier(s)) for s in stats)
        return sql.SQL(
            "SELECT s.device, s.sensor, a.bucket, {out} FROM ({agg}) a "
            "JOIN series s ON s.id = a.series_id "
            'ORDER BY s.device COLLATE "C", s.sensor COLLATE "C", a.bucket'
        ).format(out=out_cols, agg=agg)

    if bucket.calendar:
        # Step through local wall-clock bucket starts, then back to instants.
        starts = sql.SQL(
            "SELECT g AT TIME ZONE %(tz)s AS b FROM generate_series("
            "time_bucket({iv}::interval, %(start)s::timestamptz, %(tz)s) AT TIME ZONE %(tz)s, "
            "%(end)s::timestamptz AT TIME ZONE %(tz)s, {iv}::interval) g"
        ).format(iv=interval)
    else:
        starts = sql.SQL(
            "SELECT g AS b FROM generate_series("
            "time_bucket({iv}::interval, %(start)s::timestamptz, %(origin)s::timestamptz), "
            "%(end)s::timestamptz, {iv}::interval) g"
        ).format(iv=interval)
    out_cols = sql.SQL(", ").join(
        sql.SQL("coalesce(a.count, 0) AS count")
        if s == "count"
        else sql.SQL("a.{}").format(sql.Identifier(s))
        for s in stats
    )
    return sql.SQL(
        "WITH a AS ({agg}), k AS ({starts}) "
        "SELECT s.device, s.sensor, k.b, {out} FROM series s CROSS JOIN k "
        "LEFT JOIN a ON a.series_id = s.id AND a.bucket = k.b "
        "WHERE s.id = ANY(%(ids)s) AND k.b < %(end)s "
        'ORDER BY s.device COLLATE "C", s.sensor COLLATE "C", k.b'
    ).format(agg=agg, starts=starts, out=out_cols)
