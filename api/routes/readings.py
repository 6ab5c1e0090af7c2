"""`GET /v1/labs/{lab}/readings`: raw readings in ascending time, cursor-paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import cursors
from api.deps import Conn, Lab
from api.models import ReadingPage
from api.openapi import LAB_RESPONSES, V1_RESPONSES
from api.params import (
    SERIES_FILTER,
    DeviceFilter,
    EndParam,
    SensorFilter,
    StartParam,
    parse_filters,
    parse_range,
)
from schemas.times import format_rfc3339

router = APIRouter(prefix="/v1", tags=["readings"], responses=V1_RESPONSES)


def page_query(after: bool) -> str:
    """One page of readings; parameters ids, start, end, limit (and after_time, after_id).

    After a cursor, the scan starts at the cursor's time: ``time >= after_time`` bounds the
    index scans and lets TimescaleDB leave out every chunk before it, so the last page of a
    long range costs what the first does. (The row comparison alone bounds neither.)
    """
    where = "WHERE series_id = ANY(%(ids)s) AND time >= %(start)s AND time < %(end)s "
    if after:
        where += (
            "AND time >= %(after_time)s AND (time, series_id) > (%(after_time)s, %(after_id)s) "
        )
    return (
        f"SELECT time, series_id, value FROM readings {where}"
        "ORDER BY time, series_id LIMIT %(limit)s"
    )


@router.get(
    "/labs/{lab}/readings",
    response_model=ReadingPage,
    responses=LAB_RESPONSES,
)
async def readings(
    lab: Lab,
    conn: Conn,
    start: StartParam,
    end: EndParam,
    device: DeviceFilter = None,
    sensor: SensorFilter = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="Readings per page (1-10000).", examples=[1000])
    ] = 1000,
    cursor: Annotated[
        str | None, Query(description="The `next` value of the previous page.", max_length=200)
    ] = None,
) -> JSONResponse:
    """Raw readings in [start, end), ascending time (ties by series); follow `next` for more."""
    start_dt, end_dt = parse_range(start, end)
    devices, sensors = parse_filters(device, sensor)
    after: tuple[datetime, int] | None = None
    if cursor is not None:
        micros, series_id = cursors.decode(cursor, int, int)
        after = (cursors.from_micros(micros), cursors.check_int(series_id, 2**31 - 1))
    cur = await conn.execute(
        f"SELECT id, device, sensor FROM series WHERE {SERIES_FILTER}",
        {"lab": lab, "devices": devices, "sensors": sensors},
    )
    names = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    rows: list[tuple[datetime, int, float]] = []
    if names:
        params: dict[str, object] = {
            "ids": list(names),
            "start": start_dt,
            "end": end_dt,
            "limit": limit + 1,
        }
        if after is not None:
            params.update(after_time=after[0], after_id=after[1])
        cur = await conn.execute(page_query(after is not None), params)
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last_time, last_id, _ = rows[-1]
        next_cursor = cursors.encode(cursors.to_micros(last_time), last_id)
    data = [
        {
            "device": names[sid][0],
            "sensor": names[sid][1],
            "time": format_rfc3339(t),
            "value": value,
        }
        for t, sid, value in rows
    ]
    return JSONResponse({"data": data, "next": next_cursor})
