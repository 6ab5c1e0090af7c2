"""The runs of the simulator: `backfill`, `live` and `replay`, each given its `RunOptions`.

Each publishes a `Stream` through a `Publisher`, accounts for every message in a `Manifest`
and the metrics ``--metrics-port`` serves, and with ``record`` writes every reading that
should be stored as CSV (the time as sent, clock skew included; for form 1 the sample time,
just before ingest's receive time). When `stop` is set (SIGINT/SIGTERM) a run sends what
faults still hold back and waits for every QoS 1 acknowledgement.
"""

from __future__ import annotations

import csv
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
from typing import Any

import prometheus_client

from schemas.telemetry import format_ts
from simulators.durations import parse_duration
from simulators.manifest import Manifest
from simulators.options import RunOptions
from simulators.progress import Progress
from simulators.publisher import Publisher
from simulators.replay import read_readings, replay_stream
from simulators.scenario import DEFAULT_SCENARIO, Scenario, load_scenario
from simulators.stream import Outgoing, Stream

log = logging.getLogger(__name__)

MIN_YEAR = 2000  # ingest rejects readings before 2000-01-01 (CONTRACT.md)
MESSAGES = prometheus_client.Counter("livelab_sim_messages_published", "messages published")
READINGS = prometheus_client.Counter("livelab_sim_readings_published", "readings in them")
_FAULT_TEXT = {
    "drop": "readings dropped (never sent)", "duplicate": "messages sent twice",
    "out_of_order": "messages sent out of order", "late": "messages sent late",
    "malformed": "malformed messages sent", "clock_skew": "devices with a skewed clock",
    "burst": "bursts", "burst_readings": "readings in bursts",
    "offline": "times a device went offline", "offline_readings": "readings not sent while offline",
}  # fmt: skip


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
    began: float = field(default_factory=time.monotonic)

    def done(self) -> Summary:
        self.elapsed = time.monotonic() - self.began
        return self

    def __str__(self) -> str:
        seconds = self.elapsed or math.inf  # no time, no rate
        text = (
            f"{self.label}: published {self.messages} messages ({self.readings} readings) in "
            f"{self.elapsed:.1f} s, {self.messages / seconds:.1f} messages/s, "
            f"{self.readings / seconds:.1f} readings/s"
            + (" (stopped early)" if self.stopped else "")
        )
        if self.faults:
            text += "\n  faults injected:"
        kinds = [f"{k.split(':')[1]} {n}" for k, n in sorted(self.faults.items()) if ":" in k]
        for key, what in _FAULT_TEXT.items():
            if self.faults.get(key):
                text += f"\n    {key:<17} {self.faults[key]:>9}  {what}"
                text += f" ({', '.join(kinds)})" if key == "malformed" else ""
        return text if self.history is None else f"{self.history}\n{text}"


class Run:
    """A run's publisher, manifest, record file and stop event; leaving the ``with`` block
    normally waits for every acknowledgement (or raises) and marks the manifest complete."""

    def __init__(self, options: RunOptions, mode: str, scenario: str, seed: int) -> None:
        o = self.options = options
        self.stop = o.stop or threading.Event()
        m = self.manifest = o.manifest or Manifest(mode=mode)
        m.scenario, m.seed = m.scenario or scenario, seed if m.seed is None else m.seed
        m.started_at = m.started_at or datetime.now(UTC)
        with ExitStack() as stack:
            self.record: Any = None  # a csv writer
            if o.record is not None:
                file = stack.enter_context(Path(o.record).open("w", newline="", encoding="utf-8"))
                self.record = csv.writer(file)
                self.record.writerow(("lab", "device", "sensor", "time", "value"))
            pub = Publisher(
                host=o.host, port=o.port, mqtt_version=o.mqtt_version
            )  # qos: per message
            self.pub = stack.enter_context(pub)
            self._stack = stack.pop_all()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)  # our publisher waits for every ack, or raises
        if exc[0] is None:
            self.manifest.complete = True
            self.manifest.finished_at = datetime.now(UTC)

    def send(self, message: Outgoing, summary: Summary) -> None:
        self.pub.publish(message.topic, message.payload, qos=message.qos)
        n = len(message.readings)
        summary.messages += 1
        summary.readings += n
        self.manifest.messages += 1
        self.manifest.readings += n
        MESSAGES.inc()
        READINGS.inc(n)
        lab = self.manifest.lab(message.lab)
        lab.open_end |= message.form == 1
        if message.rejection:
            lab.rejections += 1
        elif message.expect:
            for r in message.readings:
                lab.add(r.device, r.sensor, r.time)
                if self.record is not None:
                    self.record.writerow((r.lab, r.device, r.sensor, format_ts(r.time), r.value))

    def _state(self, summary: Summary) -> str:
        return f"{summary.messages} messages, {self.pub.outstanding} awaiting ack"

    def publish(
        self, stream: Stream, summary: Summary, schedule: Callable[[float], float] | None = None,
        deadline: float = math.inf, every: float = 5.0,
    ) -> None:  # fmt: skip
        """Publish `stream`: at once, or when `schedule(at)` (epoch seconds) has come; stop at
        `deadline` (epoch seconds, waited for) or `stop`, then send what faults held back.
        Progress every `every` seconds."""
        total, every_s = stream.expected_readings, every if self.options.progress else None
        progress = Progress(summary.label, total, "readings", every_s)
        try:
            while (at := stream.next_event()) is not None:
                if self.stop.is_set():
                    summary.stopped = True
                    break
                if schedule is not None:
                    due = min(schedule(at), deadline)
                    if (wait := due - time.time()) > 0:
                        self.pub.idle(min(wait, 0.25), self.stop)
                        continue
                    if due >= deadline:
                        break
                if (message := stream.advance()) is not None:
                    self.send(message, summary)
                    progress.update(stream.readings, lambda: self._state(summary))
                elif schedule is None and stream.samples % 64 == 0:
                    self.pub.poll()
            for message in stream.drain():
                self.send(message, summary)
        finally:
            progress.close()
            summary.faults.update(stream.faults)
            self.manifest.faults.update(stream.faults)


def resolve_labs(options: RunOptions) -> Scenario:
    """The scenario with only the labs to run, the options applied to them and to the seed;
    ValueError (with a message for the user) for unknown labs, devices or sensors."""
    o = options
    scenario = o.scenario
    if scenario is None or isinstance(scenario, str):
        scenario = load_scenario(scenario or DEFAULT_SCENARIO)
    labs = list(scenario.labs)
    if o.lab is not None:
        if len(labs) == 1:
            labs = [labs[0].renamed(o.lab)]
        elif not (labs := [x for x in labs if x.name == o.lab]):
            names = ", ".join(x.name for x in scenario.labs)
            raise ValueError(f"scenario {scenario.name!r} has no lab {o.lab!r}; its labs: {names}")
    interval = None if o.interval is None else parse_duration(o.interval)
    out = []
    for x in labs:
        x = x.select(o.devices, o.sensors)
        x = x.with_devices(interval=interval, form=o.form, qos=o.qos, batch=o.batch)
        out.append(replace(x, faults=x.faults.with_rates(**o.faults)) if o.faults else x)
    return replace(scenario, labs=tuple(out), seed=scenario.seed if o.seed is None else o.seed)


def backfill(start: datetime, end: datetime, options: RunOptions) -> Summary:
    """Publish every reading of the scenario's labs in [start, end) with its own time, each
    device on the grid of its interval since the epoch (form 1 devices send form 2). Returns
    once everything is acknowledged; raises `BrokerUnreachable` or `PublishIncomplete`."""
    if options.form == 1:
        raise ValueError("backfill sends form 2, 3 or senml: form 1 has no timestamps")
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"{name} {t.isoformat()} has no UTC offset (naive datetime)")
    if start >= end:
        raise ValueError("start must be before end")
    if start.year < MIN_YEAR:
        raise ValueError(f"start {start.isoformat()} is before {MIN_YEAR}-01-01: ingest rejects it")
    scenario = resolve_labs(options)
    stream = Stream(
        scenario.labs, seed=scenario.seed, start=start, end=end, ts_format=options.ts_format,
        timed_only=True, stagger=False,
    )  # fmt: skip
    summary = Summary("backfill")
    with Run(options, "backfill", scenario.name, scenario.seed) as run:
        run.publish(stream, summary)
    return summary.done()


def live(
    options: RunOptions, *, rate: float | None = None, history: timedelta | float | None = None,
    history_interval: timedelta | float = timedelta(seconds=60), duration: float | None = None,
) -> Summary:  # fmt: skip
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
    scenario = resolve_labs(o)
    labs, seed = scenario.labs, scenario.seed
    if rate is not None:
        n = sum(len(x.devices) for x in labs)
        labs = tuple(x.with_devices(interval=timedelta(seconds=n / rate)) for x in labs)
    with Run(o, "live", scenario.name, seed) as run:
        past = None
        if history:
            now, span = datetime.now(UTC), parse_duration(history)
            log.info("backfilling %s of history up to %s", span, now.isoformat(timespec="seconds"))
            past_labs = [x.with_devices(interval=parse_duration(history_interval)) for x in labs]
            stream = Stream(
                past_labs, seed=seed, start=now - span, end=now, ts_format=o.ts_format,
                timed_only=True, stagger=False,
            )  # fmt: skip
            past = Summary("history")
            run.publish(stream, past)
            log.info("%s", past.done())
        per_second = sum(1 / d.interval.total_seconds() for x in labs for d in x.devices)
        log.info(
            "publishing live: %d lab(s), %d devices, about %.2f messages/s",
            len(labs), sum(len(x.devices) for x in labs), per_second,
        )  # fmt: skip
        summary = Summary("live", history=past)
        stream = Stream(labs, seed=seed, start=datetime.now(UTC), end=None, ts_format=o.ts_format)
        # The run lasts the whole duration, even when the last message went earlier.
        deadline = math.inf if duration is None else time.time() + duration
        run.publish(stream, summary, lambda at: at, deadline, every=10.0)
        summary.done()
    return summary


def replay(path: str | Path, options: RunOptions, *, speed: float | None = None) -> Summary:
    """Publish the readings of a CSV file (`simulators.replay`) with their own times, as fast
    as the broker acknowledges or from now at `speed` times the original pace (1: real time).
    Raises `ReplayError` for a file that cannot be replayed."""
    if speed is not None and not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be a positive factor, not {speed!r}")
    if options.form == 1:
        raise ValueError("replay sends form 2, 3 or senml: form 1 would lose the times")
    rows, repeats = read_readings(path, options.lab)
    if repeats:
        log.warning(
            "%s: %d row(s) repeat a (lab, device, sensor, time) already in the file; "
            "each is sent once, with its first value",
            path, repeats,
        )  # fmt: skip
    stream = replay_stream(rows, options)
    summary = Summary("replay")
    with Run(options, "replay", f"replay of {Path(path).name}", stream.seed) as run:
        t0, wall0 = rows[0][3] / 1000, time.time()
        run.publish(
            stream, summary, None if speed is None else lambda at: wall0 + (at - t0) / speed
        )
    return summary.done()
