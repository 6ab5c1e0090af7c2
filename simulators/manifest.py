"""The run manifest: what a simulator run sent, so `livelab-sim audit` can check it was stored.

A run (backfill, live, replay, load) writes one JSON file with ``--manifest FILE``. Per lab it
holds the number of distinct readings each series should now have in the database (what was
sent, minus what faults dropped or corrupted, duplicates counted once), the time range those
readings lie in, how many rejections the lab should have gained, and what faults were
injected. The audit asks the API for the same figures and compares.

    {"version": 1, "mode": "backfill", "scenario": "oceanhamnen", "seed": 22,
     "started_at": "...Z", "finished_at": "...Z", "complete": true,
     "messages": 1440, "readings": 5760,
     "faults": {"duplicate": 14, "drop": 3, ...},
     "labs": {"oceanhamnen": {"start": "...Z", "end": "...Z", "open_end": false,
                               "rejections": 7,
                               "series": {"aq-01/no2": 1440, ...}}}}

`start`/`end` are the half-open range [start, end) that holds every expected reading. With
``open_end`` (form 1 messages: ingest stamps them with its receive time, which the simulator
cannot know) the audit counts up to the moment it runs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.times import format_rfc3339, parse_rfc3339

VERSION = 1
_MS = timedelta(milliseconds=1)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically (a temporary file renamed), so a reader never
    sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


@dataclass
class LabManifest:
    """What one lab of the run should hold: readings per series, rejections, time range."""

    series: Counter[tuple[str, str]] = field(default_factory=Counter)  # (device, sensor)
    rejections: int = 0
    start: datetime | None = None  # earliest expected reading time
    last: datetime | None = None  # latest expected reading time (end = last + 1 ms)
    open_end: bool = False

    def add(self, device: str, sensor: str, time: datetime, n: int = 1) -> None:
        """Expect `n` more distinct readings of (device, sensor), the latest at `time`."""
        self.series[(device, sensor)] += n
        self.widen(time)

    def widen(self, time: datetime) -> None:
        if self.start is None or time < self.start:
            self.start = time
        if self.last is None or time > self.last:
            self.last = time

    @property
    def end(self) -> datetime | None:
        """Exclusive end of the range: 1 ms after the last expected reading."""
        return None if self.last is None else self.last + _MS

    @property
    def readings(self) -> int:
        return sum(self.series.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "start": None if self.start is None else format_rfc3339(self.start),
            "end": None if self.end is None else format_rfc3339(self.end),
            "open_end": self.open_end,
            "rejections": self.rejections,
            "readings": self.readings,
            "series": {f"{d}/{s}": n for (d, s), n in sorted(self.series.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LabManifest:
        lab = cls(rejections=int(obj.get("rejections", 0)), open_end=bool(obj.get("open_end")))
        for key, n in obj.get("series", {}).items():
            device, _, sensor = key.partition("/")
            lab.series[(device, sensor)] = int(n)
        if obj.get("start"):
            lab.start = parse_rfc3339(obj["start"])
        if obj.get("end"):
            lab.last = parse_rfc3339(obj["end"]) - _MS
        return lab


@dataclass
class Manifest:
    """Everything a run sent, per lab; `save` / `load` as JSON."""

    mode: str
    scenario: str = ""
    seed: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    complete: bool = False  # every message published and (QoS 1) acknowledged
    messages: int = 0  # MQTT messages published, duplicates and malformed ones included
    readings: int = 0  # readings in those messages, duplicates included
    faults: Counter[str] = field(default_factory=Counter)
    labs: dict[str, LabManifest] = field(default_factory=dict)

    def lab(self, name: str) -> LabManifest:
        if name not in self.labs:
            self.labs[name] = LabManifest()
        return self.labs[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "mode": self.mode,
            "scenario": self.scenario,
            "seed": self.seed,
            "started_at": None if self.started_at is None else format_rfc3339(self.started_at),
            "finished_at": None if self.finished_at is None else format_rfc3339(self.finished_at),
            "complete": self.complete,
            "messages": self.messages,
            "readings": self.readings,
            "faults": dict(sorted(self.faults.items())),
            "labs": {name: lab.to_json() for name, lab in sorted(self.labs.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        if obj.get("version") != VERSION:
            raise ValueError(f"unsupported manifest version {obj.get('version')!r}")

        def when(key: str) -> datetime | None:
            return parse_rfc3339(obj[key]) if obj.get(key) else None

        return cls(
            mode=str(obj["mode"]),
            scenario=str(obj.get("scenario", "")),
            seed=obj.get("seed"),
            started_at=when("started_at"),
            finished_at=when("finished_at"),
            complete=bool(obj.get("complete")),
            messages=int(obj.get("messages", 0)),
            readings=int(obj.get("readings", 0)),
            faults=Counter({k: int(v) for k, v in obj.get("faults", {}).items()}),
            labs={k: LabManifest.from_json(v) for k, v in obj.get("labs", {}).items()},
        )

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read a manifest; ValueError with the file name when it is not one."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_json(obj)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a livelab-sim manifest ({exc})") from exc
