"""Readings packed into MQTT messages in the telemetry forms of `schemas.telemetry`.

- form 1: one message per (device, time): ``{"no2": 17.4, ...}``; ingest stamps it with its
  receive time, so only live mode uses it (the reading's time is then the publish time).
- form 2: one message per (device, time): ``{"ts": T, "values": {...}}``.
- form 3: per device, an array of form 2 objects holding up to `batch` readings, and never
  more than `MAX_PAYLOAD_BYTES` (a batch is cut early when its JSON would be larger).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple, TypeAlias

from schemas.names import topic_for
from schemas.telemetry import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    TsFormat,
    encode,
    now_values,
    timed_values,
)
from simulators.models import Reading

Form: TypeAlias = Literal[1, 2, 3]
DEFAULT_BATCH = 1000


class Message(NamedTuple):
    """An MQTT message to publish and the readings it carries."""

    topic: str
    payload: bytes
    readings: tuple[Reading, ...]


def _groups(readings: Iterable[Reading]) -> Iterator[tuple[Reading, ...]]:
    """Runs of readings of the same (lab, device, time), as `generate` yields them."""
    for _, group in itertools.groupby(readings, key=lambda r: (r.lab, r.device, r.time)):
        yield tuple(group)


def pack(
    readings: Iterable[Reading],
    *,
    form: Form = 2,
    ts_format: TsFormat = "rfc3339",
    batch: int = DEFAULT_BATCH,
) -> Iterator[Message]:
    """The messages that carry `readings`, in order (form 3: in order per device)."""
    if form not in (1, 2, 3):
        raise ValueError(f"unknown telemetry form {form!r}; use 1, 2 or 3")
    if not 1 <= batch <= MAX_READINGS_PER_MESSAGE:
        raise ValueError(f"batch must be 1..{MAX_READINGS_PER_MESSAGE} readings, not {batch}")
    if form == 3:
        yield from _pack_batches(readings, ts_format, batch)
        return
    for group in _groups(readings):
        first = group[0]
        values = {r.sensor: r.value for r in group}
        obj = (
            now_values(values)
            if form == 1
            else timed_values(first.time, values, ts_format=ts_format)
        )
        yield Message(topic_for(first.lab, first.device), encode(obj), group)


class _Batch:
    __slots__ = ("parts", "readings", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.readings: list[Reading] = []
        self.size = 2  # the brackets

    def message(self, topic: str) -> Message:
        return Message(topic, b"[" + b",".join(self.parts) + b"]", tuple(self.readings))


def _pack_batches(
    readings: Iterable[Reading], ts_format: TsFormat, batch: int
) -> Iterator[Message]:
    pending: dict[str, _Batch] = {}  # topic -> the batch being filled
    for group in _groups(readings):
        first = group[0]
        topic = topic_for(first.lab, first.device)
        # One form 2 object per instant; a group larger than `batch` is split across objects.
        for start in range(0, len(group), batch):
            chunk = group[start : start + batch]
            part = encode(
                timed_values(first.time, {r.sensor: r.value for r in chunk}, ts_format=ts_format)
            )
            current = pending.get(topic)
            if current is not None and (
                len(current.readings) + len(chunk) > batch
                or current.size + 1 + len(part) > MAX_PAYLOAD_BYTES
            ):
                yield current.message(topic)
                current = None
            if current is None:
                current = pending[topic] = _Batch()
            current.parts.append(part)
            current.readings.extend(chunk)
            current.size += len(part) + (1 if len(current.parts) > 1 else 0)
    for topic, rest in pending.items():
        yield rest.message(topic)
