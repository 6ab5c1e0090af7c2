"""Readings of a simulated lab over a time range: `generate` and its time grid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from schemas.times import EPOCH
from simulators.demo import lab_spec
from simulators.lab import Device, LabSpec
from simulators.models import DEFAULT_SEED, Reading

_US = timedelta(microseconds=1)


def as_interval(interval: timedelta | float) -> timedelta:
    """A positive whole number of milliseconds, from a timedelta or seconds."""
    td = interval if isinstance(interval, timedelta) else timedelta(seconds=interval)
    ms = round(td / timedelta(milliseconds=1))
    if ms < 1:
        raise ValueError(f"interval {interval!r} is shorter than 1 ms")
    return timedelta(milliseconds=ms)


def _check_aware(name: str, t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} {t.isoformat()} has no UTC offset (naive datetime)")


def time_grid(start: datetime, end: datetime, interval: timedelta | float) -> Iterator[datetime]:
    """The instants in [start, end) that are whole multiples of `interval` since the epoch.

    Aligning to the epoch (not to `start`) means two runs over overlapping ranges produce the
    same timestamps, and aggregates line up with bucket boundaries. Times are UTC.
    """
    first, end_us, step_us = _grid(start, end, interval)
    for us in range(first, end_us, step_us):
        yield EPOCH + timedelta(microseconds=us)


def device_readings(lab: str, device: Device, t: datetime, seed: int) -> list[Reading]:
    """Every sensor of `device` at `t`, in the device's sensor order."""
    return [
        Reading(lab, device.name, s.name, t, s.value(seed, device.name, t)) for s in device.sensors
    ]


def generate(
    lab: str,
    start: datetime,
    end: datetime,
    interval: timedelta | float = timedelta(seconds=60),
    seed: int = DEFAULT_SEED,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    spec: LabSpec | None = None,
) -> Iterator[Reading]:
    """Every reading of lab `lab` in [start, end) at `interval` (timedelta or seconds).

    Ordered by time, then device and sensor in catalogue order. The same seed gives the same
    readings; `devices`/`sensors` choose a subset (ValueError for unknown names); `spec`
    overrides the lab's catalogue (default: `lab_spec(lab)`).
    """
    chosen = (spec or lab_spec(lab)).select(devices, sensors)
    for t in time_grid(start, end, interval):
        for device in chosen.devices:
            yield from device_readings(lab, device, t, seed)


def count_steps(start: datetime, end: datetime, interval: timedelta | float) -> int:
    """How many instants `time_grid` yields (without iterating)."""
    first, end_us, step_us = _grid(start, end, interval)
    return max(0, -(-(end_us - first) // step_us))


def _grid(start: datetime, end: datetime, interval: timedelta | float) -> tuple[int, int, int]:
    """(first instant, end, step) in microseconds since the epoch."""
    _check_aware("start", start)
    _check_aware("end", end)
    step_us = as_interval(interval) // _US
    start_us = (start - EPOCH) // _US
    end_us = (end - EPOCH) // _US  # datetimes are whole microseconds: exact
    first = -(-start_us // step_us) * step_us  # ceil to the grid
    return first, end_us, step_us
