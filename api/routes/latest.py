"""`GET /v1/labs/{lab}/latest`: the newest reading of every series."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import Conn, Lab
from api.models import ReadingPage
from api.openapi import LAB_RESPONSES, V1_RESPONSES
from api.params import SERIES_FILTER, DeviceFilter, SensorFilter, parse_filters
from schemas.times import format_rfc3339

router = APIRouter(prefix="/v1", tags=["readings"], responses=V1_RESPONSES)


@router.get(
    "/labs/{lab}/latest",
    response_model=ReadingPage,
    responses=LAB_RESPONSES,
)
async def latest(
    lab: Lab, conn: Conn, device: DeviceFilter = None, sensor: SensorFilter = None
) -> Response:
    """The newest reading of every series of the lab (series without readings are absent)."""
    devices, sensors = parse_filters(device, sensor)
    cur = await conn.execute(
        "SELECT s.device, s.sensor, r.time, r.value FROM series s CROSS JOIN LATERAL "
        "(SELECT time, value FROM readings WHERE series_id = s.id ORDER BY time DESC LIMIT 1) r "
        f'WHERE {SERIES_FILTER} ORDER BY s.device COLLATE "C", s.sensor COLLATE "C"',
        {"lab": lab, "devices": devices, "sensors": sensors},
    )
    # Straight to JSON bytes (orjson): this is the endpoint dashboards poll.
    data = [
        {"device": row[0], "sensor": row[1], "time": format_rfc3339(row[2]), "value": row[3]}
        for row in await cur.fetchall()
    ]
    return Response(orjson.dumps({"data": data, "next": None}), media_type="application/json")
