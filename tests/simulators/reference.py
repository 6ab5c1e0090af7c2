"""The readings a lab should publish, computed without the simulator's `Stream`: what the
tests compare the simulator's output with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from schemas.times import EPOCH
from simulators.models import DEFAULT_SEED, Reading
from simulators.scenario import LabSpec, load_scenario

OCEANHAMNEN: LabSpec = load_scenario("oceanhamnen").labs[0]
_US = timedelta(microseconds=1)


def _grid(start: datetime, end: datetime, interval: timedelta | float) -> tuple[int, int, int]:
    """(first instant, end, step) in microseconds since the epoch."""
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"{name} {t.isoformat()} has no UTC offset (naive datetime)")
    td = interval if isinstance(interval, timedelta) else timedelta(seconds=interval)
    if td < timedelta(milliseconds=1):
        raise ValueError(f"interval {interval!r} is shorter than 1 ms")
    step_us = td // _US
    first = -(-((start - EPOCH) // _US) // step_us) * step_us  # ceil to the grid
    return first, (end - EPOCH) // _US, step_us


def time_grid(start: datetime, end: datetime, interval: timedelta | float) -> Iterator[datetime]:
    """The instants in [start, end) that are whole multiples of `interval` since the epoch."""
    first, end_us, step_us = _grid(start, end, interval)
    for us in range(first, end_us, step_us):
        yield EPOCH + timedelta(microseconds=us)


def count_steps(start: datetime, end: datetime, interval: timedelta | float) -> int:
    """How many instants `time_grid` yields (without iterating)."""
    first, end_us, step_us = _grid(start, end, interval)
    return max(0, -(-(end_us - first) // step_us))


def generate(
    lab: str,
    start: datetime,
    end: datetime,
    interval: timedelta | float = timedelta(seconds=60),
    seed: int = DEFAULT_SEED,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
) -> Iterator[Reading]:
    """Every reading of the Oceanhamnen lab (as `lab`) in [start, end) at `interval`, ordered
    by time, then device and sensor in catalogue order."""
    chosen = OCEANHAMNEN.select(devices, sensors)
    for t in time_grid(start, end, interval):
        for d in chosen.devices:
            yield from (
                Reading(lab, d.name, s.name, t, s.value(seed, d.name, t)) for s in d.sensors
            )
