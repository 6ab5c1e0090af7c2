"""Query parameters shared by several routes, parsed into values or a 400 saying what is wrong."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import HTTPException, Query

from schemas.names import describe_bad_name, is_device, is_sensor
from schemas.times import parse_rfc3339

StartParam = Annotated[
    str,
    Query(
        description="Start of the range, inclusive: RFC 3339 with offset.",
        examples=["2026-06-01T00:00:00Z"],
    ),
]
EndParam = Annotated[
    str,
    Query(
        description="End of the range, exclusive: RFC 3339 with offset; after `start`.",
        examples=["2026-06-02T00:00:00+02:00"],
    ),
]
DeviceFilter = Annotated[
    list[str] | None,
    Query(
        description="Only these devices (repeat the parameter for several). Default: all.",
        examples=[["station-1"]],
    ),
]
SensorFilter = Annotated[
    list[str] | None,
    Query(
        description="Only these sensors (repeat the parameter for several). Default: all.",
        examples=[["no2"]],
    ),
]


def bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def parse_range(start: str, end: str) -> tuple[datetime, datetime]:
    try:
        start_dt = parse_rfc3339(start)
    except ValueError as exc:
        raise bad_request(f"start: {exc}") from None
    try:
        end_dt = parse_rfc3339(end)
    except ValueError as exc:
        raise bad_request(f"end: {exc}") from None
    if end_dt <= start_dt:
        raise bad_request(f"end ({end}) must be after start ({start})")
    return start_dt, end_dt


def parse_filters(
    devices: list[str] | None, sensors: list[str] | None
) -> tuple[list[str] | None, list[str] | None]:
    for device in devices or ():
        if not is_device(device):
            raise bad_request("device filter: " + describe_bad_name("device", device))
    for sensor in sensors or ():
        if not is_sensor(sensor):
            raise bad_request("sensor filter: " + describe_bad_name("sensor", sensor))
    return (devices or None), (sensors or None)


# Series of a lab matching the optional filters; parameters: lab, devices, sensors.
SERIES_FILTER = (
    "lab = %(lab)s AND (%(devices)s::text[] IS NULL OR device = ANY(%(devices)s)) "
    "AND (%(sensors)s::text[] IS NULL OR sensor = ANY(%(sensors)s))"
)
