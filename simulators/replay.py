"""Replay a CSV file of readings (``livelab-sim replay FILE.csv``).

The file has a header row and the columns ``device,sensor,time,value`` plus ``lab`` (or
``--lab`` gives it) - the format ``--record`` writes, so a recorded run, or readings exported
from another system, can be sent again. Other columns are ignored. ``time`` is RFC 3339 with
an offset (or ``Z``); it is sent with millisecond precision. Readings of one device at one
instant travel in one message (form 2 by default; form 3 and SenML on request), in time
order, as fast as the broker acknowledges or paced at ``--speed`` times the original pace.

A (lab, device, sensor, time) that appears more than once is sent once (the first value, as
ingest would keep), and the run says how many such rows it skipped. Faults of a scenario
apply as in the other modes, except bursts (they need a sensor model).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from schemas.names import DEVICE_RE, LAB_RE, SENSOR_RE
from schemas.telemetry import TsFormat, from_ms
from simulators.faults import Faults
from simulators.lab import Device, Form, LabSpec
from simulators.models import Reading
from simulators.stream import Stream

log = logging.getLogger(__name__)

REQUIRED = ("device", "sensor", "time", "value")
DEFAULT_INTERVAL = timedelta(seconds=60)


class ReplayError(ValueError):
    """The file cannot be replayed; the message names the file, the row and the problem."""


def read_readings(path: str | Path, lab: str | None = None) -> tuple[pd.DataFrame, int]:
    """The file's readings sorted by (time, lab, device), without repeated keys.

    Returns (frame with columns lab, device, sensor, ms, value; rows skipped as repeats).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ReplayError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReplayError(f"{path}: cannot read it as CSV: {exc}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if lab is None and "lab" not in frame.columns:
        missing.insert(0, "lab (or give --lab)")
    if missing:
        raise ReplayError(
            f"{path}: missing column(s) {', '.join(missing)}; the header has "
            f"{', '.join(frame.columns) or 'nothing'} (expected lab,device,sensor,time,value)"
        )
    if lab is not None:
        frame["lab"] = lab
    frame = frame[["lab", "device", "sensor", "time", "value"]]
    if frame.empty:
        raise ReplayError(f"{path}: no readings after the header")

    def bad(mask: Any, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            row = frame.iloc[i]
            raise ReplayError(
                f"{path}, line {i + 2}: {what} "
                f"({row['lab']},{row['device']},{row['sensor']},{row['time']},{row['value']}); "
                f"{int(mask.sum())} row(s) like it"
            )

    bad(~frame["lab"].str.fullmatch(LAB_RE.pattern), "lab name outside a-z 0-9 _ -")
    bad(~frame["device"].str.fullmatch(DEVICE_RE.pattern), "device name outside a-z 0-9 _ -")
    bad(~frame["sensor"].str.fullmatch(SENSOR_RE.pattern), "sensor name outside the alphabet")
    times = pd.to_datetime(frame["time"], utc=True, format="ISO8601", errors="coerce")
    has_offset = frame["time"].str.contains(r"(?:Z|z|[+-]\d\d:?\d\d)$", regex=True)
    bad(times.isna() | ~has_offset, "time is not RFC 3339 with an offset")
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad(values.isna() | ~np.isfinite(values.to_numpy(dtype=float)), "value is not a finite number")
    out = pd.DataFrame(
        {
            "lab": frame["lab"],
            "device": frame["device"],
            "sensor": frame["sensor"],
            "ms": (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1),
            "value": values,
        }
    )
    out = out.sort_values(["ms", "lab", "device"], kind="stable", ignore_index=True)
    before = len(out)
    out = out.drop_duplicates(["lab", "device", "sensor", "ms"], keep="first", ignore_index=True)
    return out, before - len(out)


def _intervals(frame: pd.DataFrame) -> dict[tuple[str, str], timedelta]:
    """Each device's typical time between readings (the median step), default 60 s."""
    out: dict[tuple[str, str], timedelta] = {}
    for key, ms in frame.groupby(["lab", "device"], sort=False)["ms"]:
        lab, device = str(key[0]), str(key[1])  # type: ignore[index]
        steps = np.diff(np.unique(ms.to_numpy()))
        median = float(np.median(steps)) if len(steps) else 0.0
        out[(lab, device)] = timedelta(milliseconds=median) if median >= 1 else DEFAULT_INTERVAL
    return out


class ReplayStream(Stream):
    """A `Stream` whose samples come from a file's readings instead of sensor models."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        seed: int,
        form: Form = 2,
        qos: int = 1,
        batch: int = 10,
        faults: Faults | None = None,
        ts_format: TsFormat = "rfc3339",
    ) -> None:
        if form == 1:
            raise ValueError("replay sends form 2, 3 or senml: form 1 would lose the times")
        intervals = _intervals(frame)
        labs = []
        for lab in dict.fromkeys(frame["lab"]):
            devices = [
                Device(
                    name=device,
                    kind="replay",
                    description="",
                    sensors=(),
                    interval=intervals[(lab, device)],
                    form=form,
                    qos=qos,
                    batch=batch,
                )
                for (lab_, device) in intervals
                if lab_ == lab
            ]
            labs.append(LabSpec(lab, "replayed from a file", tuple(devices), faults or Faults()))
        first = from_ms(int(frame["ms"].iloc[0]))
        super().__init__(labs, seed=seed, start=first, end=None, ts_format=ts_format, stagger=False)
        self._due.clear()  # samples come from the file
        self._index = {(s.lab, s.device.name): i for i, s in enumerate(self._devices)}
        self._rows = len(frame)
        self._groups = self._iter_groups(frame)
        self._peek = next(self._groups, None)

    def _iter_groups(self, frame: pd.DataFrame) -> Iterator[tuple[int, int, tuple[Reading, ...]]]:
        labs = frame["lab"].to_numpy()
        devices = frame["device"].to_numpy()
        sensors = frame["sensor"].to_numpy()
        ms = frame["ms"].to_numpy()
        values = frame["value"].to_numpy(dtype=float)
        n = len(frame)
        change = np.ones(n, dtype=bool)
        if n > 1:
            change[1:] = (
                (ms[1:] != ms[:-1]) | (labs[1:] != labs[:-1]) | (devices[1:] != devices[:-1])
            )
        starts = [*np.flatnonzero(change).tolist(), n]
        for a, b in itertools.pairwise(starts):
            lab, device, t_ms = str(labs[a]), str(devices[a]), int(ms[a])
            t = from_ms(t_ms)
            readings = tuple(
                Reading(lab, device, str(sensors[k]), t, _number(values[k])) for k in range(a, b)
            )
            yield t_ms, self._index[(lab, device)], readings

    def expected_readings(self) -> int | None:
        return self._rows

    def next_sample_at(self) -> float | None:
        return None if self._peek is None else self._peek[0] / 1000

    def step(self) -> None:
        assert self._peek is not None
        t_ms, i, readings = self._peek
        self._peek = next(self._groups, None)
        self._sample(self._devices[i], t_ms, readings)


def _number(value: float) -> float | int:
    """Whole numbers go out as integers (31, not 31.0), as the device would have sent them."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else float(value)
