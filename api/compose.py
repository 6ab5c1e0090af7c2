"""Aggregates composed from the rollups (`schemas.rollups`), reading raw readings only where
no rollup fits.

The requested range [start, end) is cut into the buckets of the request (`bucket_starts`), and
each bucket's part of the range into pieces (`plan`): the coarsest tier whose whole buckets fit
inside it (daily partials for the days of a month in the deployment's zone, hourly ones for the
hours of a Stockholm day when the daily partials follow another zone, 15-minute ones around a
Kolkata midnight), then finer tiers towards its ends, and raw readings only for what no
15-minute bucket covers (a range end at 10:07, a 5-minute bucket). Adjacent pieces of one source
merge, so a year of days is one range of daily (or hourly) partials.
Every reading lies in exactly one piece, so the partials add up to the exact count, min, max
and sum of the bucket; the query (`composed_query`) adds them per series and bucket.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg import sql

from api.buckets import Bucket, Stat
from schemas.rollups import DAILY, TIERS, ZONE_YEARS, Tier
from schemas.times import local_day_start

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Stats from the summed partials n (count), total (sum), lo (min) and hi (max).
_STAT_SQL = {
    "avg": "p.total / p.n",
    "min": "p.lo",
    "max": "p.hi",
    "sum": "p.total",
    "count": "p.n",
}


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
        at = local_day_start(day, zone)
        while at < end:
            out.append(at)
            day = _next_period(day, bucket)
            at = local_day_start(day, zone)
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


@dataclass(frozen=True)
class Grid:
    """A tier as the planner sees it: where its partials start. The 15-minute and hourly ones
    on multiples of their step in UTC; the daily one (`zone` set) on the local midnights of the
    deployment's zone, and only from 1970 to 2100, where `ingest.rollups.check_zone` proved
    them exact."""

    tier: Tier
    zone: ZoneInfo | None = None

    def inner(self, lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
        """The first and last boundary inside [lo, hi] (first >= last: none fits)."""
        if self.zone is None:
            return _ceil(lo, self.tier.step), _floor(hi, self.tier.step)
        first_day, end_day = _checked_years(self.zone)
        lo, hi = max(lo, first_day), min(hi, end_day)
        if lo >= hi:
            return hi, lo
        first = lo.astimezone(self.zone).date()
        a = local_day_start(first, self.zone)
        if a < lo:
            a = local_day_start(first + timedelta(days=1), self.zone)
        return a, local_day_start(hi.astimezone(self.zone).date(), self.zone)


@functools.cache
def _checked_years(zone: ZoneInfo) -> tuple[datetime, datetime]:
    return tuple(local_day_start(date(year, 1, 1), zone) for year in ZONE_YEARS)  # type: ignore[return-value]


def grids(zone: ZoneInfo, daily_zone: str) -> tuple[Grid, ...]:
    """The tiers usable for buckets in `zone`, finest first: the daily partials only when they
    follow that zone (`daily_zone`, the deployment's ``rollup_settings.zone``)."""
    out = tuple(Grid(t) for t in TIERS if not t.local)
    return (*out, Grid(DAILY, zone)) if zone.key == daily_zone else out


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


def _decompose(plan: Plan, lo: datetime, hi: datetime, usable: tuple[Grid, ...]) -> None:
    # Coarsest tier first: its whole buckets inside [lo, hi), then the ends with finer tiers.
    for i in range(len(usable) - 1, -1, -1):
        try:
            a, b = usable[i].inner(lo, hi)
        except OverflowError:  # at the end of time (9999-12-31): this tier does not fit
            continue
        if a < b:
            _decompose(plan, lo, a, usable[:i])
            plan.add(usable[i].tier, a, b)
            _decompose(plan, b, hi, usable[:i])
            return
    plan.add(None, lo, hi)


def plan(
    starts: list[datetime],
    start: datetime,
    end: datetime,
    step: timedelta | None,
    usable: tuple[Grid, ...],
) -> Plan:
    """Cut each bucket's part of [start, end) into tier pieces and raw pieces.

    `step`: the length of fixed buckets (None: calendar buckets). When a tier tiles them (its
    step divides theirs and their starts fall on its boundaries, or calendar buckets in the
    daily partials' zone), the buckets between the first and the last are that tier's
    partials, in one range, without cutting bucket by bucket (8 760 hours of a year).
    """
    out = Plan()
    tile: Tier | None = None
    if len(starts) > 2 and step is None:
        # Calendar buckets in the daily partials' zone start on its local midnights: the
        # buckets between the first and the last are whole days (unless they reach outside the
        # years where those are checked).
        daily = next((g for g in usable if g.zone is not None), None)
        if daily is not None and daily.inner(starts[1], starts[-1]) == (starts[1], starts[-1]):
            tile = daily.tier
    elif len(starts) > 2 and step is not None:
        tiling = [
            g.tier
            for g in usable
            if g.zone is None
            and step % g.tier.step == timedelta(0)
            and _floor(starts[1], g.tier.step) == starts[1]
        ]
        tile = tiling[-1] if tiling else None
    if tile is not None:
        _decompose(out, start, starts[1], usable)
        out.add(tile, starts[1], starts[-1])
        _decompose(out, starts[-1], end, usable)
        return out
    edges = [start, *starts[1:], end]
    for lo, hi in itertools.pairwise(edges):
        _decompose(out, lo, hi, usable)
    return out


def composed_query(bucket: Bucket, stats: list[Stat], parts: Plan, order: str) -> sql.Composed:
    """The aggregates query; parameters ``ids, starts, origin`` and the plan's ranges.

    Rows: series id, key, then one column per stat. The key is the bucket's start (fixed
    buckets) or its index in ``starts`` (calendar buckets). `order` is ``series`` (in the
    order of ``ids``, then bucket) or ``bucket`` (bucket, then series in the order of ``ids``).
    All partials are summed in one aggregation over the union of the pieces.
    """
    order_by = "o.ord, p.k" if order == "series" else "p.k, o.ord"
    same = _one_partial_per_bucket(bucket, parts)
    if same is not None:
        # Each bucket is one partial of one tier (1h buckets on whole UTC hours, the days of
        # the daily partials' zone): no grouping.
        k = (
            "width_bucket(r.bucket, %(starts)s::timestamptz[]) - 1"
            if bucket.calendar
            else "r.bucket"
        )
        return sql.SQL(
            "SELECT p.series_id, p.k, {cols} FROM ("
            "SELECT r.series_id, {k} AS k, r.n, r.total, r.lo, r.hi FROM {table} r "
            "WHERE r.series_id = ANY(%(ids)s) "
            "AND r.bucket >= {lo} AND r.bucket < {hi}) p "
            "JOIN unnest(%(ids)s::int[]) WITH ORDINALITY AS o(id, ord) ON o.id = p.series_id "
            "ORDER BY {order}"
        ).format(
            cols=_stat_columns(stats),
            k=sql.SQL(k),
            table=sql.Identifier(same),
            lo=sql.Placeholder(f"{same}_min"),
            hi=sql.Placeholder(f"{same}_max"),
            order=sql.SQL(order_by),
        )
    if bucket.calendar:
        key = "width_bucket({col}, %(starts)s::timestamptz[]) - 1"
    else:
        key = f"time_bucket('{bucket.interval}'::interval, {{col}}, %(origin)s::timestamptz)"
    selects: list[sql.Composable] = []
    for table, ranges in parts.tiers.items():
        selects.append(
            _piece_select(
                sql.SQL("SELECT r.series_id, {key} AS k, r.n, r.total, r.lo, r.hi").format(
                    key=sql.SQL(key.format(col="r.bucket"))
                ),
                sql.Identifier(table),
                "r.bucket",
                table,
                len(ranges),
            )
        )
    if parts.raw:
        selects.append(
            _piece_select(
                sql.SQL(
                    "SELECT r.series_id, {key} AS k, 1 AS n, r.value AS total, r.value AS lo, "
                    "r.value AS hi"
                ).format(key=sql.SQL(key.format(col="r.time"))),
                sql.Identifier("readings"),
                "r.time",
                "raw",
                len(parts.raw),
            )
        )
    cols = _stat_columns(stats)
    # Sum the partials first, then join the series order to the (far fewer) groups.
    return sql.SQL(
        "SELECT p.series_id, p.k, {cols} FROM ("
        "SELECT u.series_id, u.k, sum(u.n)::bigint AS n, sum(u.total) AS total, "
        "min(u.lo) AS lo, max(u.hi) AS hi FROM ({parts}) u GROUP BY 1, 2) p "
        "JOIN unnest(%(ids)s::int[]) WITH ORDINALITY AS o(id, ord) ON o.id = p.series_id "
        "ORDER BY {order}"
    ).format(cols=cols, parts=sql.SQL(" UNION ALL ").join(selects), order=sql.SQL(order_by))


def _stat_columns(stats: list[Stat]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.SQL(_STAT_SQL[s]), sql.Identifier(s)) for s in stats
    )


def _one_partial_per_bucket(bucket: Bucket, parts: Plan) -> str | None:
    """The tier's table when every bucket is exactly one of its partials, else None."""
    if parts.raw or len(parts.tiers) != 1:
        return None
    ((table, ranges),) = parts.tiers.items()
    tier = next(t for t in TIERS if t.table == table)
    if len(ranges) != 1:
        return None
    if tier.local:  # a range of whole local days: one partial per 1d bucket
        return table if bucket.name == "1d" else None
    return table if not bucket.calendar and tier.step == bucket.nominal else None


def _piece_select(
    select: sql.Composable, table: sql.Identifier, col: str, name: str, n_ranges: int
) -> sql.Composed:
    # The outer bounds are plain conditions, so that the planner sees how much of the table
    # they cover and TimescaleDB leaves out the chunks outside them. One range needs nothing
    # else (the common case: a year of Stockholm days is one hourly range); several are
    # joined from arrays, each range an index range scan.
    bounds = sql.SQL("{col} >= {lo} AND {col} < {hi}").format(
        col=sql.SQL(col), lo=sql.Placeholder(f"{name}_min"), hi=sql.Placeholder(f"{name}_max")
    )
    if n_ranges == 1:
        return sql.SQL("{select} FROM {table} r WHERE r.series_id = ANY(%(ids)s) AND {b}").format(
            select=select, table=table, b=bounds
        )
    return sql.SQL(
        "{select} FROM unnest({lo}::timestamptz[], {hi}::timestamptz[]) AS g(lo, hi) "
        "JOIN {table} r ON {col} >= g.lo AND {col} < g.hi "
        "WHERE r.series_id = ANY(%(ids)s) AND {b}"
    ).format(
        select=select,
        lo=sql.Placeholder(f"{name}_lo"),
        hi=sql.Placeholder(f"{name}_hi"),
        table=table,
        col=sql.SQL(col),
        b=bounds,
    )


def plan_params(parts: Plan) -> dict[str, object]:
    params: dict[str, object] = {}
    for name, ranges in [*parts.tiers.items(), ("raw", parts.raw)]:
        if ranges:
            params[f"{name}_lo"] = [lo for lo, _ in ranges]
            params[f"{name}_hi"] = [hi for _, hi in ranges]
            params[f"{name}_min"] = ranges[0][0]
            params[f"{name}_max"] = ranges[-1][1]
    return params
