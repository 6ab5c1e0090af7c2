"""The runs of the simulator: `backfill`, `live` and `replay`, each given its `RunOptions`.

Each publishes a `Stream` (what to send and when, faults included) through a `Publisher`,
accounts for every message in a `Manifest` (what the database should hold afterwards) and
optionally records every reading that should be stored. When `stop` is set (SIGINT/SIGTERM)
a run sends what faults still hold back and waits for every QoS 1 acknowledgement.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simulators import metrics
from simulators.lab import LabSpec
from simulators.manifest import Manifest
from simulators.models import DEFAULT_SEED
from simulators.options import RunOptions
from simulators.progress import Progress
from simulators.publisher import Publisher
from simulators.record import CsvRecorder
from simulators.scenario import DEFAULT_SCENARIO, Scenario, load_scenario
from simulators.stream import Outgoing, Stream

log = logging.getLogger(__name__)

MIN_YEAR = 2000  # ingest rejects readings before 2000-01-01 (CONTRACT.md)
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


@dataclass
class Summary:
    """What a run published (handed to the broker, duplicates and malformed messages
    included; a run that returns normally had every QoS 1 message acknowledged)."""

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
        per_s = self.readings / self.elapsed if self.elapsed > 0 else 0.0
        text = (
            f"{self.label}: published {self.messages} messages ({self.readings} readings) "
            f"in {self.elapsed:.1f} s, {self.rate:.1f} messages/s, {per_s:.1f} readings/s"
        )
        if self.stopped:
            text += " (stopped early)"
        if self.faults:
            text += "\n" + format_faults(self.faults, indent="  ")
        return text if self.history is None else f"{self.history}\n{text}"


def format_faults(faults: Counter[str], indent: str = "") -> str:
    """'faults injected:' and one line per fault (malformed per kind)."""
    lines = [f"{indent}faults injected:"]
    for key, text in _FAULT_TEXT.items():
        if faults.get(key):
            line = f"{indent}  {key:<17} {faults[key]:>9}  {text}"
            if key == "malformed":
                kinds = sorted((k.split(":", 1)[1], n) for k, n in faults.items() if ":" in k)
                line += " (" + ", ".join(f"{k} {n}" for k, n in kinds) + ")"
            lines.append(line)
    return "\n".join(lines)


def make_progress(label: str, total: int | None, mode: str | float) -> Progress | None:
    """`mode`: "bar" (redrawn on a terminal, else lines every 5 s), seconds, or "off"."""
    if mode == "off":
        return None
    return Progress(label, total, every=5.0 if mode == "bar" else float(mode))


class Run:
    """Publishes streams through one publisher into one manifest (and optional record)."""

    def __init__(
        self,
        pub: Publisher,
        manifest: Manifest,
        recorder: CsvRecorder | None,
        stop: threading.Event,
    ) -> None:
        self.pub, self.manifest, self.recorder, self.stop = pub, manifest, recorder, stop

    def send(self, message: Outgoing, summary: Summary) -> None:
        self.pub.publish(message.topic, message.payload, qos=message.qos)
        n = len(message.readings)
        summary.messages += 1
        summary.readings += n
        self.manifest.messages += 1
        self.manifest.readings += n
        metrics.MESSAGES.inc()
        metrics.READINGS.inc(n)
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

    def _state(self, summary: Summary) -> str:
        return f"{summary.messages} messages, {self.pub.outstanding} awaiting ack"

    def publish(
        self,
        stream: Stream,
        summary: Summary,
        schedule: Callable[[float], float] | None = None,
        deadline: float | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Publish `stream`: at once, or when `schedule(at)` (epoch seconds) has come; stop at
        `deadline` (epoch seconds) or `stop`, then send what faults still hold back."""
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
                    if (wait := due - time.time()) > 0:
                        self.pub.idle(min(wait, 0.25), self.stop)
                        continue
                message = stream.advance()
                if message is not None:
                    self.send(message, summary)
                    if progress is not None:
                        progress.update(stream.readings, lambda: self._state(summary))
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


def resolve_labs(options: RunOptions) -> tuple[Scenario, list[LabSpec]]:
    """The scenario and its labs to run, with the options applied.

    ValueError (with a message for the user) for unknown labs, devices or sensors.
    """
    o = options
    scenario = o.scenario
    if scenario is None or isinstance(scenario, str):
        scenario = load_scenario(scenario or DEFAULT_SCENARIO)
    labs = list(scenario.labs) if o.spec is None else [o.spec]
    if o.lab is not None:
        if len(labs) == 1:
            labs = [labs[0].renamed(o.lab)]
        elif not (labs := [x for x in labs if x.name == o.lab]):
            names = ", ".join(x.name for x in scenario.labs)
            raise ValueError(f"scenario {scenario.name!r} has no lab {o.lab!r}; its labs: {names}")
    interval = None if o.interval is None else _td(o.interval)
    out = []
    for x in labs:
        x = x.select(o.devices, o.sensors)
        x = x.with_devices(interval=interval, form=o.form, qos=o.qos, batch=o.batch)
        out.append(replace(x, faults=x.faults.with_rates(**o.faults)) if o.faults else x)
    return scenario, out


def _td(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def _open(stack: ExitStack, o: RunOptions, qos: int) -> tuple[Publisher, CsvRecorder | None]:
    """The run's publisher (the given one, or a new connection) and recorder."""
    record = o.record
    recorder = (
        stack.enter_context(CsvRecorder(record)) if isinstance(record, str | Path) else record
    )
    pub = o.publisher or stack.enter_context(
        Publisher(host=o.host, port=o.port, qos=qos, mqtt_version=o.mqtt_version)
    )
    return pub, recorder


def _finish(stack: ExitStack, pub: Publisher, o: RunOptions, manifest: Manifest) -> None:
    """Wait for every acknowledgement (closing our own publisher), mark the manifest complete."""
    if o.publisher is not None:
        pub.wait_all()
    stack.close()  # closes our publisher: waits for every ack or raises
    manifest.complete = True
    manifest.finished_at = datetime.now(UTC)


def _manifest(o: RunOptions, mode: str, scenario: str, seed: int) -> Manifest:
    manifest = o.manifest or Manifest(mode=mode)
    manifest.scenario = manifest.scenario or scenario
    manifest.seed = seed if manifest.seed is None else manifest.seed
    manifest.started_at = manifest.started_at or datetime.now(UTC)
    return manifest


def _publish_all(
    label: str,
    stream: Stream,
    o: RunOptions,
    manifest: Manifest,
    qos: int,
    schedule: Callable[[float], float] | None = None,
) -> Summary:
    """Publish a bounded stream (backfill, replay) and wait for every acknowledgement."""
    summary = Summary(label)
    began = time.monotonic()
    with ExitStack() as stack:
        pub, recorder = _open(stack, o, qos)
        run = Run(pub, manifest, recorder, o.stop or threading.Event())
        progress = make_progress(label, stream.expected_readings(), o.progress)
        run.publish(stream, summary, schedule, progress=progress)
        _finish(stack, pub, o, manifest)
    summary.elapsed = time.monotonic() - began
    return summary


def backfill(start: datetime, end: datetime, options: RunOptions) -> Summary:
    """Publish every reading of the scenario's labs in [start, end), with original times.

    Each device keeps its own interval and form unless the options override them (form 1
    devices send form 2: a backfill needs the timestamps); times are multiples of the
    interval since the epoch. Returns once everything is acknowledged; raises
    `BrokerUnreachable` or `PublishIncomplete` (acknowledgements missing at the end).
    """
    if options.form == 1:
        raise ValueError("backfill sends form 2, 3 or senml: form 1 has no timestamps")
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"{name} {t.isoformat()} has no UTC offset (naive datetime)")
    if start >= end:
        raise ValueError("start must be before end")
    if start.year < MIN_YEAR:
        raise ValueError(f"start {start.isoformat()} is before {MIN_YEAR}-01-01: ingest rejects it")
    scenario, labs = resolve_labs(options)
    seed = scenario.seed if options.seed is None else options.seed
    manifest = _manifest(options, "backfill", scenario.name, seed)
    stream = Stream(
        labs, seed=seed, start=start, end=end, ts_format=options.ts_format, timed_only=True,
        stagger=False,
    )  # fmt: skip
    return _publish_all("backfill", stream, options, manifest, options.qos or 1)


def live(
    options: RunOptions,
    *,
    rate: float | None = None,
    history: timedelta | float | None = None,
    history_interval: timedelta | float = timedelta(seconds=60),
    duration: float | None = None,
    progress_every: float = 10.0,
) -> Summary:
    """Backfill `history` up to now, then publish in real time until `stop` is set or
    `duration` seconds have passed. Each device publishes on its own interval (staggered
    within it); `rate` sets a total number of messages per second instead."""
    o = options
    if rate is not None and o.interval is not None:
        raise ValueError("give rate or interval, not both")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of messages/s, not {rate!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive, not {duration!r}")
    scenario, labs = resolve_labs(o)
    if rate is not None:
        n = sum(len(x.devices) for x in labs)
        labs = [x.with_devices(interval=timedelta(seconds=n / rate)) for x in labs]
    seed = scenario.seed if o.seed is None else o.seed
    manifest = _manifest(o, "live", scenario.name, seed)
    stop = o.stop or threading.Event()
    summary = Summary("live")
    with ExitStack() as stack:
        pub, recorder = _open(stack, o, o.qos or 1)
        run = Run(pub, manifest, recorder, stop)
        now = datetime.now(UTC)
        if history:
            span = _td(history)
            log.info("backfilling %s of history up to %s", span, now.isoformat(timespec="seconds"))
            past = [x.with_devices(interval=_td(history_interval)) for x in labs]
            stream = Stream(
                past, seed=seed, start=now - span, end=now, ts_format=o.ts_format,
                timed_only=True, stagger=False,
            )  # fmt: skip
            summary.history = Summary("history")
            run.publish(stream, summary.history, progress=make_progress("history", None, 5.0))
            log.info("%s", summary.history)
        per_second = sum(1 / d.interval.total_seconds() for x in labs for d in x.devices)
        log.info(
            "publishing live: %d lab(s), %d devices, about %.2f messages/s",
            len(labs), sum(len(x.devices) for x in labs), per_second,
        )  # fmt: skip
        stream = Stream(labs, seed=seed, start=datetime.now(UTC), end=None, ts_format=o.ts_format)
        began = time.monotonic()
        deadline = None if duration is None else time.time() + duration
        if not stop.is_set():
            progress = Progress("live", unit="readings", every=progress_every)
            run.publish(stream, summary, lambda at: at, deadline, progress)
        summary.stopped = stop.is_set()
        if deadline is not None and not summary.stopped:
            # The run lasts the whole duration, even when the last message went earlier.
            while (left := deadline - time.time()) > 0 and not stop.is_set():
                pub.idle(min(left, 0.25), stop)
        summary.elapsed = time.monotonic() - began
        _finish(stack, pub, o, manifest)
    return summary


def replay(path: str | Path, options: RunOptions, *, speed: float | None = None) -> Summary:
    """Publish the readings of a CSV file (see `simulators.replay`) with their own times.

    `speed` None: as fast as the broker acknowledges; otherwise that many times the
    original pace (1 = real time), starting now. `options.lab` replaces the file's lab
    column; form (default 2), batch (10), qos (1), faults and seed apply. Raises
    `ReplayError` for a file that cannot be replayed.
    """
    from simulators.faults import Faults
    from simulators.replay import read_readings, replay_stream

    o = options
    if speed is not None and not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be a positive factor, not {speed!r}")
    if o.form == 1:
        raise ValueError("replay sends form 2, 3 or senml: form 1 would lose the times")
    rows, repeats = read_readings(path, o.lab)
    if repeats:
        log.warning(
            "%s: %d row(s) repeat a (lab, device, sensor, time) already in the file; "
            "each is sent once, with its first value",
            path, repeats,
        )  # fmt: skip
    seed = DEFAULT_SEED if o.seed is None else o.seed
    qos = 1 if o.qos is None else o.qos
    faults = Faults().with_rates(**o.faults)
    stream = replay_stream(
        rows, seed=seed, form=o.form or 2, qos=qos, batch=o.batch or 10, faults=faults,
        ts_format=o.ts_format,
    )  # fmt: skip
    manifest = _manifest(o, "replay", f"replay of {Path(path).name}", seed)
    schedule = None
    if speed is not None:
        t0, wall0 = rows[0][3] / 1000, time.time()

        def schedule(at: float) -> float:
            return wall0 + (at - t0) / speed

    return _publish_all("replay", stream, o, manifest, qos, schedule)
