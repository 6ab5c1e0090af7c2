"""Fault rates (``[faults]`` of a scenario: each a probability, 0 (off) by default, per reading,
message or device as README's Simulators table says) and the malformed messages."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.names import topic_for
from schemas.telemetry import MAX_PAYLOAD_BYTES, format_ts
from simulators.durations import Duration

MalformedKind: TypeAlias = Literal[
    "json", "empty", "type", "nan", "timestamp", "future", "oversize", "topic", "name", "senml"
]
MALFORMED_KINDS: tuple[MalformedKind, ...] = get_args(MalformedKind)

RATES = ("drop", "duplicate", "out_of_order", "late", "malformed", "clock_skew", "burst", "offline")

#: The ingest worker's default limit on future timestamps (CONTRACT.md: 5 minutes).
INGEST_MAX_FUTURE = timedelta(minutes=5)


class Faults(BaseModel):
    """Fault rates of a lab (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: float = Field(default=0.0, ge=0, le=1)
    duplicate: float = Field(default=0.0, ge=0, le=1)
    out_of_order: float = Field(default=0.0, ge=0, le=1)
    late: float = Field(default=0.0, ge=0, le=1)
    late_by: Duration = timedelta(minutes=15)
    malformed: float = Field(default=0.0, ge=0, le=1)
    malformed_kinds: tuple[MalformedKind, ...] = Field(default=MALFORMED_KINDS, min_length=1)
    clock_skew: float = Field(default=0.0, ge=0, le=1)
    clock_skew_max: Duration = timedelta(seconds=90)
    burst: float = Field(default=0.0, ge=0, le=1)
    burst_size: int = Field(default=10, ge=1, le=1000)
    offline: float = Field(default=0.0, ge=0, le=1)
    offline_for: Duration = timedelta(minutes=30)

    @model_validator(mode="after")
    def _skew_within_ingest_limit(self) -> Faults:
        if self.clock_skew_max >= INGEST_MAX_FUTURE:
            raise ValueError(
                "clock_skew_max must stay under the ingest's 5-minute future limit, or skewed "
                "readings become rejections; use the malformed kind 'future' for those"
            )
        return self

    def rates(self) -> dict[str, float]:
        """The eight rates by name (their settings, such as ``late_by``, left out)."""
        return {name: getattr(self, name) for name in RATES}

    def with_rates(self, **rates: float) -> Faults:
        """A copy with some settings changed, validated (`--fault NAME=VALUE`)."""
        return Faults.model_validate({**self.model_dump(), **rates})


def malformed_message(
    kind: MalformedKind, lab: str, device: str, sensors: tuple[str, ...], time: datetime,
    rng: random.Random,
) -> tuple[str, bytes]:  # fmt: skip
    """A broken (topic, payload) of `kind` for `device`: ingest must reject all of it."""
    topic = topic_for(lab, device)
    sensor = sensors[0] if sensors else "value"
    value = round(rng.uniform(0, 100), 1)
    ts = format_ts(time)
    if kind == "json":
        whole = json.dumps({"ts": ts, "values": {sensor: value}}, separators=(",", ":"))
        return topic, whole[: rng.randrange(1, len(whole) - 1)].encode()
    if kind == "empty":
        return topic, b""
    if kind == "type":
        return topic, json.dumps({"ts": ts, "values": {sensor: f"{value} high"}}).encode()
    if kind == "nan":
        return topic, b'{"%s": NaN}' % sensor.encode()
    if kind == "timestamp":
        return topic, json.dumps({"ts": "1999-12-31T23:59:59Z", "values": {sensor: value}}).encode()
    if kind == "future":  # a clock that jumped ahead: far enough to be in the future for years
        return topic, json.dumps({"ts": "2100-01-01T00:00:00Z", "values": {sensor: value}}).encode()
    if kind == "oversize":
        pad = "x" * (MAX_PAYLOAD_BYTES + 1024)
        return topic, json.dumps({"ts": ts, "values": {sensor: value}, "note": pad}).encode()
    if kind == "topic":
        return f"livelab/{lab}/{device}/xml", json.dumps({sensor: value}).encode()
    if kind == "name":
        return topic, json.dumps({"ts": ts, "values": {f"{sensor} !?": value}}).encode()
    if kind == "senml":
        record = {"bn": f"{device}:", "bt": time.timestamp(), "n": "status", "vs": "ok"}
        return f"livelab/{lab}/{device}/senml", json.dumps([record]).encode()
    raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")
