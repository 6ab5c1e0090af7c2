"""The simulated readings: deterministic, plausible, and shaped like a city."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from simulators.models import LOCAL_TZ
from tests.simulators.reference import OCEANHAMNEN, count_steps, generate, time_grid

START = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
WEEK = START + timedelta(days=7)


def test_same_seed_same_readings_different_seed_different() -> None:
    a = list(generate("lab", START, START + timedelta(hours=2), 300, seed=7))
    b = list(generate("lab", START, START + timedelta(hours=2), 300, seed=7))
    c = list(generate("lab", START, START + timedelta(hours=2), 300, seed=8))
    assert a == b
    assert len(a) == len(c) == 24 * sum(len(d.sensors) for d in OCEANHAMNEN.devices)
    assert [r[:4] for r in a] == [r[:4] for r in c]
    differ = sum(x.value != y.value for x, y in zip(a, c, strict=True))
    assert differ > 0.9 * len(a)


def test_a_reading_depends_only_on_seed_series_and_time() -> None:
    """Not on the range, interval, subset or lab name asked for."""
    t = START + timedelta(hours=7, minutes=30)
    wide = {
        (r.device, r.sensor): r.value
        for r in generate("one", START, START + timedelta(hours=9), timedelta(minutes=10))
        if r.time == t
    }
    narrow = {
        (r.device, r.sensor): r.value
        for r in generate("two", t, t + timedelta(seconds=1), 1, devices=["aq-02", "sea-01"])
    }
    assert narrow
    assert all(wide[key] == value for key, value in narrow.items())


def test_time_grid_is_aligned_half_open_and_counted() -> None:
    start = datetime(2026, 6, 1, 0, 0, 20, tzinfo=UTC)
    end = datetime(2026, 6, 1, 0, 3, 0, tzinfo=UTC)
    grid = list(time_grid(start, end, 60))
    assert grid == [start.replace(second=0) + timedelta(minutes=m) for m in (1, 2)]
    assert count_steps(start, end, 60) == 2
    assert count_steps(end, end, 60) == 0
    with pytest.raises(ValueError, match="naive"):
        list(time_grid(datetime(2026, 6, 1), end, 60))
    with pytest.raises(ValueError, match="1 ms"):
        list(time_grid(start, end, 0))


def test_unknown_device_or_sensor_is_an_error() -> None:
    with pytest.raises(ValueError, match="aq-99"):
        list(generate("lab", START, WEEK, 60, devices=["aq-99"]))
    with pytest.raises(ValueError, match="co2"):
        list(generate("lab", START, WEEK, 60, sensors=["co2"]))


@pytest.fixture(scope="module")
def week() -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    """A simulated week (Monday to Sunday) at 10 minutes, per series."""
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    for r in generate("lab", START, WEEK, timedelta(minutes=10), seed=22):
        series[r.device, r.sensor].append((r.time, r.value))
    return series


PLAUSIBLE = {
    "no2": (0, 200),
    "pm25": (0, 80),
    "temperature": (-30, 40),
    "humidity": (10, 100),
    "laeq": (25, 110),
    "level": (-100, 150),
    "import_kwh": (100_000, 5_000_000),
    "occupied": (0, 48),
    "battery_v": (3.3, 4.25),
}


def test_values_are_plausible_and_rounded(
    week: dict[tuple[str, str], list[tuple[datetime, float]]],
) -> None:
    assert {sensor for _, sensor in week} == set(PLAUSIBLE)
    for (device, sensor), points in week.items():
        low, high = PLAUSIBLE[sensor]
        values = [v for _, v in points]
        assert low <= min(values) and max(values) <= high, (device, sensor)
        assert len(set(values)) > 5, f"{device}/{sensor} barely varies"
        if sensor == "occupied":
            assert all(isinstance(v, int) for v in values)
        else:
            decimals = 2 if sensor in ("import_kwh", "battery_v") else 1
            assert all(round(v, decimals) == v for v in values), (device, sensor)


def test_energy_counter_never_decreases(
    week: dict[tuple[str, str], list[tuple[datetime, float]]],
) -> None:
    for seed in (1, 22, 333):
        values = [
            r.value
            for r in generate("lab", START, START + timedelta(days=2), 60, seed, ["energy-01"])
        ]
        assert all(b >= a for a, b in itertools.pairwise(values)), seed
        assert values[-1] - values[0] > 24 * 2 * 5  # at least 5 kW on average
    weekly = [v for _, v in week["energy-01", "import_kwh"]]
    assert all(b >= a for a, b in itertools.pairwise(weekly))


def test_no2_weekday_rush_hours_exceed_nights(
    week: dict[tuple[str, str], list[tuple[datetime, float]]],
) -> None:
    for device in ("aq-01", "aq-02", "aq-03"):
        rush: list[float] = []
        night: list[float] = []
        for t, v in week[device, "no2"]:
            local = t.astimezone(LOCAL_TZ)
            if local.isoweekday() <= 5 and (7 <= local.hour < 9 or 16 <= local.hour < 18):
                rush.append(v)
            elif 1 <= local.hour < 4:
                night.append(v)
        assert statistics.mean(rush) > 1.5 * statistics.mean(night), device


def test_temperature_has_a_diurnal_cycle(
    week: dict[tuple[str, str], list[tuple[datetime, float]]],
) -> None:
    afternoon: list[float] = []
    early: list[float] = []
    for t, v in week["aq-01", "temperature"]:
        hour = t.astimezone(LOCAL_TZ).hour
        (afternoon if 13 <= hour < 17 else early if 3 <= hour < 6 else []).append(v)
    assert statistics.mean(afternoon) > statistics.mean(early) + 2


def test_sea_level_has_a_tide_of_about_12_4_hours() -> None:
    # Correlate with a 12.42 h sinusoid over 10 days: the tide must show through the noise.
    points = [
        (r.time.timestamp(), r.value)
        for r in generate("lab", START, START + timedelta(days=10), 600, devices=["sea-01"])
        if r.sensor == "level"
    ]
    period = 12.4206 * 3600
    amp = (
        2
        / len(points)
        * abs(
            sum(
                v * complex(math.cos(2 * math.pi * t / period), math.sin(2 * math.pi * t / period))
                for t, v in points
            )
        )
    )
    assert 5 < amp < 15
