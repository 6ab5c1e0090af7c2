"""Query parameters shared by several routes, parsed into values or a 400 saying what is wrong."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import HTTPException, Query

from schemas.names import DEVICE_RE, LAB_RE, SENSOR_RE, describe_bad_name, is_device, is_sensor
from schemas.times import parse_rfc3339

# The name rules of `schemas.names` as JSON Schema patterns, for the OpenAPI document. They
# only document: the routes check the values themselves, so that a bad one answers a 400 in
# plain words (or, for `{lab}`, the 404 of a lab the key cannot see).
LAB_PATTERN = f"^{LAB_RE.pattern}$"
DEVICE_PATTERN = f"^{DEVICE_RE.pattern}$"
SENSOR_PATTERN = f"^{SENSOR_RE.pattern}$"

# `json_schema_extra` documents a value's form without making FastAPI validate it: the route
# parses it and says what is wrong (e.g. "start: '...' is not an RFC 3339 timestamp ...").
_DATE_TIME = {"format": "date-time"}

StartParam = Annotated[
    str,
    Query(
        description="Start of the range, inclusive: RFC 3339 with offset.",
        examples=["2026-06-01T00:00:00Z"],
        json_schema_extra=_DATE_TIME,
    ),
]
EndParam = Annotated[
    str,
    Query(
        description="End of the range, exclusive: RFC 3339 with offset; after `start`.",
        examples=["2026-06-02T00:00:00+02:00"],
        json_schema_extra=_DATE_TIME,
    ),
]
DeviceFilter = Annotated[
    list[str] | None,
    Query(
        description="Only these devices (repeat the parameter for several). Default: all. "
        "A name outside the device name rule is a 400.",
        examples=[["station-1"]],
        json_schema_extra={"items": {"type": "string", "pattern": DEVICE_PATTERN}},
    ),
]
SensorFilter = Annotated[
    list[str] | None,
    Query(
        description="Only these sensors (repeat the parameter for several). Default: all. "
        "A name outside the sensor name rule is a 400.",
        examples=[["no2"]],
        json_schema_extra={"items": {"type": "string", "pattern": SENSOR_PATTERN}},
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
