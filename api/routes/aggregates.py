"""`GET /v1/labs/{lab}/aggregates`: one row per series and time bucket."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from api.buckets import (
    BUCKETS,
    DEFAULT_STATS,
    STATS,
    Stat,
    aggregate_query,
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


@router.get(
    "/labs/{lab}/aggregates",
    response_model=AggregatePage,
    description=DESCRIPTION,
    responses={
        **LAB_RESPONSES,
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "JSON, or CSV with `format=csv`.",
        },
    },
)
async def aggregates(
    lab: Lab,
    conn: Conn,
    settings: SettingsDep,
    start: StartParam,
    end: EndParam,
    bucket: Annotated[
        str,
        Query(
            description=f"Bucket size: {_BUCKET_NAMES}.",
            examples=["1h"],
            # Documented, checked below (so that the 400 names the value and the choices).
            json_schema_extra={"enum": list(BUCKETS)},
        ),
    ] = "1h",
    tz: Annotated[
        str,
        Query(
            description="IANA time zone name (e.g. UTC, Europe/Stockholm) for the buckets and "
            "the offsets in the answer; an unknown name is a 400.",
            examples=["Europe/Stockholm"],
            json_schema_extra={"pattern": f"^{_TZ_RE.pattern}$"},
        ),
    ] = "UTC",
    stats: Annotated[
        list[str] | None,
        Query(
            description="Stats to compute, comma-separated and/or repeated, in the order "
            "wanted: any of avg, min, max, sum, count. Default: avg,min,max,count.",
            examples=[["avg,max"]],
            json_schema_extra={"items": {"type": "string", "pattern": _STATS_PATTERN}},
        ),
    ] = None,
    device: DeviceFilter = None,
    sensor: SensorFilter = None,
    format: Annotated[
        Literal["json", "csv"],
        Query(description="`json` or `csv` (header row + one row per series and bucket)."),
    ] = "json",
    fill: Annotated[
        Literal["null"] | None,
        Query(description="`null`: include buckets without readings, with null stats."),
    ] = None,
) -> Response:
    """Statistics per series and time bucket (avg, min, max, sum, count)."""
    start_dt, end_dt = parse_range(start, end)
    spec = BUCKETS.get(bucket)
    if spec is None:
        shown = bucket if len(bucket) <= 20 else bucket[:17] + "..."
        raise bad_request(f"bucket: {shown!r} is not one of {_BUCKET_NAMES}")
    zone = _parse_tz(tz)
    wanted = _parse_stats(stats)
    devices, sensors = parse_filters(device, sensor)
    n = count_buckets(start_dt, end_dt, spec)
    if n > settings.api_max_buckets:
        raise bad_request(
            f"the range from {start} to {end} spans {n} buckets of {bucket} per series, more "
            f"than the limit of {settings.api_max_buckets}; ask for a shorter range or a "
            "larger bucket"
        )
    try:
        origin = local_midnight(start_dt, zone)
    except (OverflowError, ValueError):
        raise bad_request(f"start: {start!r} is out of the supported range") from None

    cur = await conn.execute(
        f"SELECT id FROM series WHERE {SERIES_FILTER}",
        {"lab": lab, "devices": devices, "sensors": sensors},
    )
    ids = [row[0] for row in await cur.fetchall()]
    if n * len(ids) > settings.api_max_rows:
        raise bad_request(
            f"the request could produce {n * len(ids)} rows ({len(ids)} series x {n} buckets "
            f"of {bucket}), more than the limit of {settings.api_max_rows}; filter by device "
            "or sensor, ask for a shorter range or a larger bucket"
        )
    rows: list[tuple[Any, ...]] = []
    if ids:
        cur = await conn.execute(
            aggregate_query(spec, wanted, fill=fill is not None),
            {"ids": ids, "start": start_dt, "end": end_dt, "tz": tz, "origin": origin},
        )
        rows = await cur.fetchall()

    labels: dict[datetime, str] = {}

    def label(b: datetime) -> str:
        text = labels.get(b)
        if text is None:
            text = labels[b] = format_rfc3339(b.astimezone(zone))
        return text

    columns = ["device", "sensor", "bucket", *wanted]
    if format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [row[0], row[1], label(row[2]), *("" if v is None else v for v in row[3:])]
            )
        return Response(
            content=buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'inline; filename="{lab}-aggregates.csv"'},
        )
    data = [
        dict(zip(columns, (row[0], row[1], label(row[2]), *row[3:]), strict=True)) for row in rows
    ]
    return JSONResponse({"data": data, "next": None})
