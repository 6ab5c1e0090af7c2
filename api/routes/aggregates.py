"""`GET /v1/labs/{lab}/aggregates`: one row per series and time bucket."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from fastapi import APIRouter, Query
from psycopg import AsyncConnection
from pydantic import BaseModel

from api import compose, streams
from api.buckets import (
    BUCKETS,
    DEFAULT_STATS,
    STATS,
    Bucket,
    Stat,
    count_buckets,
    local_midnight,
)
from api.deps import Conn, Lab, SettingsDep
from api.models import AggregatePage
from api.openapi import LAB_RESPONSES, V1_RESPONSES
from api.params import (
    SERIES_FILTER,
    DeviceFilter,
    EndParam,
    SensorFilter,
    StartParam,
    bad_request,
    parse_filters,
    parse_range,
)
from schemas.rollups import ZONE_SQL
from schemas.times import format_rfc3339

router = APIRouter(prefix="/v1", tags=["aggregates"], responses=V1_RESPONSES)

_TZ_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-/]{0,63}")
_BUCKET_NAMES = ", ".join(BUCKETS)
# One `stats` value: stat names separated by commas. (Blanks around a name and empty items,
# as in "avg, max," are tolerated too; the document shows the plain form.)
_STAT = "(?:" + "|".join(STATS) + ")"
_STATS_PATTERN = f"^{_STAT}(?:,{_STAT})*$"

DESCRIPTION = f"""
Statistics of the readings of each series (device, sensor) of the lab in time buckets.

- `start` (inclusive) and `end` (exclusive) are required. A bucket that starts before `start`
  or ends after `end` only counts the readings inside the range.
- `bucket` (default `1h`): {_BUCKET_NAMES}. `1d`, `1w` (ISO week, from Monday) and `1mo`
  follow local calendar days in `tz`, so a day has 23 or 25 hours around a DST change.
  `1m` to `6h` are exact lengths of time aligned to local midnight of the day of `start`.
- `bucket` in the answer is the bucket's start with the UTC offset of `tz` at that instant.
- Rows are ordered by device, sensor, bucket. `count` is an integer, the other stats are numbers.
- Without `fill`, buckets without readings are absent. With `fill=null`, every bucket of
  every matching series is present; empty ones have `count` 0 and null for the other stats.
- A range spanning more than the server's limit of buckets per series (a month counts as 30
  days) is refused with 400.
- `layout=long` (default): one row per series and bucket. `layout=wide`: one row per bucket
  (ordered by bucket) with `bucket` and one column per series and stat, named
  `{{device}}/{{sensor}}/{{stat}}` (series in device, sensor order; stats in the order asked). In a
  wide row, a series without readings in that bucket has `count` 0 and null for the other
  stats; without `fill`, buckets where no series has readings are absent. Both layouts in JSON
  (`{{"data": [{{"bucket": ..., "station-1/no2/avg": ...}}, ...], "next": null}}`) and CSV.
- The answer is exact: it is composed from rollups kept in the same transaction as the
  readings (15-minute and hourly partials per series, and daily ones in the deployment's time
  zone, which days, weeks and months in that `tz` read), and from raw readings where no rollup
  fits the buckets or the range's ends. It is streamed, so large answers start at once.
"""


def _parse_stats(raw: list[str] | None) -> list[Stat]:
    if raw is None:
        return list(DEFAULT_STATS)
    out: list[Stat] = []
    for part in (p.strip() for item in raw for p in item.split(",")):
        if not part:
            continue
        if part not in STATS:
            shown = part if len(part) <= 40 else part[:37] + "..."
            raise bad_request(f"stats: unknown stat {shown!r}; use any of {', '.join(STATS)}")
        stat: Stat = part  # type: ignore[assignment]
        if stat not in out:
            out.append(stat)
    if not out:
        raise bad_request(f"stats: name at least one of {', '.join(STATS)}")
    return out


def _parse_tz(tz: str) -> ZoneInfo:
    shown = tz if len(tz) <= 64 else tz[:61] + "..."
    if _TZ_RE.fullmatch(tz) is None:
        raise bad_request(f"tz: {shown!r} is not an IANA time zone name (e.g. Europe/Stockholm)")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise bad_request(
            f"tz: unknown time zone {shown!r}; use an IANA name such as UTC or Europe/Stockholm"
        ) from None


class AggregateQuery(BaseModel):
    """The query parameters of `GET /v1/labs/{lab}/aggregates` (FastAPI reads each field from
    the query string; unknown parameters are ignored, as everywhere in the API)."""

    start: StartParam
    end: EndParam
    bucket: Annotated[
        str,
        Query(
            description=f"Bucket size: {_BUCKET_NAMES}.",
            examples=["1h"],
            # Documented, checked below (so that the 400 names the value and the choices).
            json_schema_extra={"enum": list(BUCKETS)},
        ),
    ] = "1h"
    tz: Annotated[
        str,
        Query(
            description="IANA time zone name (e.g. UTC, Europe/Stockholm) for the buckets and "
            "the offsets in the answer; an unknown name is a 400.",
            examples=["Europe/Stockholm"],
            json_schema_extra={"pattern": f"^{_TZ_RE.pattern}$"},
        ),
    ] = "UTC"
    stats: Annotated[
        list[str] | None,
        Query(
            description="Stats to compute, comma-separated and/or repeated, in the order "
            "wanted: any of avg, min, max, sum, count. Default: avg,min,max,count.",
            examples=[["avg,max"]],
            json_schema_extra={"items": {"type": "string", "pattern": _STATS_PATTERN}},
        ),
    ] = None
    device: DeviceFilter = None
    sensor: SensorFilter = None
    format: Annotated[
        Literal["json", "csv"],
        Query(description="`json` or `csv` (a header row, then one row per record)."),
    ] = "json"
    fill: Annotated[
        Literal["null"] | None,
        Query(description="`null`: include buckets without readings, with null stats."),
    ] = None
    layout: Annotated[
        Literal["long", "wide"],
        Query(
            description="`long` (default): one row per series and bucket. `wide`: one row per "
            "bucket, one column per series and stat, named `{device}/{sensor}/{stat}`."
        ),
    ] = "long"


@router.get(
    "/labs/{lab}/aggregates",
    response_model=AggregatePage,
    description=DESCRIPTION,
    responses={
        **LAB_RESPONSES,
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "JSON, or CSV with `format=csv`; long or wide layout.",
        },
    },
)
async def aggregates(
    lab: Lab, conn: Conn, settings: SettingsDep, query: Annotated[AggregateQuery, Query()]
) -> streams.ClosingStreamingResponse:
    """Statistics per series and time bucket (avg, min, max, sum, count)."""
    start, end, bucket = query.start, query.end, query.bucket
    start_dt, end_dt = parse_range(start, end)
    spec = BUCKETS.get(bucket)
    if spec is None:
        shown = bucket if len(bucket) <= 20 else bucket[:17] + "..."
        raise bad_request(f"bucket: {shown!r} is not one of {_BUCKET_NAMES}")
    zone = _parse_tz(query.tz)
    wanted = _parse_stats(query.stats)
    devices, sensors = parse_filters(query.device, query.sensor)
    n = count_buckets(start_dt, end_dt, spec)
    if n > settings.api_max_buckets:
        raise bad_request(
            f"the range from {start} to {end} spans {n} buckets of {bucket} per series, more "
            f"than the limit of {settings.api_max_buckets}; ask for a shorter range or a "
            "larger bucket"
        )
    # One snapshot for the daily partials' zone, the series and the partials (`livelab-rollups
    # zone` changes the zone and rewrites the daily partials in one transaction). The
    # transaction ends when the answer has been sent (`_query`'s close), or here on an error.
    # Its settings, for the composed query's server-side cursor: plan for all rows, not for the
    # first 10 % (the default for cursors); no JIT (its compile time, up to a second, is what
    # the planner's overestimates of the pieces' rows would buy); room to sort and group a year
    # of hourly partials in memory.
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        cur = await conn.execute(
            f"SELECT {ZONE_SQL}, set_config('cursor_tuple_fraction', '1', true), "
            "set_config('jit', 'off', true), set_config('work_mem', '64MB', true)"
        )
        daily_zone = await cur.fetchone()
        try:
            origin = local_midnight(start_dt, zone)
            starts = compose.bucket_starts(spec, zone, origin, start_dt, end_dt)
            parts = compose.plan(
                starts,
                start_dt,
                end_dt,
                None if spec.calendar else spec.nominal,
                compose.grids(zone, daily_zone[0] if daily_zone else "UTC"),
            )
        except (OverflowError, ValueError):
            raise bad_request(f"start: {start!r} is out of the supported range") from None
        cur = await conn.execute(
            f"SELECT id, device, sensor FROM series WHERE {SERIES_FILTER} "
            'ORDER BY device COLLATE "C", sensor COLLATE "C"',
            {"lab": lab, "devices": devices, "sensors": sensors},
        )
        found = await cur.fetchall()
        ids = [row[0] for row in found]
        if n * len(ids) > settings.api_max_rows:
            raise bad_request(
                f"the request could produce {n * len(ids)} rows ({len(ids)} series x {n} "
                f"buckets of {bucket}), more than the limit of {settings.api_max_rows}; filter "
                "by device or sensor, ask for a shorter range or a larger bucket"
            )
        names = {row[0]: (row[1], row[2]) for row in found}  # in answer order (dicts keep it)
        chunks, close = await _query(conn, spec, wanted, names, starts, origin, parts, query.layout)
    except BaseException:
        await conn.rollback()
        raise

    labels: dict[datetime, str] = {}

    def label(b: datetime) -> str:
        text = labels.get(b)
        if text is None:
            text = labels[b] = format_rfc3339(b.astimezone(zone))
        return text

    shaper = streams.Shaper(
        layout=query.layout,
        stats=wanted,
        names=names,
        starts=starts,
        keyed=spec.calendar,
        fill=query.fill is not None,
        label=label,
    )
    headers = {}
    media_type = "application/json"
    if query.format == "csv":
        media_type = "text/csv; charset=utf-8"
        headers["Content-Disposition"] = f'inline; filename="{lab}-aggregates.csv"'
    return streams.ClosingStreamingResponse(
        streams.encode(chunks, shaper, query.format),
        on_close=close,
        media_type=media_type,
        headers=headers,
    )


async def _query(
    conn: AsyncConnection,
    spec: Bucket,
    wanted: list[Stat],
    names: dict[int, streams.SeriesName],
    starts: list[datetime],
    origin: datetime,
    parts: compose.Plan,
    layout: str,
) -> tuple[AsyncIterator[list[streams.Row]], Callable[[], Awaitable[None]]]:
    """Run the composed query on a server-side cursor, in the transaction the caller began, and
    fetch its first chunk now (so that a database error is still an HTTP error); the rest is
    fetched as the answer is sent. Returns the chunks and the coroutine that closes the cursor
    and ends the transaction."""
    if not names:
        return _no_chunks(), conn.rollback
    ids = list(names)
    query = compose.composed_query(
        spec, wanted, parts, order="bucket" if layout == "wide" else "series"
    )
    params = {"ids": ids, "starts": starts, "origin": origin, **compose.plan_params(parts)}
    # A server-side cursor lives in a transaction; the connection is the request's, returned
    # to the pool after the answer is sent (or the client went away) and `close` ran.
    cur = conn.cursor("livelab_aggregates")
    try:
        await cur.execute(query, params)
        first = await cur.fetchmany(streams.CHUNK_ROWS)
    except BaseException:
        await cur.close()
        await conn.rollback()
        raise

    async def close() -> None:
        try:
            await cur.close()
            await conn.rollback()
        except psycopg.Error:
            pass  # a broken connection: the pool discards it

    return streams.fetch_chunks(cur, first), close


async def _no_chunks() -> AsyncIterator[list[streams.Row]]:
    return
    yield
