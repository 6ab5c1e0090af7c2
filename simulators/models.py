"""Sensor models: a value for any (seed, device, sensor, time), with no state in between, so
the same seed replays the same readings whatever the order, range or interval. Randomness
is a stable hash (BLAKE2b) of those parts; `white` noise per reading, `smooth` noise (knots
every `period` joined smoothly) for weather-like drift; daily and weekly profiles follow
Europe/Stockholm wall time, DST included.
"""

from __future__ import annotations

import hashlib
import math
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from statistics import NormalDist
from typing import NamedTuple
from zoneinfo import ZoneInfo

DEFAULT_SEED = 22  # the seed of runs and scenarios that name none
LOCAL_TZ = ZoneInfo("Europe/Stockholm")
_NORMAL = NormalDist()
_TWO_PI = 2 * math.pi


class Reading(NamedTuple):
    """One reading: (lab, device, sensor, time, value), as CONTRACT.md defines it."""

    lab: str
    device: str
    sensor: str
    time: datetime
    value: float | int


class Series(NamedTuple):
    """What a model's randomness is keyed on (the lab is left out on purpose: the same
    seed gives the same readings under any lab name, e.g. a test's unique lab)."""

    seed: int
    device: str
    sensor: str


def uniform(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts` (stable across processes and Python versions)."""
    key = "\x1f".join(str(p) for p in parts).encode()
    (n,) = struct.unpack(">Q", hashlib.blake2b(key, digest_size=8).digest())
    return n / 2**64


def white(series: Series, t: float, sigma: float, tag: str = "w") -> float:
    """Independent normal noise with standard deviation `sigma` for the reading at `t`."""
    u = uniform(*series, tag, round(t * 1000))
    return sigma * _NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))


@lru_cache(maxsize=65_536)
def _knot(series: Series, tag: str, period: float, index: int) -> float:
    return 2 * uniform(*series, tag, period, index) - 1


def smooth(series: Series, t: float, period: float, amplitude: float, tag: str = "s") -> float:
    """Smooth noise in [-amplitude, amplitude]: knots every `period` s, eased in between."""
    x = t / period
    i = math.floor(x)
    f = x - i
    f = f * f * (3 - 2 * f)  # smoothstep: continuous slope at the knots
    a, b = _knot(series, tag, period, i), _knot(series, tag, period, i + 1)
    return amplitude * (a + (b - a) * f)


def local_hour(t: datetime) -> tuple[float, int]:
    """(hour of day as a float, ISO weekday 1-7) in the lab's local time."""
    local = t.astimezone(LOCAL_TZ)
    return local.hour + local.minute / 60 + local.second / 3600, local.isoweekday()


def bump(hour: float, centre: float, width: float) -> float:
    """A Gaussian bump (peak 1) around `centre` hours with standard deviation `width`."""
    return math.exp(-0.5 * ((hour - centre) / width) ** 2)


def traffic(t: datetime) -> float:
    """Road traffic, 0..~1: weekday rush hours at 08:00 and 16:30, a flat weekend midday."""
    hour, weekday = local_hour(t)
    if weekday <= 5:
        rush = 0.9 * bump(hour, 8.0, 1.0) + 0.8 * bump(hour, 16.5, 1.3)
        return 0.08 + rush + 0.25 * bump(hour, 12.5, 2.5)
    return 0.08 + 0.35 * bump(hour, 13.0, 3.0)


def seasonal_temperature(t: datetime) -> float:
    """Helsingborg's climate: about 0 °C in late January, 18 °C in late July."""
    tt = t.timetuple()
    day = tt.tm_yday - 1 + (tt.tm_hour + tt.tm_min / 60) / 24
    return 8.8 - 9.0 * math.cos(_TWO_PI * (day - 20) / 365.25)


@dataclass(frozen=True)
class SensorModel(ABC):
    """A sensor of a device: its name, unit, rounding, and its value at any time."""

    name: str
    unit: str
    decimals: int = 1

    @abstractmethod
    def raw(self, series: Series, t: datetime, ts: float) -> float:
        """The unrounded value at `t` (`ts` is the same instant in epoch seconds)."""

    def value(self, seed: int, device: str, t: datetime) -> float | int:
        v = self.raw(Series(seed, device, self.name), t, t.timestamp())
        return round(v) if self.decimals <= 0 else round(v, self.decimals)


@dataclass(frozen=True)
class Temperature(SensorModel):
    """Air temperature, °C: season + diurnal cycle (peak 15:00) + weather drift + noise."""

    unit: str = "Cel"

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        hour, _ = local_hour(t)
        diurnal = 3.0 * math.cos(_TWO_PI * (hour - 15.0) / 24)
        weather = smooth(series._replace(device="weather"), ts, 6 * 3600, 4.0)
        site = smooth(series, ts, 3600, 0.4)
        return seasonal_temperature(t) + diurnal + weather + site + white(series, ts, 0.1)


@dataclass(frozen=True)
class Humidity(SensorModel):
    """Relative humidity, %: high at night, low in the afternoon, clamped to 15..100."""

    unit: str = "%RH"

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        hour, _ = local_hour(t)
        diurnal = 12.0 * math.cos(_TWO_PI * (hour - 4.0) / 24)
        weather = smooth(series._replace(device="weather"), ts, 6 * 3600, 12.0, tag="h")
        v = 74.0 + diurnal + weather + white(series, ts, 0.8)
        return min(100.0, max(15.0, v))


@dataclass(frozen=True)
class NO2(SensorModel):
    """Nitrogen dioxide, µg/m³: background + traffic (weekday rush-hour peaks) per site."""

    unit: str = "ug/m3"

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        site = 0.7 + 0.6 * uniform(*series, "site")  # how close the station is to the road
        background = 8.0 + smooth(series._replace(device="weather"), ts, 8 * 3600, 4.0, "n")
        road = 42.0 * site * traffic(t) * (1 + smooth(series, ts, 1800, 0.25))
        return max(0.5, background + road + white(series, ts, 1.2))


@dataclass(frozen=True)
class PM25(SensorModel):
    """Fine particles PM2.5, µg/m³: slow regional episodes + a little traffic."""

    unit: str = "ug/m3"

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        regional = 6.0 + smooth(series._replace(device="weather"), ts, 12 * 3600, 4.0, "p")
        return max(0.5, regional + 5.0 * traffic(t) + white(series, ts, 0.6))


@dataclass(frozen=True)
class SoundLevel(SensorModel):
    """Equivalent sound level LAeq, dB(A): quiet nights, busy days, louder with traffic."""

    unit: str = "dB(A)"

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        hour, _ = local_hour(t)
        awake, asleep = (1.0 / (1 + math.exp(-(hour - h) * 1.5)) for h in (6.5, 22.5))
        activity = awake - asleep  # from 06:30 to 22:30
        site = 4.0 * (uniform(*series, "site") - 0.5)
        v = 41.0 + site + 11.0 * activity + 10.0 * traffic(t) + smooth(series, ts, 900, 2.0)
        return min(110.0, max(25.0, v + white(series, ts, 1.5)))


@dataclass(frozen=True)
class SeaLevel(SensorModel):
    """Sea level against the mean, cm: a small M2 tide (12.42 h) + wind set-up + waves."""

    unit: str = "cm"
    tide_cm: float = 9.0

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        tide = self.tide_cm * math.sin(_TWO_PI * ts / (12.4206 * 3600))
        wind = smooth(series._replace(device="weather"), ts, 18 * 3600, 25.0, "sea")
        return tide + wind + white(series, ts, 0.7)


@dataclass(frozen=True)
class EnergyCounter(SensorModel):
    """Imported energy, kWh: a meter reading that never decreases.

    The power is a sum of positive-biased sinusoids (daily, weekly, slow drift) whose
    integral has a closed form, so the counter is known at any instant without replaying
    the history, and its slope is positive everywhere (base > sum of amplitudes).
    """

    unit: str = "kWh"
    decimals: int = 2
    base_kw: float = 18.0

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        offset = 120_000.0 + 50_000.0 * uniform(*series, "start")
        phase = _TWO_PI * uniform(*series, "phase")
        # The meter was installed on 2020-01-01 (h0); earlier times read its start value.
        h0 = 438_288.0
        return offset + max(0.0, self._energy_at(ts / 3600, phase) - self._energy_at(h0, phase))

    def _energy_at(self, h: float, phase: float) -> float:
        """kWh used from the epoch to hour `h`: the integral of the power curve."""
        energy = self.base_kw * h
        for amplitude, period_h, ph in ((8.0, 24.0, 0.0), (3.0, 168.0, phase), (2.5, 97.0, 2.0)):
            w = _TWO_PI / period_h
            energy += amplitude * (math.cos(ph) - math.cos(w * h + ph)) / w
        return energy


@dataclass(frozen=True)
class Occupancy(SensorModel):
    """Occupied parking places (an integer count of `capacity`)."""

    unit: str = "count"
    decimals: int = 0
    capacity: int = 48

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        hour, weekday = local_hour(t)
        if weekday <= 5:
            share = 0.25 + 0.6 * bump(hour, 11.5, 3.5) + 0.15 * bump(hour, 19.0, 2.0)
        else:
            share = 0.2 + 0.55 * bump(hour, 14.0, 3.0)
        share += smooth(series, ts, 1200, 0.08)
        v = self.capacity * share + white(series, ts, 1.0)
        return min(float(self.capacity), max(0.0, v))


@dataclass(frozen=True)
class Battery(SensorModel):
    """Battery voltage, V: a slow discharge from 4.15 V, recharged every `cycle_days`."""

    name: str = "battery_v"
    unit: str = "V"
    decimals: int = 2
    cycle_days: float = 21.0

    def raw(self, series: Series, t: datetime, ts: float) -> float:
        cycle = self.cycle_days * 86_400
        phase = (ts / cycle + uniform(*series, "phase")) % 1.0
        v = 4.15 - 0.55 * phase - 0.05 * phase**4
        return v + smooth(series, ts, 3 * 3600, 0.01) + white(series, ts, 0.004)


#: The models a scenario names, by the name it uses.
MODELS: dict[str, type[SensorModel]] = {
    "temperature": Temperature, "humidity": Humidity, "no2": NO2, "pm25": PM25,
    "sound_level": SoundLevel, "sea_level": SeaLevel, "energy_counter": EnergyCounter,
    "occupancy": Occupancy, "battery": Battery,
}  # fmt: skip
