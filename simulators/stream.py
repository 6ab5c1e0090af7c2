"""`Stream`: the messages of simulated labs in time order, faults injected. Pure: no clock,
no network; each `Outgoing` has the moment it is due (`at`, epoch seconds).

Devices wait in a heap for their next sample (each on its own interval, staggered by a fixed
phase); a sample is the device's readings from the sensor models, or given (replay). Faults
act on samples (offline, drop, clock skew, burst) and messages (duplicate, out of order,
late, malformed), decided by each device's own generator seeded from (seed, device). Every
`Outgoing` says whether its readings should be stored (`expect`) or it should be rejected.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.names import topic_for
from schemas.telemetry import TsFormat, epoch_ms, from_ms
from simulators import messages
from simulators.faults import malformed_message
from simulators.lab import Device, Form, LabSpec
from simulators.models import Reading, uniform

_MS = timedelta(milliseconds=1)


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
    interval_ms: int
    form: Form
    rng: random.Random
    skew_ms: int = 0
    offline_until_ms: int = -(2**62)
    batch: messages.Batch = field(default_factory=messages.Batch)  # form 3: being filled
    last_ms: int = 0  # the latest instant put in `batch`


class Stream:
    """The messages of `labs` for samples in [start, end) (end None: unbounded).

    ``timed_only`` sends form 1 devices as form 2 (backfill and history: a form 1 message
    would be stamped with the receive time, not the sample's). ``stagger``: spread devices
    within their interval by a fixed phase each (default), or align every device to the
    epoch grid. ``samples``: (epoch ms, lab, device, readings) in time order, to send instead
    of the models' (replay; no bursts).
    """

    def __init__(
        self,
        labs: Sequence[LabSpec],
        *,
        seed: int,
        start: datetime,
        end: datetime | None,
        ts_format: TsFormat = "rfc3339",
        timed_only: bool = False,
        stagger: bool = True,
        samples: Sequence[tuple[int, str, str, tuple[Reading, ...]]] | None = None,
    ) -> None:
        self.seed = seed
        self.ts_format = ts_format
        self.faults: Counter[str] = Counter()
        self.samples = 0  # device instants generated (before faults)
        self.readings = 0  # readings generated (before faults)
        self._end_ms = None if end is None else epoch_ms(end)
        self._start_ms = epoch_ms(start)
        self._devices: list[_DeviceState] = []
        self._due: list[tuple[int, int]] = []  # (next sample ms, device index)
        self._out: list[tuple[float, int, Outgoing]] = []  # (at, seq, message)
        self._seq = 0
        self._lab_faults = {lab.name: lab.faults for lab in labs}
        for lab in labs:
            for device in lab.devices:
                form: Form = device.form
                if timed_only and form == 1:
                    form = 2
                state = _DeviceState(
                    lab=lab.name,
                    device=device,
                    interval_ms=max(1, round(device.interval / _MS)),
                    form=form,
                    rng=random.Random(f"{seed}\x1f{device.name}\x1ffaults"),
                )
                faults = lab.faults
                if faults.clock_skew and state.rng.random() < faults.clock_skew:
                    max_ms = round(faults.clock_skew_max / _MS)
                    state.skew_ms = state.rng.randint(-max_ms, max_ms) or 1
                    self.faults["clock_skew"] += 1
                phase = (
                    int(uniform(seed, device.name, "phase") * state.interval_ms) if stagger else 0
                )
                first = self._first_at_or_after(self._start_ms, state.interval_ms, phase)
                self._devices.append(state)
                heapq.heappush(self._due, (first, len(self._devices) - 1))
        self._expected = self._count_expected()
        self._given: Iterator[tuple[int, int, tuple[Reading, ...]]] | None = None
        if samples is not None:
            self._due.clear()
            index = {(s.lab, s.device.name): i for i, s in enumerate(self._devices)}
            self._given = ((ms, index[(lab, dev)], rs) for ms, lab, dev, rs in samples)
            self._peek = next(self._given, None)
            self._expected = sum(len(rs) for *_, rs in samples)

    @staticmethod
    def _first_at_or_after(start_ms: int, step: int, phase: int) -> int:
        return -(-(start_ms - phase) // step) * step + phase

    def expected_readings(self) -> int | None:
        """Readings in [start, end) before faults (None when unbounded), for progress."""
        return self._expected

    def _count_expected(self) -> int | None:
        if self._end_ms is None:
            return None
        readings = 0
        for first, i in self._due:
            state = self._devices[i]
            if first < self._end_ms:
                n = -(-(self._end_ms - first) // state.interval_ms)
                readings += n * len(state.device.sensors)
        return readings

    # -- the stream --

    def next_sample_at(self) -> float | None:
        """Epoch seconds of the next sample (None: no more in range)."""
        if self._given is not None:
            return None if self._peek is None else self._peek[0] / 1000
        if not self._due:
            return None
        t = self._due[0][0]
        if self._end_ms is not None and t >= self._end_ms:
            return None
        return t / 1000

    def pending_at(self) -> float | None:
        """When the first held-back message is due (None: none waiting)."""
        return self._out[0][0] if self._out else None

    def next_event(self) -> float | None:
        """Epoch seconds of the next thing to do: a message to send or a sample to take."""
        sample, out = self.next_sample_at(), self.pending_at()
        if sample is None:
            return out
        return sample if out is None else min(sample, out)

    def advance(self) -> Outgoing | None:
        """Do the next thing in time order: return the message due, or take a sample (None).

        A message due at the same instant as a sample goes first. None at the end too
        (`next_event` is None then).
        """
        sample, out = self.next_sample_at(), self.pending_at()
        if out is not None and (sample is None or out <= sample):
            return heapq.heappop(self._out)[2]
        if sample is not None:
            self.step()
        return None

    def __iter__(self) -> Iterator[Outgoing]:
        """Every message, in order of `at`, then whatever faults still hold back."""
        while self.next_event() is not None:
            message = self.advance()
            if message is not None:
                yield message
        yield from self.drain()

    def drain(self) -> Iterator[Outgoing]:
        """Everything still held back (late, out of order, a partial form 3 batch), in order."""
        for state in self._devices:
            if state.batch:
                self._flush_batch(state)
        while self._out:
            yield heapq.heappop(self._out)[2]

    def step(self) -> None:
        """Take the next sample of the device that is due first."""
        if self._given is not None:
            assert self._peek is not None
            t_ms, i, readings = self._peek
            self._peek = next(self._given, None)
            self._sample(self._devices[i], t_ms, readings)
            return
        t_ms, i = heapq.heappop(self._due)
        state = self._devices[i]
        heapq.heappush(self._due, (t_ms + state.interval_ms, i))
        self._sample(state, t_ms)

    # -- samples and faults --

    def _push(self, message: Outgoing) -> None:
        self._seq += 1
        heapq.heappush(self._out, (message.at, self._seq, message))

    def _readings(self, state: _DeviceState, t_ms: int) -> list[Reading]:
        t = from_ms(t_ms)
        stamp = t if not state.skew_ms else from_ms(t_ms + state.skew_ms)
        seed, name, lab = self.seed, state.device.name, state.lab
        return [
            Reading(lab, name, s.name, stamp, s.value(seed, name, t)) for s in state.device.sensors
        ]

    def _sample(
        self, state: _DeviceState, t_ms: int, given: tuple[Reading, ...] | None = None
    ) -> None:
        """One sample of a device: from its models, or `given` readings (replay: no bursts)."""
        faults = self._lab_faults[state.lab]
        rng = state.rng
        n = len(state.device.sensors) if given is None else len(given)
        self.samples += 1
        self.readings += n
        if t_ms < state.offline_until_ms:
            self.faults["offline_readings"] += n
            return
        if faults.offline and rng.random() < faults.offline:
            state.offline_until_ms = t_ms + round(faults.offline_for / _MS)
            self.faults["offline"] += 1
            self.faults["offline_readings"] += n
            return
        if given is None:
            readings = self._readings(state, t_ms)
        elif state.skew_ms:
            stamp = from_ms(t_ms + state.skew_ms)
            readings = [r._replace(time=stamp) for r in given]
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
            size = faults.burst_size
            spacing = max(1, min(1000, state.interval_ms // (size + 1)))
            for j in range(1, size + 1):
                if j * spacing >= state.interval_ms:
                    break
                extra = self._readings(state, t_ms + j * spacing)
                self.faults["burst_readings"] += len(extra)
                self._emit(state, t_ms + j * spacing, tuple(extra))
        if faults.malformed and rng.random() < faults.malformed:
            kind = rng.choice(faults.malformed_kinds)
            names = state.device.sensor_names
            topic, payload = malformed_message(
                kind, state.lab, state.device.name, names, from_ms(t_ms), rng
            )
            self.faults["malformed"] += 1
            self.faults[f"malformed:{kind}"] += 1
            bad = Outgoing(t_ms / 1000, state.lab, topic, payload, state.device.qos, expect=False)
            bad.rejection = True
            self._push(bad)

    def _emit(self, state: _DeviceState, t_ms: int, readings: tuple[Reading, ...]) -> None:
        """Pack a sample into a message (or a form 3 batch) and apply the message faults."""
        device = state.device
        topic = topic_for(state.lab, device.name)
        if state.form == 3:
            part = messages.instant(readings, 2, self.ts_format)
            if not state.batch.fits(part, len(readings)):
                self._flush_batch(state)  # the contract's size limits: send what is there
            state.batch.add(part, readings)
            state.last_ms = t_ms
            if state.batch.instants >= device.batch:
                self._flush_batch(state)
            return
        if state.form == "senml":
            topic = f"livelab/{state.lab}/{device.name}/senml"
            payload = messages.senml(readings, {s.name: s.unit for s in device.sensors})
        else:
            assert state.form in (1, 2)
            payload = messages.instant(readings, state.form, self.ts_format)
        self._message(state, t_ms / 1000, topic, payload, readings)

    def _flush_batch(self, state: _DeviceState) -> None:
        """Send the device's form 3 batch, due at its latest instant."""
        payload, readings = state.batch.take()
        topic = topic_for(state.lab, state.device.name)
        self._message(state, state.last_ms / 1000, topic, payload, readings)

    def _message(
        self,
        state: _DeviceState,
        at: float,
        topic: str,
        payload: bytes,
        readings: tuple[Reading, ...],
    ) -> None:
        faults = self._lab_faults[state.lab]
        rng = state.rng
        interval = state.interval_ms / 1000
        qos = state.device.qos
        if faults.out_of_order and rng.random() < faults.out_of_order:
            at += rng.uniform(1.0, 3.0) * interval
            self.faults["out_of_order"] += 1
        if faults.late and rng.random() < faults.late:
            at += faults.late_by.total_seconds()
            self.faults["late"] += 1
        self._push(Outgoing(at, state.lab, topic, payload, qos, readings, form=state.form))
        if faults.duplicate and state.form != 1 and rng.random() < faults.duplicate:
            again = at + rng.uniform(0.0, 2.0) * interval
            self.faults["duplicate"] += 1
            self._push(
                Outgoing(
                    again, state.lab, topic, payload, qos, readings, expect=False, form=state.form
                )
            )
