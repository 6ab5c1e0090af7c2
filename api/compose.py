"""Aggregates composed from the rollups (`schemas.rollups`), reading raw readings only where
no rollup fits.

The requested range [start, end) is cut into the buckets of the request (`bucket_starts`), and
each bucket's part of the range into pieces (`plan`): the coarsest tier whose whole UTC buckets
fit inside it (daily partials for a month's interior days, hourly ones for the hours of a
Stockholm day, 15-minute ones around a Kolkata midnight), then finer tiers towards its ends,
and raw readings only for what no 15-minute bucket covers (a range end at 10:07, a 5-minute
bucket). Adjacent pieces of one source merge, so a year of Stockholm days is one hourly range.
Every reading lies in exactly one piece, so the partials add up to the exact count, min, max
and sum of the bucket; the query (`composed_query`) adds them per series and bucket.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg import sql

from api.buckets import Bucket, Stat
from schemas.rollups import TIERS, Tier

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Stats from summed partials: n (count), total (sum), lo (min), hi (max).
_STAT_SQL = {
    "avg": "sum(total) / sum(n)",
    "min": "min(lo)",
    "max": "max(hi)",
    "sum": "sum(total)",
    "count": "sum(n)::bigint",
}


def _local_start(day: date, zone: ZoneInfo) -> datetime:
    # The first instant of a local calendar day. fold=0: a midnight skipped by a DST change
    # maps to the instant of the change (the day's first real instant); a repeated one to its
    # first occurrence.
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _next_period(day: date, bucket: Bucket) -> date:
    if bucket.name == "1d":
        return day + timedelta(days=1)
    if bucket.name == "1w":
        return day + timedelta(days=7)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def bucket_starts(
    bucket: Bucket, zone: ZoneInfo, origin: datetime, start: datetime, end: datetime
) -> list[datetime]:
    """The starts (UTC) of the buckets that meet [start, end); the first is at or before start.

    Calendar buckets start at local midnight in `zone` (weeks on Monday, months on the 1st);
    fixed ones every `bucket.nominal` from `origin` (local midnight of the day of start).
    """
    out: list[datetime] = []
    if bucket.calendar:
        day = start.astimezone(zone).date()
        if bucket.name == "1w":
            day -= timedelta(days=day.weekday())
        elif bucket.name == "1mo":
            day = day.replace(day=1)
        at = _local_start(day, zone)
        while at < end:
            out.append(at)
            day = _next_period(day, bucket)
            at = _local_start(day, zone)
    else:
        step = bucket.nominal
        # In UTC: adding to a datetime in `zone` would step in wall-clock time.
        origin = origin.astimezone(UTC)
        at = origin + (start - origin) // step * step
        while at < end:
            out.append(at)
            at += step
    return out


def _floor(at: datetime, step: timedelta) -> datetime:
    return _EPOCH + (at - _EPOCH) // step * step


def _ceil(at: datetime, step: timedelta) -> datetime:
    return _EPOCH - (_EPOCH - at) // step * step


@dataclass
class Plan:
    """Where each part of the range is read from: merged [lo, hi) ranges per source."""

    tiers: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    raw: list[tuple[datetime, datetime]] = field(default_factory=list)

    def add(self, tier: Tier | None, lo: datetime, hi: datetime) -> None:
        if lo >= hi:
            return
        ranges = self.raw if tier is None else self.tiers.setdefault(tier.table, [])
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))


def _decompose(plan: Plan, lo: datetime, hi: datetime, tiers: tuple[Tier, ...]) -> None:
    # Coarsest tier first: its whole buckets inside [lo, hi), then the ends with finer tiers.
    for i in range(len(tiers) - 1, -1, -1):
        tier = tiers[i]
        a, b = _ceil(lo, tier.step), _floor(hi, tier.step)
        if a < b:
            _decompose(plan, lo, a, tiers[:i])
            plan.add(tier, a, b)
            _decompose(plan, b, hi, tiers[:i])
            return
    plan.add(None, lo, hi)


def plan(starts: list[datetime], start: datetime, end: datetime) -> Plan:
    """Cut each bucket's part of [start, end) into tier pieces and raw pieces."""
    out = Plan()
    edges = [start, *starts[1:], end]
    for lo, hi in itertools.pairwise(edges):
        _decompose(out, lo, hi, TIERS)
    return out


def composed_query(bucket: Bucket, stats: list[Stat], parts: Plan, order: str) -> sql.Composed:
    """The aggregates query; parameters ``ids, starts, origin`` and the plan's ranges.

    Rows: series id, key, then one column per stat. The key is the bucket's start (fixed
    buckets) or its index in ``starts`` (calendar buckets). `order` is ``series`` (in the
    order of ``ids``, then bucket) or ``bucket`` (bucket, then series in the order of ``ids``).
    All partials are summed in one aggregation over the union of the pieces.
    """
    if bucket.calendar:
        key = "width_bucket({col}, %(starts)s::timestamptz[]) - 1"
    else:
        key = f"time_bucket('{bucket.interval}'::interval, {{col}}, %(origin)s::timestamptz)"
    selects: list[sql.Composable] = []
    for table in parts.tiers:
        selects.append(
            sql.SQL(
                "SELECT r.series_id, {key} AS k, r.n, r.total, r.lo, r.hi "
                "FROM unnest({lo}::timestamptz[], {hi}::timestamptz[]) AS g(lo, hi) "
                "JOIN {table} r ON r.bucket >= g.lo AND r.bucket < g.hi "
                "WHERE r.series_id = ANY(%(ids)s)"
            ).format(
                key=sql.SQL(key.format(col="r.bucket")),
                lo=sql.Placeholder(f"{table}_lo"),
                hi=sql.Placeholder(f"{table}_hi"),
                table=sql.Identifier(table),
            )
        )
    if parts.raw:
        # The outer bounds as plain conditions too, so that TimescaleDB leaves out the chunks
        # outside them when it plans the query.
        selects.append(
            sql.SQL(
                "SELECT r.series_id, {key} AS k, 1 AS n, r.value AS total, r.value AS lo, "
                "r.value AS hi "
                "FROM unnest(%(raw_lo)s::timestamptz[], %(raw_hi)s::timestamptz[]) AS g(lo, hi) "
                "JOIN readings r ON r.time >= g.lo AND r.time < g.hi "
                "WHERE r.series_id = ANY(%(ids)s) "
                "AND r.time >= %(raw_min)s AND r.time < %(raw_max)s"
            ).format(key=sql.SQL(key.format(col="r.time")))
        )
    cols = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.SQL(_STAT_SQL[s]), sql.Identifier(s)) for s in stats
    )
    order_by = "o.ord, p.k" if order == "series" else "p.k, o.ord"
    return sql.SQL(
        "SELECT p.series_id, p.k, {cols} FROM ({parts}) p "
        "JOIN unnest(%(ids)s::int[]) WITH ORDINALITY AS o(id, ord) ON o.id = p.series_id "
        "GROUP BY o.ord, p.series_id, p.k ORDER BY {order}"
    ).format(cols=cols, parts=sql.SQL(" UNION ALL ").join(selects), order=sql.SQL(order_by))


def plan_params(parts: Plan) -> dict[str, object]:
    params: dict[str, object] = {}
    for table, ranges in parts.tiers.items():
        params[f"{table}_lo"] = [lo for lo, _ in ranges]
        params[f"{table}_hi"] = [hi for _, hi in ranges]
    if parts.raw:
        params["raw_lo"] = [lo for lo, _ in parts.raw]
        params["raw_hi"] = [hi for _, hi in parts.raw]
        params["raw_min"] = parts.raw[0][0]
        params["raw_max"] = parts.raw[-1][1]
    return params
