"""The runs of the simulator, as functions: `backfill`, `live` and `replay`.

Each builds a `Stream` (what to send and when, faults included), publishes it through a
`Publisher` (its own, or one passed in) and accounts for every message in a `Manifest`
(what the database should hold afterwards: `livelab-sim audit` checks it). Optionally every
reading that should be stored is written to CSV (``record``). Runs stop early when the `stop`
event is set (the CLI sets it on SIGINT/SIGTERM): what faults still hold back is sent, every
QoS 1 message is acknowledged, and the manifest says exactly what went out.

- backfill: a historic range, as fast as the broker acknowledges, original timestamps;
  a progress bar (count, rate, ETA) on a terminal, progress lines otherwise.
- live: real time, each device on its own interval (optionally after backfilling history).
- replay: a CSV file of readings (`simulators.replay`), as fast as possible or paced.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from schemas.telemetry import TsFormat
from simulators import metrics
from simulators.lab import Form, LabSpec
from simulators.manifest import Manifest
from simulators.models import DEFAULT_SEED
from simulators.publisher import MqttVersion, Publisher
from simulators.record import CsvRecorder
from simulators.scenario import DEFAULT_SCENARIO, Scenario, load_scenario
from simulators.stream import Outgoing, Stream

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
MIN_YEAR = 2000  # ingest rejects readings before 2000-01-01 (CONTRACT.md)


@dataclass
class Summary:
    """What a run published. `messages`/`readings` count what was handed to the broker
    (duplicates and malformed messages included); a run that returns normally also had every
    QoS 1 message acknowledged. `faults` counts what was injected."""

    label: str
    messages: int = 0
    readings: int = 0
    elapsed: float = 0.0
    stopped: bool = False  # ended early by `stop` (Ctrl-C)
    faults: Counter[str] = field(default_factory=Counter)
    history: Summary | None = None

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0

    def __str__(self) -> str:
        text = (
            f"{self.label}: published {self.messages} messages ({self.readings} readings) "
            f"in {self.elapsed:.1f} s, {self.rate:.1f} messages/s, "
            f"{self.readings / self.elapsed if self.elapsed > 0 else 0.0:.1f} readings/s"
        )
        if self.stopped:
            text += " (stopped early)"
        if self.faults:
            text += "\n" + format_faults(self.faults, indent="  ")
        if self.history is not None:
            text = f"{self.history}\n{text}"
        return text


_FAULT_TEXT = {
    "drop": "readings dropped (never sent)",
    "duplicate": "messages sent twice",
    "out_of_order": "messages sent out of order",
    "late": "messages sent late",
    "malformed": "malformed messages sent",
    "clock_skew": "devices with a skewed clock",
    "burst": "bursts",
    "burst_readings": "readings in bursts",
    "offline": "times a device went offline",
    "offline_readings": "readings not sent while offline",
}


def format_faults(faults: Counter[str], indent: str = "") -> str:
    """'faults injected:' and one line per fault (malformed per kind)."""
    lines = [f"{indent}faults injected:"]
    for key in _FAULT_TEXT:
        if faults.get(key):
            line = f"{indent}  {key:<17} {faults[key]:>9}  {_FAULT_TEXT[key]}"
            if key == "malformed":
                kinds = sorted((k.split(":", 1)[1], n) for k, n in faults.items() if ":" in k)
                line += " (" + ", ".join(f"{k} {n}" for k, n in kinds) + ")"
            lines.append(line)
    return "\n".join(lines)


class _Progress(Protocol):
    def update(self, summary: Summary, readings_generated: int, outstanding: int) -> None: ...

    def close(self) -> None: ...


class _LogProgress:
    """A progress line at most every `every` seconds (count, rate and, with a total, ETA)."""

    def __init__(self, label: str, every: float, total: int | None) -> None:
        self.label, self.every, self.total = label, every, total
        self.start = self.last = time.monotonic()
        self.last_messages = 0

    def update(self, summary: Summary, readings_generated: int, outstanding: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        rate = (summary.messages - self.last_messages) / (now - self.last)
        self.last, self.last_messages = now, summary.messages
        text = f"{self.label}: {summary.messages} messages, {summary.readings} readings"
        if self.total:
            overall = readings_generated / (now - self.start)
            eta = (self.total - readings_generated) / overall if overall > 0 else math.inf
            text += (
                f" ({readings_generated / self.total:.0%} of {self.total} readings), "
                f"{rate:.0f} messages/s, ETA {eta:.0f} s"
            )
        else:
            text += f", {rate:.1f} messages/s"
        log.info("%s, %d awaiting ack", text, outstanding)

    def close(self) -> None:
        pass


class _BarProgress:
    """A tqdm progress bar over the readings generated: count, rate, ETA."""

    def __init__(self, label: str, total: int | None) -> None:
        from tqdm import tqdm

        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            width = 0
        # A terminal that reports no size (a pty without one) would hide tqdm's bar.
        sized = width > 0
        self.bar = tqdm(
            total=total,
            desc=label,
            unit=" readings",
            unit_scale=True,
            file=sys.stderr,
            mininterval=0.5,
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
        )
        self.shown = 0

    def update(self, summary: Summary, readings_generated: int, outstanding: int) -> None:
        if readings_generated - self.shown >= 256 or readings_generated < self.shown:
            self.bar.update(readings_generated - self.shown)
            self.shown = readings_generated

    def close(self) -> None:
        self.bar.close()


def make_progress(label: str, total: int | None, mode: str | float) -> _Progress | None:
    """`mode`: "bar" (a bar on a terminal, else lines every 5 s), seconds between lines, or
    "off"."""
    if mode == "off":
        return None
    if mode == "bar":
        if sys.stderr.isatty():
            return _BarProgress(label, total)
        mode = 5.0
    return _LogProgress(label, float(mode), total)


class Run:
    """Publishes streams through one publisher into one manifest (and optional record)."""

    def __init__(
        self,
        publisher: Publisher,
        manifest: Manifest,
        recorder: CsvRecorder | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.pub = publisher
        self.manifest = manifest
        self.recorder = recorder
        self.stop = stop or threading.Event()

    def send(self, message: Outgoing, summary: Summary) -> None:
        self.pub.publish(message.topic, message.payload, qos=message.qos)
        summary.messages += 1
        summary.readings += len(message.readings)
        self.manifest.messages += 1
        self.manifest.readings += len(message.readings)
        metrics.MESSAGES.inc()
        metrics.READINGS.inc(len(message.readings))
        lab = self.manifest.lab(message.lab)
        if message.rejection:
            lab.rejections += 1
        elif message.expect:
            for r in message.readings:
                lab.add(r.device, r.sensor, r.time)
            if self.recorder is not None:
                self.recorder.write(message.readings)
        if message.form == 1:
            lab.open_end = True

    def publish(
        self,
        stream: Stream,
        summary: Summary,
        *,
        schedule: Callable[[float], float] | None = None,
        deadline: float | None = None,
        progress: _Progress | None = None,
    ) -> None:
        """Publish `stream`: at once, or when `schedule(at)` (epoch seconds) has come.

        Stops at `deadline` (epoch seconds) or when `stop` is set, then sends what faults
        still hold back. Faults injected are added to `summary.faults`.
        """
        began = time.monotonic()
        try:
            while (at := stream.next_event()) is not None:
                if self.stop.is_set():
                    summary.stopped = True
                    break
                if schedule is not None:
                    due = schedule(at)
                    if deadline is not None and due >= deadline:
                        break
                    wait = due - time.time()
                    if wait > 0:
                        self.pub.idle(min(wait, 0.25), self.stop)
                        continue
                message = stream.advance()
                if message is not None:
                    self.send(message, summary)
                    if progress is not None:
                        progress.update(summary, stream.readings, self.pub.outstanding)
                elif schedule is None and stream.samples % 64 == 0:
                    self.pub.poll()
            for message in stream.drain():
                self.send(message, summary)
        finally:
            if progress is not None:
                progress.close()
            summary.faults.update(stream.faults)
            self.manifest.faults.update(stream.faults)
            summary.elapsed = time.monotonic() - began


def resolve_labs(
    scenario: Scenario | str | None,
    lab: str | None = None,
    *,
    spec: LabSpec | None = None,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    interval: timedelta | float | None = None,
    form: Form | None = None,
    qos: int | None = None,
    batch: int | None = None,
    faults: dict[str, Any] | None = None,
) -> tuple[Scenario, list[LabSpec]]:
    """The scenario and its labs to run, with the command line's choices applied.

    `lab` renames the lab of a one-lab scenario, or picks one lab of a larger one.
    ValueError (with a message for the user) for unknown labs, devices or sensors.
    """
    if scenario is None or isinstance(scenario, str):
        scenario = load_scenario(scenario or DEFAULT_SCENARIO)
    labs = list(scenario.labs) if spec is None else [spec]
    if lab is not None:
        if len(labs) == 1:
            labs = [labs[0].renamed(lab)]
        else:
            chosen = [x for x in labs if x.name == lab]
            if not chosen:
                names = ", ".join(x.name for x in labs)
                raise ValueError(
                    f"scenario {scenario.name!r} has no lab {lab!r}; its labs: {names}"
                )
            labs = chosen
    out = []
    for x in labs:
        x = x.select(devices, sensors).with_devices(
            interval=None if interval is None else _td(interval), form=form, qos=qos, batch=batch
        )
        if faults:
            x = replace(x, faults=x.faults.with_rates(**faults))
        out.append(x)
    return scenario, out


@dataclass(frozen=True)
class _Connection:
    """The publisher a run was given, or how to connect its own."""

    publisher: Publisher | None
    host: str
    port: int
    qos: int
    mqtt_version: MqttVersion


def _open(
    stack: ExitStack, connection: _Connection, record: str | Path | CsvRecorder | None
) -> tuple[Publisher, CsvRecorder | None]:
    recorder: CsvRecorder | None
    if record is None or isinstance(record, CsvRecorder):
        recorder = record
    else:
        recorder = stack.enter_context(CsvRecorder(record))
    publisher = connection.publisher
    if publisher is None:
        c = connection
        publisher = stack.enter_context(
            Publisher(host=c.host, port=c.port, qos=c.qos, mqtt_version=c.mqtt_version)
        )
    return publisher, recorder


def _publish_all(
    label: str,
    stream: Stream,
    connection: _Connection,
    manifest: Manifest,
    record: str | Path | CsvRecorder | None,
    stop: threading.Event | None,
    progress: str | float,
    schedule: Callable[[float], float] | None = None,
) -> Summary:
    """Publish a bounded stream (backfill, replay) and wait for every acknowledgement."""
    summary = Summary(label)
    began = time.monotonic()
    with ExitStack() as stack:
        pub, recorder = _open(stack, connection, record)
        run = Run(pub, manifest, recorder, stop)
        bar = make_progress(label, stream.expected_readings(), progress)
        run.publish(stream, summary, schedule=schedule, progress=bar)
        _finish(stack, pub, connection.publisher, manifest)
    summary.elapsed = time.monotonic() - began
    return summary


def _check_range(start: datetime, end: datetime) -> None:
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"{name} {t.isoformat()} has no UTC offset (naive datetime)")
    if start >= end:
        raise ValueError("start must be before end")
    if start.year < MIN_YEAR:
        raise ValueError(
            f"start {start.isoformat()} is before {MIN_YEAR}-01-01: ingest rejects such times"
        )


def backfill(
    lab: str | None,
    start: datetime,
    end: datetime,
    *,
    scenario: Scenario | str | None = None,
    spec: LabSpec | None = None,
    interval: timedelta | float | None = None,
    seed: int | None = None,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    form: Form | None = None,
    batch: int | None = None,
    qos: int | None = None,
    faults: dict[str, Any] | None = None,
    ts_format: TsFormat = "rfc3339",
    publisher: Publisher | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    mqtt_version: MqttVersion = "3.1.1",
    record: str | Path | CsvRecorder | None = None,
    manifest: Manifest | None = None,
    stop: threading.Event | None = None,
    progress: str | float = 5.0,
) -> Summary:
    """Publish every reading of the scenario's labs in [start, end), with original times.

    Each device keeps its own interval and form unless `interval`/`form` override them
    (form 1 devices send form 2 here: a backfill needs the timestamps). Times are multiples
    of the device's interval since the epoch. Returns once everything is acknowledged;
    raises `BrokerUnreachable` if the broker cannot be reached and `PublishIncomplete` if
    acknowledgements are missing at the end.
    """
    if form == 1:
        raise ValueError("backfill sends form 2, 3 or senml: form 1 has no timestamps")
    _check_range(start, end)
    chosen_scenario, labs = resolve_labs(
        scenario, lab, spec=spec, devices=devices, sensors=sensors, interval=interval,
        form=form, qos=qos, batch=batch, faults=faults,
    )  # fmt: skip
    seed = chosen_scenario.seed if seed is None else seed
    manifest = manifest or Manifest(mode="backfill")
    _describe(manifest, chosen_scenario, seed)
    stream = Stream(
        labs, seed=seed, start=start, end=end, ts_format=ts_format, timed_only=True,
        stagger=False,
    )  # fmt: skip
    connection = _Connection(publisher, host, port, qos or 1, mqtt_version)
    return _publish_all("backfill", stream, connection, manifest, record, stop, progress)


def _describe(manifest: Manifest, scenario: Scenario, seed: int) -> None:
    manifest.scenario = manifest.scenario or scenario.name
    manifest.seed = seed if manifest.seed is None else manifest.seed
    if manifest.started_at is None:
        manifest.started_at = datetime.now(UTC)


def _finish(stack: ExitStack, pub: Publisher, given: Publisher | None, manifest: Manifest) -> None:
    """Wait for every acknowledgement, then mark the manifest complete."""
    if given is not None:
        pub.wait_all()
    else:
        stack.close()  # closes our publisher: waits for every ack or raises
    manifest.complete = True
    manifest.finished_at = datetime.now(UTC)


def live(
    lab: str | None = None,
    *,
    scenario: Scenario | str | None = None,
    spec: LabSpec | None = None,
    rate: float | None = None,
    interval: timedelta | float | None = None,
    history: timedelta | float | None = None,
    history_interval: timedelta | float = timedelta(seconds=60),
    form: Form | None = None,
    batch: int | None = None,
    qos: int | None = None,
    faults: dict[str, Any] | None = None,
    ts_format: TsFormat = "rfc3339",
    seed: int | None = None,
    duration: float | None = None,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    publisher: Publisher | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    mqtt_version: MqttVersion = "3.1.1",
    record: str | Path | CsvRecorder | None = None,
    manifest: Manifest | None = None,
    stop: threading.Event | None = None,
    progress_every: float = 10.0,
) -> Summary:
    """Backfill `history` up to now, then publish in real time until `stop` is set or
    `duration` seconds have passed.

    Each device publishes on its own interval (staggered within it); `interval` sets one
    interval for every device, `rate` a total number of messages per second instead.
    """
    if rate is not None and interval is not None:
        raise ValueError("give rate or interval, not both")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of messages/s, not {rate!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive, not {duration!r}")
    chosen_scenario, labs = resolve_labs(
        scenario, lab, spec=spec, devices=devices, sensors=sensors, interval=interval,
        form=form, qos=qos, batch=batch, faults=faults,
    )  # fmt: skip
    if rate is not None:
        n = sum(len(x.devices) for x in labs)
        labs = [x.with_devices(interval=timedelta(seconds=n / rate)) for x in labs]
    seed = chosen_scenario.seed if seed is None else seed
    manifest = manifest or Manifest(mode="live")
    _describe(manifest, chosen_scenario, seed)
    stop = stop or threading.Event()
    summary = Summary("live")
    with ExitStack() as stack:
        connection = _Connection(publisher, host, port, qos or 1, mqtt_version)
        pub, recorder = _open(stack, connection, record)
        run = Run(pub, manifest, recorder, stop)
        now = datetime.now(UTC)
        if history:
            span = history if isinstance(history, timedelta) else timedelta(seconds=history)
            log.info("backfilling %s of history up to %s", span, now.isoformat(timespec="seconds"))
            past = [x.with_devices(interval=_td(history_interval)) for x in labs]
            stream = Stream(
                past, seed=seed, start=now - span, end=now, ts_format=ts_format,
                timed_only=True, stagger=False,
            )  # fmt: skip
            summary.history = Summary("history")
            run.publish(stream, summary.history, progress=make_progress("history", None, 5.0))
            log.info("%s", summary.history)
        devices_n = sum(len(x.devices) for x in labs)
        per_second = sum(1 / x.interval.total_seconds() for lab_ in labs for x in lab_.devices)
        log.info(
            "publishing live: %d lab(s), %d devices, about %.2f messages/s",
            len(labs),
            devices_n,
            per_second,
        )
        stream = Stream(labs, seed=seed, start=datetime.now(UTC), end=None, ts_format=ts_format)
        began = time.monotonic()
        deadline = None if duration is None else time.time() + duration
        if not stop.is_set():
            run.publish(
                stream,
                summary,
                schedule=lambda at: at,
                deadline=deadline,
                progress=_LogProgress("live", progress_every, None),
            )
        summary.stopped = stop.is_set()
        if deadline is not None and not summary.stopped:
            # The run lasts the whole duration, even when the last message went earlier.
            while (left := deadline - time.time()) > 0 and not stop.is_set():
                pub.idle(min(left, 0.25), stop)
        summary.elapsed = time.monotonic() - began
        _finish(stack, pub, publisher, manifest)
    return summary


def _td(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def replay(
    path: str | Path,
    *,
    lab: str | None = None,
    speed: float | None = None,
    form: Form = 2,
    batch: int = 10,
    qos: int = 1,
    faults: dict[str, Any] | None = None,
    seed: int = DEFAULT_SEED,
    ts_format: TsFormat = "rfc3339",
    publisher: Publisher | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    mqtt_version: MqttVersion = "3.1.1",
    record: str | Path | CsvRecorder | None = None,
    manifest: Manifest | None = None,
    stop: threading.Event | None = None,
    progress: str | float = 5.0,
) -> Summary:
    """Publish the readings of a CSV file (see `simulators.replay`) with their own times.

    `speed` None: as fast as the broker acknowledges; otherwise that many times the
    original pace (1 = real time), starting now. `lab` replaces the file's lab column.
    Raises `ReplayError` for a file that cannot be replayed.
    """
    from simulators.faults import Faults
    from simulators.replay import ReplayStream, read_readings

    if speed is not None and not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be a positive factor, not {speed!r}")
    frame, repeats = read_readings(path, lab)
    if repeats:
        log.warning(
            "%s: %d row(s) repeat a (lab, device, sensor, time) already in the file; "
            "each is sent once, with its first value",
            path,
            repeats,
        )
    stream = ReplayStream(
        frame, seed=seed, form=form, qos=qos, batch=batch,
        faults=Faults().with_rates(**faults) if faults else None, ts_format=ts_format,
    )  # fmt: skip
    manifest = manifest or Manifest(mode="replay")
    manifest.scenario = manifest.scenario or f"replay of {Path(path).name}"
    manifest.seed = seed
    manifest.started_at = manifest.started_at or datetime.now(UTC)
    schedule = None
    if speed is not None:
        t0, wall0 = frame["ms"].iloc[0] / 1000, time.time()

        def schedule(at: float) -> float:
            return wall0 + (at - t0) / speed

    connection = _Connection(publisher, host, port, qos, mqtt_version)
    return _publish_all("replay", stream, connection, manifest, record, stop, progress, schedule)
