"""Replay a CSV file of readings (the ``--record`` format: ``lab,device,sensor,time,value``;
``--lab`` supplies or replaces the lab; other columns are ignored). Readings of a device at
one instant travel in one message, in time order; a repeated (lab, device, sensor, time) is
sent once, with its first value. Faults apply, except bursts (they need a sensor model).
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from datetime import timedelta
from pathlib import Path

from schemas.names import describe_bad_name, is_device, is_lab, is_sensor
from schemas.telemetry import epoch_ms
from schemas.times import from_epoch_ms, parse_rfc3339
from simulators.faults import Faults
from simulators.models import DEFAULT_SEED, Reading
from simulators.options import RunOptions
from simulators.scenario import Device, LabSpec
from simulators.stream import Stream

REQUIRED = ("device", "sensor", "time", "value")
DEFAULT_INTERVAL = timedelta(seconds=60)
Row = tuple[str, str, str, int, float | int]  # (lab, device, sensor, epoch ms, value)


class ReplayError(ValueError):
    """The file cannot be replayed; the message names the file, the line and the problem."""


def _row(line: dict[str, str], lab: str | None) -> Row:
    """One CSV line as a `Row`; ValueError saying what is wrong with it."""
    lab = lab or line["lab"]
    device, sensor, time, value = (line[c] for c in REQUIRED)
    for kind, name, ok in (
        ("lab", lab, is_lab),
        ("device", device, is_device),
        ("sensor", sensor, is_sensor),
    ):
        if not ok(name):
            raise ValueError(describe_bad_name(kind, name))
    try:
        ms = epoch_ms(parse_rfc3339(time))
    except ValueError:
        raise ValueError("time is not RFC 3339 with an offset") from None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError("value is not a finite number")
    whole = number.is_integer() and abs(number) < 2**53  # 31, not 31.0, as the device sent it
    return lab, device, sensor, ms, int(number) if whole else number


def read_readings(path: str | Path, lab: str | None = None) -> tuple[list[Row], int]:
    """The file's readings sorted by (time, lab, device), each key once; and the repeats."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED if c not in columns]
            if lab is None and "lab" not in columns:
                missing.insert(0, "lab (or give --lab)")
            if missing:
                raise ReplayError(
                    f"{path}: missing column(s) {', '.join(missing)}; the header has "
                    f"{', '.join(columns) or 'nothing'} (expected lab,device,sensor,time,value)"
                )
            rows = []
            for line in reader:
                try:
                    rows.append(_row(line, lab))
                except ValueError as exc:
                    shown = ",".join(line.get(c) or "" for c in ("lab", *REQUIRED))
                    raise ReplayError(f"{path}, line {reader.line_num}: {exc} ({shown})") from None
    except FileNotFoundError:
        raise ReplayError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReplayError(f"{path}: cannot read it as CSV: {exc}") from None
    if not rows:
        raise ReplayError(f"{path}: no readings after the header")
    rows.sort(key=lambda r: (r[3], r[0], r[1]))  # stable: the first of a repeat stays first
    seen: set[tuple[str, str, str, int]] = set()
    unique = [r for r in rows if r[:4] not in seen and not seen.add(r[:4])]  # type: ignore[func-returns-value]
    return unique, len(rows) - len(unique)


def replay_stream(rows: list[Row], options: RunOptions) -> Stream:
    """A `Stream` of the rows: one sample per (lab, device, instant), each device on its
    typical interval (the median step between its readings, else 60 s) for the faults; the
    options' seed, form (2), batch (10), qos (1), faults and ts_format apply."""
    o = options
    samples = [
        (ms, lab, device, tuple(Reading(*r[:3], from_epoch_ms(ms), r[4]) for r in group))
        for (ms, lab, device), group in itertools.groupby(rows, key=lambda r: (r[3], r[0], r[1]))
    ]
    times: dict[str, dict[str, set[int]]] = {}
    for ms, lab, device, _ in samples:
        times.setdefault(lab, {}).setdefault(device, set()).add(ms)
    qos, faults = 1 if o.qos is None else o.qos, Faults().with_rates(**o.faults)
    labs = []
    for lab, devices in times.items():
        specs = []
        for device, instants in devices.items():
            steps = [b - a for a, b in itertools.pairwise(sorted(instants))]
            median = statistics.median(steps) if steps else 0
            interval = timedelta(milliseconds=median) if median >= 1 else DEFAULT_INTERVAL
            form, batch = o.form or 2, o.batch or 10
            specs.append(Device(device, "replay", "", (), interval, form, qos, batch))
        labs.append(LabSpec(lab, "replayed from a file", tuple(specs), faults))
    seed = DEFAULT_SEED if o.seed is None else o.seed
    start = from_epoch_ms(rows[0][3])
    return Stream(
        labs, seed=seed, start=start, end=None, ts_format=o.ts_format, stagger=False,
        samples=samples,
    )  # fmt: skip
