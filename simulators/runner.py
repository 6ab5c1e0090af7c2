"""The two runs of the simulator, as functions: `backfill` and `live`.

Both publish through a `Publisher` (their own, or one passed in), optionally record every
reading to CSV, stop early when the `stop` event is set (the CLI sets it on SIGINT/SIGTERM),
log progress on the ``simulators`` logger and return a `Summary`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.telemetry import MAX_READINGS_PER_MESSAGE, TsFormat
from simulators import metrics
from simulators.demo import LabSpec, lab_spec
from simulators.generator import DEFAULT_SEED, as_interval, count_steps, device_readings, generate
from simulators.messages import DEFAULT_BATCH, Form, Message, pack
from simulators.publisher import MqttVersion, Publisher
from simulators.record import CsvRecorder

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
DEFAULT_LIVE_INTERVAL = timedelta(seconds=10)


@dataclass
class Summary:
    """What a run published. `messages`/`readings` count what was handed to the broker;
    a run that returns normally also had every QoS 1 message acknowledged."""

    label: str
    messages: int = 0
    readings: int = 0
    elapsed: float = 0.0
    stopped: bool = False  # ended early by `stop` (Ctrl-C)
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
        if self.history is not None:
            text = f"{self.history}\n{text}"
        return text


class _Progress:
    """Logs a progress line at most every `every` seconds."""

    def __init__(self, label: str, every: float, total_readings: int | None = None) -> None:
        self.label = label
        self.every = every
        self.total = total_readings
        self.start = self.last = time.monotonic()
        self.last_messages = 0

    def update(self, summary: Summary, outstanding: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        rate = (summary.messages - self.last_messages) / (now - self.last)
        self.last, self.last_messages = now, summary.messages
        text = f"{self.label}: {summary.messages} messages, {summary.readings} readings"
        if self.total:
            done = summary.readings / self.total
            overall = summary.readings / (now - self.start)
            eta = (self.total - summary.readings) / overall if overall > 0 else math.inf
            text += f" of {self.total} ({done:.0%})"
            text += f", {rate:.0f} messages/s, ETA {eta:.0f} s"
        else:
            text += f", {rate:.1f} messages/s"
        log.info("%s, %d awaiting ack", text, outstanding)


def _open(
    stack: ExitStack,
    publisher: Publisher | None,
    host: str,
    port: int,
    qos: int,
    mqtt_version: MqttVersion,
    record: str | Path | CsvRecorder | None,
) -> tuple[Publisher, CsvRecorder | None]:
    recorder: CsvRecorder | None
    if record is None or isinstance(record, CsvRecorder):
        recorder = record
    else:
        recorder = stack.enter_context(CsvRecorder(record))
    if publisher is None:
        publisher = stack.enter_context(
            Publisher(host=host, port=port, qos=qos, mqtt_version=mqtt_version)
        )
    return publisher, recorder


def _send(
    pub: Publisher, messages: Iterable[Message], recorder: CsvRecorder | None, summary: Summary
) -> None:
    for msg in messages:
        pub.publish(msg.topic, msg.payload)
        if recorder is not None:
            recorder.write(msg.readings)
        summary.messages += 1
        summary.readings += len(msg.readings)
        metrics.MESSAGES.inc()
        metrics.READINGS.inc(len(msg.readings))


def backfill(
    lab: str,
    start: datetime,
    end: datetime,
    *,
    interval: timedelta | float = timedelta(seconds=60),
    seed: int = DEFAULT_SEED,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    form: Form = 2,
    batch: int = DEFAULT_BATCH,
    ts_format: TsFormat = "rfc3339",
    publisher: Publisher | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    qos: int = 1,
    mqtt_version: MqttVersion = "3.1.1",
    record: str | Path | CsvRecorder | None = None,
    stop: threading.Event | None = None,
    progress_every: float = 5.0,
    spec: LabSpec | None = None,
) -> Summary:
    """Publish every reading of `lab` in [start, end) at `interval`, with original times.

    Form 2 (one message per device and instant) or 3 (arrays of up to `batch` readings).
    Returns once everything is acknowledged; raises `BrokerUnreachable` if the broker cannot
    be reached and `PublishIncomplete` if acknowledgements are missing at the end.
    """
    if form not in (2, 3):
        raise ValueError("backfill sends form 2 or 3: form 1 has no timestamps")
    chosen = (spec or lab_spec(lab)).select(devices, sensors)
    total = count_steps(start, end, interval) * sum(len(d.sensors) for d in chosen.devices)
    summary = Summary("backfill")
    began = time.monotonic()
    with ExitStack() as stack:
        pub, recorder = _open(stack, publisher, host, port, qos, mqtt_version, record)
        progress = _Progress("backfill", progress_every, total)
        messages = pack(
            generate(lab, start, end, interval, seed, spec=chosen),
            form=form,
            ts_format=ts_format,
            batch=batch,
        )
        for msg in messages:
            if stop is not None and stop.is_set():
                summary.stopped = True
                break
            _send(pub, (msg,), recorder, summary)
            progress.update(summary, pub.outstanding)
        if publisher is not None:
            pub.wait_all()
        # else: leaving the stack closes our publisher, which waits for every ack
    summary.elapsed = time.monotonic() - began
    return summary


def live(
    lab: str = "oceanhamnen",
    *,
    rate: float | None = None,
    interval: timedelta | float | None = None,
    history: timedelta | float | None = None,
    history_interval: timedelta | float = timedelta(seconds=60),
    form: Form = 1,
    ts_format: TsFormat = "rfc3339",
    seed: int = DEFAULT_SEED,
    duration: float | None = None,
    devices: Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    publisher: Publisher | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    qos: int = 1,
    mqtt_version: MqttVersion = "3.1.1",
    record: str | Path | CsvRecorder | None = None,
    stop: threading.Event | None = None,
    progress_every: float = 10.0,
    spec: LabSpec | None = None,
) -> Summary:
    """Backfill `history` (form 2) up to now, then publish in real time until `stop` is set
    or `duration` seconds have passed.

    Each message carries one device's readings at the moment it is sent; devices take turns.
    The pace is `rate` messages/s in total, or one message per device every `interval`
    (default 10 s).
    """
    if rate is not None and interval is not None:
        raise ValueError("give rate or interval, not both")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of messages/s, not {rate!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive, not {duration!r}")
    if form not in (1, 2, 3):
        raise ValueError(f"unknown telemetry form {form!r}; use 1, 2 or 3")
    chosen = (spec or lab_spec(lab)).select(devices, sensors)
    n = len(chosen.devices)
    if rate is not None:
        period = 1.0 / rate
    else:
        period = as_interval(interval or DEFAULT_LIVE_INTERVAL).total_seconds() / n
    stop = stop or threading.Event()
    summary = Summary("live")
    with ExitStack() as stack:
        pub, recorder = _open(stack, publisher, host, port, qos, mqtt_version, record)
        if history:
            now = datetime.now(UTC)
            span = history if isinstance(history, timedelta) else timedelta(seconds=history)
            log.info("backfilling %s of history up to %s", span, now.isoformat(timespec="seconds"))
            summary.history = backfill(
                lab,
                now - span,
                now,
                interval=history_interval,
                seed=seed,
                form=2,
                ts_format=ts_format,
                publisher=pub,
                record=recorder,
                stop=stop,
                spec=chosen,
            )
            summary.history.label = "history"
            log.info("%s", summary.history)
        log.info(
            "publishing live: %d devices, %.2f messages/s (every %.1f s per device), form %d",
            n,
            1 / period,
            period * n,
            form,
        )
        progress = _Progress("live", progress_every)
        began = t0 = time.monotonic()
        end_at = math.inf if duration is None else began + duration
        k = 0
        while not stop.is_set():
            target = t0 + k * period
            if target >= end_at:
                stop.wait(end_at - time.monotonic())  # the run lasts the whole duration
                break
            delay = target - time.monotonic()
            if delay > 0:
                if stop.wait(min(delay, end_at - time.monotonic())):
                    break
            elif delay < -max(1.0, 2 * period):
                # Fell behind (slow broker, reconnect): keep the pace instead of bursting.
                t0 -= delay
            now = datetime.now(UTC)
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            device = chosen.devices[k % n]
            readings = device_readings(lab, device, now, seed)
            _send(
                pub,
                pack(readings, form=form, ts_format=ts_format, batch=MAX_READINGS_PER_MESSAGE),
                recorder,
                summary,
            )
            k += 1
            progress.update(summary, pub.outstanding)
        summary.stopped = stop.is_set()
        summary.elapsed = time.monotonic() - began
        if publisher is not None:
            pub.wait_all()
    return summary
