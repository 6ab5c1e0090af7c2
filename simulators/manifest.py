"""The run manifest (``--manifest FILE``): per lab, the distinct readings each series should now
have (sent minus what faults dropped or corrupted, duplicates once), the range [start, end)
they lie in and the rejections the lab should have gained; the faults injected. With
``open_end`` (form 1: ingest stamps the receive time) the audit counts up to its own time."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, field_serializer, field_validator

_MS = timedelta(milliseconds=1)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically (a temporary file renamed)."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


class LabManifest(BaseModel):
    """What one lab of the run should hold: readings per series, rejections, time range."""

    start: datetime | None = None  # the earliest expected reading
    end: datetime | None = None  # 1 ms after the latest: the range is [start, end)
    open_end: bool = False
    rejections: int = 0
    series: Counter[tuple[str, str]] = Field(default_factory=Counter)  # (device, sensor): n

    def add(self, device: str, sensor: str, time: datetime, n: int = 1) -> None:
        """Expect `n` more distinct readings of (device, sensor), the latest at `time`."""
        self.series[(device, sensor)] += n
        self.widen(time)

    def widen(self, time: datetime) -> None:
        if self.start is None or time < self.start:
            self.start = time
        if self.end is None or time >= self.end:
            self.end = time + _MS

    @computed_field  # type: ignore[prop-decorator]
    @property
    def readings(self) -> int:
        return sum(self.series.values())

    @field_serializer("series")
    def _series_out(self, series: Counter[tuple[str, str]]) -> dict[str, int]:
        return {f"{d}/{s}": n for (d, s), n in sorted(series.items())}

    @field_validator("series", mode="before")
    @classmethod
    def _series_in(cls, value: Any) -> Any:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return Counter({tuple(k.split("/", 1)): n for k, n in value.items()})
        return value


class Manifest(BaseModel):
    """Everything a run sent, per lab; `save` / `load` as JSON."""

    version: Literal[1] = 1
    mode: str
    scenario: str = ""
    seed: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    complete: bool = False  # every message published and (QoS 1) acknowledged
    messages: int = 0  # MQTT messages published, duplicates and malformed ones included
    readings: int = 0  # readings in those messages, duplicates included
    faults: Counter[str] = Field(default_factory=Counter)
    labs: dict[str, LabManifest] = Field(default_factory=dict)

    def lab(self, name: str) -> LabManifest:
        return self.labs.setdefault(name, LabManifest())

    def save(self, path: str | Path) -> None:
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read a manifest; ValueError with the file name when it is not one."""
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except ValueError as exc:  # a pydantic ValidationError
            raise ValueError(f"{path}: not a livelab-sim manifest ({exc})") from exc
