"""`Stream`: the messages of simulated labs in time order, faults injected. Pure: no clock,
no network; each `Outgoing` has the moment it is due (`at`, epoch seconds).

Devices wait in a heap for their next sample (each on its own interval, staggered by a fixed
phase); a sample is the device's readings from the sensor models, or given (replay). Faults
act on samples and messages, decided by each device's own generator seeded from (seed,
device). Payloads are CONTRACT.md's forms 1, 2, 3 (a `Batch` within the contract's limits)
and SenML, built with `schemas.telemetry`.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from schemas import telemetry
from schemas.names import topic_for
from schemas.telemetry import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_MESSAGE, TsFormat
from simulators.faults import malformed_message
from simulators.models import Reading, uniform
from simulators.scenario import Device, Form, LabSpec

_MS = timedelta(milliseconds=1)
Sample = tuple[int, int, tuple[Reading, ...] | None]  # (epoch ms, device index, given readings)


def instant(readings: Sequence[Reading], form: Form, ts_format: TsFormat = "rfc3339") -> bytes:
    """One instant of one device as a form 1 or form 2 payload."""
    values = {r.sensor: r.value for r in readings}
    if form == 1:
        return telemetry.encode(telemetry.now_values(values))
    return telemetry.encode(telemetry.timed_values(readings[0].time, values, ts_format=ts_format))


def senml(readings: Sequence[Reading], units: Mapping[str, str]) -> bytes:
    """One instant of one device as a SenML pack (the unit where the sensor has one)."""
    records: list[dict[str, Any]] = []
    for r in readings:
        records.append({"n": r.sensor, "v": r.value})
        if r.sensor in units:
            records[-1]["u"] = units[r.sensor]
    records[0] = {"bt": telemetry.epoch_ms(readings[0].time) / 1000, **records[0]}
    return telemetry.encode(records)


class Batch:
    """A form 3 message being filled: form 2 objects, one per instant."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.readings: list[Reading] = []
        self.size = 2  # the brackets

    def __bool__(self) -> bool:
        return bool(self.parts)

    def fits(self, part: bytes, readings: int) -> bool:
        """Whether one more instant keeps the message within the contract's limits."""
        return not self.parts or (
            len(self.readings) + readings <= MAX_READINGS_PER_MESSAGE
            and self.size + 1 + len(part) <= MAX_PAYLOAD_BYTES
        )

    def add(self, part: bytes, readings: Sequence[Reading]) -> None:
        self.size += len(part) + (1 if self.parts else 0)
        self.parts.append(part)
        self.readings.extend(readings)

    def take(self) -> tuple[bytes, tuple[Reading, ...]]:
        """The payload and its readings; the batch starts empty again."""
        payload, readings = b"[" + b",".join(self.parts) + b"]", tuple(self.readings)
        self.parts, self.readings, self.size = [], [], 2
        return payload, readings


@dataclass(slots=True)
class Outgoing:
    """One MQTT message to publish at `at` (epoch seconds)."""

    at: float
    lab: str
    topic: str
    payload: bytes
    qos: int
    readings: tuple[Reading, ...] = ()  # the readings it carries
    expect: bool = True  # count its readings as expected in the database (False: a copy)
    rejection: bool = False  # a malformed message: ingest must record one rejection
    form: Form = 2


@dataclass(slots=True)
class _DeviceState:
    lab: str
    device: Device
    topic: str
    interval_ms: int
    form: Form
    rng: random.Random
    skew_ms: int = 0
    offline_until_ms: int = -(2**62)
    batch: Batch = field(default_factory=Batch)  # form 3: being filled
    last_ms: int = 0  # the latest instant put in `batch`


class Stream:
    """The messages of `labs` for samples in [start, end) (end None: unbounded).

    ``timed_only`` sends form 1 devices as form 2 (backfill and history: a form 1 message
    would be stamped with the receive time, not the sample's). ``stagger``: spread devices
    within their interval by a fixed phase each (default), or align every device to the
    epoch grid. ``samples``: (epoch ms, lab, device, readings) in time order, to send instead
    of the models' (replay; no bursts). `expected_readings`: the readings before faults
    (None when unbounded), for progress.
    """

    def __init__(
        self, labs: Sequence[LabSpec], *, seed: int, start: datetime, end: datetime | None,
        ts_format: TsFormat = "rfc3339", timed_only: bool = False, stagger: bool = True,
        samples: Sequence[tuple[int, str, str, tuple[Reading, ...]]] | None = None,
    ) -> None:  # fmt: skip
        self.seed, self.ts_format = seed, ts_format
        self.faults: Counter[str] = Counter()
        self.samples = 0  # device instants generated (before faults)
        self.readings = 0  # readings generated (before faults)
        self._out: list[tuple[float, int, Outgoing]] = []  # (at, seq, message)
        self._seq = itertools.count()
        self._lab_faults = {lab.name: lab.faults for lab in labs}
        self._devices: list[_DeviceState] = []
        start_ms = telemetry.epoch_ms(start)
        end_ms = None if end is None else telemetry.epoch_ms(end)
        due: list[tuple[int, int]] = []  # (first sample ms, device index)
        expected = 0
        for lab in labs:
            for device in lab.devices:
                state = _DeviceState(
                    lab.name, device, topic_for(lab.name, device.name),
                    max(1, round(device.interval / _MS)),
                    2 if timed_only and device.form == 1 else device.form,
                    random.Random(f"{seed}\x1f{device.name}\x1ffaults"),
                )  # fmt: skip
                if lab.faults.clock_skew and state.rng.random() < lab.faults.clock_skew:
                    max_ms = round(lab.faults.clock_skew_max / _MS)
                    state.skew_ms = state.rng.randint(-max_ms, max_ms) or 1
                    self.faults["clock_skew"] += 1
                step = state.interval_ms
                phase = int(uniform(seed, device.name, "phase") * step) if stagger else 0
                first = -(-(start_ms - phase) // step) * step + phase
                if end_ms is not None and first < end_ms:
                    expected += -(-(end_ms - first) // step) * len(device.sensors)
                due.append((first, len(self._devices)))
                self._devices.append(state)
        self.expected_readings = None if end_ms is None else expected
        self._events: Iterator[Sample] = self._scheduled(due, end_ms)
        if samples is not None:
            index = {(s.lab, s.device.name): i for i, s in enumerate(self._devices)}
            self._events = ((ms, index[(lab, dev)], rs) for ms, lab, dev, rs in samples)
            self.expected_readings = sum(len(rs) for *_, rs in samples)
        self._next = next(self._events, None)

    def _scheduled(self, due: list[tuple[int, int]], end_ms: int | None) -> Iterator[Sample]:
        """Every device's samples in time order, from a heap of (next sample ms, index)."""
        heapq.heapify(due)
        while due and (end_ms is None or due[0][0] < end_ms):
            t_ms, i = due[0]
            heapq.heapreplace(due, (t_ms + self._devices[i].interval_ms, i))
            yield t_ms, i, None

    def next_event(self) -> float | None:
        """Epoch seconds of the next thing to do: a message to send or a sample to take."""
        sample = None if self._next is None else self._next[0] / 1000
        if not self._out:
            return sample
        return self._out[0][0] if sample is None else min(sample, self._out[0][0])

    def advance(self) -> Outgoing | None:
        """Do the next thing in time order: return the message due (before a sample due at the
        same instant), or take a sample and return None (None at the end too)."""
        if self._out and (self._next is None or self._out[0][0] <= self._next[0] / 1000):
            return heapq.heappop(self._out)[2]
        if self._next is not None:
            t_ms, i, given = self._next
            self._next = next(self._events, None)
            self._sample(self._devices[i], t_ms, given)
        return None

    def __iter__(self) -> Iterator[Outgoing]:
        """Every message, in order of `at`, then whatever faults still hold back."""
        while self.next_event() is not None:
            if (message := self.advance()) is not None:
                yield message
        yield from self.drain()

    def drain(self) -> Iterator[Outgoing]:
        """Everything still held back (late, out of order, a partial form 3 batch), in order."""
        for state in self._devices:
            if state.batch:
                self._flush_batch(state)
        while self._out:
            yield heapq.heappop(self._out)[2]

    def _push(self, message: Outgoing) -> None:
        heapq.heappush(self._out, (message.at, next(self._seq), message))

    def _readings(self, state: _DeviceState, t_ms: int) -> list[Reading]:
        t = telemetry.from_ms(t_ms)
        stamp = telemetry.from_ms(t_ms + state.skew_ms) if state.skew_ms else t
        seed, name, lab = self.seed, state.device.name, state.lab
        return [
            Reading(lab, name, s.name, stamp, s.value(seed, name, t)) for s in state.device.sensors
        ]

    def _sample(self, state: _DeviceState, t_ms: int, given: tuple[Reading, ...] | None) -> None:
        """One sample of a device: from its models, or `given` readings (replay: no bursts)."""
        faults, rng = self._lab_faults[state.lab], state.rng
        n = len(state.device.sensors) if given is None else len(given)
        self.samples += 1
        self.readings += n
        if t_ms >= state.offline_until_ms and faults.offline and rng.random() < faults.offline:
            state.offline_until_ms = t_ms + round(faults.offline_for / _MS)
            self.faults["offline"] += 1
        if t_ms < state.offline_until_ms:
            self.faults["offline_readings"] += n
            return
        if given is None:
            readings = self._readings(state, t_ms)
        elif state.skew_ms:
            readings = [r._replace(time=telemetry.from_ms(t_ms + state.skew_ms)) for r in given]
        else:
            readings = list(given)
        if faults.drop:
            kept = [r for r in readings if rng.random() >= faults.drop]
            self.faults["drop"] += len(readings) - len(kept)
            readings = kept
        if readings:
            self._emit(state, t_ms, tuple(readings))
        if faults.burst and given is None and rng.random() < faults.burst:
            self.faults["burst"] += 1
            spacing = max(1, min(1000, state.interval_ms // (faults.burst_size + 1)))
            end = min((faults.burst_size + 1) * spacing, state.interval_ms)  # the next sample
            for offset in range(spacing, end, spacing):
                extra = self._readings(state, t_ms + offset)
                self.faults["burst_readings"] += len(extra)
                self._emit(state, t_ms + offset, tuple(extra))
        if faults.malformed and rng.random() < faults.malformed:
            kind = rng.choice(faults.malformed_kinds)
            device = state.device
            topic, payload = malformed_message(
                kind, state.lab, device.name, device.sensor_names, telemetry.from_ms(t_ms), rng
            )
            self.faults["malformed"] += 1
            self.faults[f"malformed:{kind}"] += 1
            at, qos = t_ms / 1000, device.qos
            self._push(Outgoing(at, state.lab, topic, payload, qos, expect=False, rejection=True))

    def _emit(self, state: _DeviceState, t_ms: int, readings: tuple[Reading, ...]) -> None:
        """Pack a sample into a message (or a form 3 batch) and apply the message faults."""
        device = state.device
        if state.form == 3:
            part = instant(readings, 2, self.ts_format)
            if not state.batch.fits(part, len(readings)):
                self._flush_batch(state)  # the contract's size limits: send what is there
            state.batch.add(part, readings)
            state.last_ms = t_ms
            if len(state.batch.parts) >= device.batch:
                self._flush_batch(state)
            return
        if state.form == "senml":
            topic = topic_for(state.lab, device.name, "senml")
            payload = senml(readings, {s.name: s.unit for s in device.sensors})
        else:
            topic, payload = state.topic, instant(readings, state.form, self.ts_format)
        self._message(state, Outgoing(t_ms / 1000, state.lab, topic, payload, device.qos, readings))

    def _flush_batch(self, state: _DeviceState) -> None:
        """Send the device's form 3 batch, due at its latest instant."""
        payload, readings = state.batch.take()
        at, qos = state.last_ms / 1000, state.device.qos
        self._message(state, Outgoing(at, state.lab, state.topic, payload, qos, readings))

    def _message(self, state: _DeviceState, message: Outgoing) -> None:
        """Queue `message`, delayed or sent twice as the faults decide."""
        faults, rng = self._lab_faults[state.lab], state.rng
        message.form = state.form
        interval = state.interval_ms / 1000
        if faults.out_of_order and rng.random() < faults.out_of_order:
            message.at += rng.uniform(1.0, 3.0) * interval
            self.faults["out_of_order"] += 1
        if faults.late and rng.random() < faults.late:
            message.at += faults.late_by.total_seconds()
            self.faults["late"] += 1
        self._push(message)
        if faults.duplicate and state.form != 1 and rng.random() < faults.duplicate:
            self.faults["duplicate"] += 1
            again = message.at + rng.uniform(0.0, 2.0) * interval
            self._push(replace(message, at=again, expect=False))
