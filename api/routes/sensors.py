"""`GET /v1/labs/{lab}/sensors`: the series of a lab."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Conn, Lab
from api.models import SensorPage, SensorPublic
from api.openapi import LAB_RESPONSES, V1_RESPONSES
from api.params import SERIES_FILTER, DeviceFilter, SensorFilter, parse_filters
from schemas.times import format_rfc3339

router = APIRouter(prefix="/v1", tags=["sensors"], responses=V1_RESPONSES)


@router.get(
    "/labs/{lab}/sensors",
    response_model=SensorPage,
    responses=LAB_RESPONSES,
)
async def list_sensors(
    lab: Lab, conn: Conn, device: DeviceFilter = None, sensor: SensorFilter = None
) -> SensorPage:
    """Series of the lab (device, sensor, unit, first/last reading, count), by device, sensor."""
    devices, sensors = parse_filters(device, sensor)
    cur = await conn.execute(
        "SELECT device, sensor, unit, first_time, last_time, reading_count FROM series "
        f'WHERE {SERIES_FILTER} ORDER BY device COLLATE "C", sensor COLLATE "C"',
        {"lab": lab, "devices": devices, "sensors": sensors},
    )
    return SensorPage(
        data=[
            SensorPublic(
                device=row[0],
                sensor=row[1],
                unit=row[2],
                first_reading=format_rfc3339(row[3]) if row[3] else None,
                last_reading=format_rfc3339(row[4]) if row[4] else None,
                reading_count=row[5],
            )
            for row in await cur.fetchall()
        ],
        next=None,
    )
