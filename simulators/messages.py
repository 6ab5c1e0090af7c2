"""A device's readings as the payloads of CONTRACT.md (built with `schemas.telemetry`): form 1
(values only), form 2 (one instant), form 3 (an array of form 2 objects, filled by `Batch`
within `MAX_READINGS_PER_MESSAGE` and `MAX_PAYLOAD_BYTES`) and SenML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from schemas.telemetry import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    TsFormat,
    encode,
    epoch_ms,
    now_values,
    timed_values,
)
from simulators.models import Reading


def instant(
    readings: Sequence[Reading], form: Literal[1, 2], ts_format: TsFormat = "rfc3339"
) -> bytes:
    """One instant of one device as a form 1 or form 2 payload."""
    values = {r.sensor: r.value for r in readings}
    if form == 1:
        return encode(now_values(values))
    return encode(timed_values(readings[0].time, values, ts_format=ts_format))


def senml(readings: Sequence[Reading], units: Mapping[str, str]) -> bytes:
    """One instant of one device as a SenML pack (the unit where the sensor has one)."""
    records: list[dict[str, Any]] = []
    for r in readings:
        record: dict[str, Any] = {"n": r.sensor, "v": r.value}
        if r.sensor in units:
            record["u"] = units[r.sensor]
        records.append(record)
    records[0] = {"bt": epoch_ms(readings[0].time) / 1000, **records[0]}
    return encode(records)


class Batch:
    """A form 3 message being filled: form 2 objects, one per instant."""

    __slots__ = ("instants", "parts", "readings", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.readings: list[Reading] = []
        self.instants = 0
        self.size = 2  # the brackets

    def __bool__(self) -> bool:
        return bool(self.parts)

    def fits(self, part: bytes, readings: int) -> bool:
        """Whether one more instant keeps the message within the contract's limits."""
        return not self.parts or (
            len(self.readings) + readings <= MAX_READINGS_PER_MESSAGE
            and self.size + 1 + len(part) <= MAX_PAYLOAD_BYTES
        )

    def add(self, part: bytes, readings: Sequence[Reading]) -> None:
        self.size += len(part) + (1 if self.parts else 0)
        self.parts.append(part)
        self.readings.extend(readings)
        self.instants += 1

    def take(self) -> tuple[bytes, tuple[Reading, ...]]:
        """The payload and its readings; the batch starts empty again."""
        payload = b"[" + b",".join(self.parts) + b"]"
        readings = tuple(self.readings)
        self.parts, self.readings, self.instants, self.size = [], [], 0, 2
        return payload, readings
