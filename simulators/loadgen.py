"""Load generator: single-reading telemetry messages as fast as possible (or at a fixed total
rate) from one or more processes, to saturate the broker and the ingest behind it.

    result = run_load(lab="loadtest", processes=2, messages=1_000_000)
    print(result)  # messages, acknowledgements, elapsed time and the rate achieved

Each message is form 2 with one reading, built with bytes formatting (no ``json.dumps``):

    livelab/{lab}/load-{process:02d}-{n:04d}/telemetry
    {"ts":1780000000000,"values":{"load":417}}

Times: every process stamps from the same base, the start of the run minus one day (to the
whole second); device ``n``'s k-th reading is at ``base + k`` ms and has the value
``k % 1000``. So every (device, time) is unique, and no time is later than the start of the
run. A device sending at most 1000 messages/s (100 devices at up to 100k messages/s) advances
its times no faster than the clock, so a later run in the same lab does not overlap an earlier
one either. A device that would pass the start time (more than a day of milliseconds, e.g. one
device at full speed for over half an hour) stops there with a warning.

Processes: with ``processes=1`` the run happens in this process (no child, so the figure is
not distorted); otherwise each process is a child started with ``multiprocessing``'s "spawn"
method, with its own `Publisher` (its own client id) and a share of the devices and messages.
Children connect first and start together; the parent logs progress (total messages/s) every
`progress_every` s on the ``simulators`` logger, passes `stop` on (children ignore SIGINT and
stop when the parent tells them), and gathers each child's result. Children started with
"spawn" import this module afresh, so they work from any program, with or without threads.

A fixed `rate` is the total: each process keeps rate/processes messages/s on a steady
schedule, servicing the network in between; after a stall it catches up at most one second's
worth of messages, then keeps the pace.

With `manifest` the run writes a `simulators.manifest.Manifest` (mode "load") so that
``livelab-sim audit`` can check that every message was stored exactly once. Use a lab of its
own for audited runs: the audit counts every reading of the lab's series in the run's range.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.names import is_lab
from schemas.times import from_epoch_ms
from simulators.cliargs import positive_float, positive_int
from simulators.errors import BrokerUnreachable, PublishIncomplete
from simulators.manifest import Manifest
from simulators.publisher import MqttVersion, Publisher, StopFlag

log = logging.getLogger(__name__)

SENSOR = "load"
DAY_MS = 86_400_000
CHUNK = 1000  # messages between looks at the clock, `stop` and the counters (full speed)
READY_TIMEOUT = 60.0  # seconds for the children to start and connect
PAYLOAD = b'{"ts":%d,"values":{"load":%d}}'


def device_name(process: int, n: int) -> str:
    return f"load-{process:02d}-{n:04d}"


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible, the larger shares first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class ProcessResult:
    """What one process published."""

    index: int
    devices: int
    messages: int = 0
    acked: int = 0  # acknowledged (QoS 1) or written out (QoS 0)
    failed: int = 0  # refused by the broker (MQTT 5)
    started: float = 0.0  # time.monotonic() (system-wide on Linux) of the first message
    finished: float = 0.0  # ... and when the last one was acknowledged
    stopped: bool = False
    error_kind: str | None = None  # "unreachable", "incomplete", "crash"
    error: str | None = None

    @property
    def elapsed(self) -> float:
        return max(0.0, self.finished - self.started)

    @property
    def rate(self) -> float:
        """Messages per second achieved by this process."""
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class LoadResult:
    """What a load run published, per process and in total."""

    processes: list[ProcessResult]
    qos: int
    target_rate: float | None = None  # total messages/s asked for; None: as fast as possible
    stopped: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    base_ms: int = 0
    lab: str = ""
    manifest: Path | None = field(default=None)

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.processes)

    @property
    def acked(self) -> int:
        return sum(p.acked for p in self.processes)

    @property
    def elapsed(self) -> float:
        """From the first process's first message to the last acknowledgement of any."""
        active = [p for p in self.processes if p.finished > 0]
        if not active:
            return 0.0
        return max(p.finished for p in active) - min(p.started for p in active)

    @property
    def rate(self) -> float:
        """Messages per second achieved, all processes together."""
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every message published was acknowledged (QoS 1) or written out (QoS 0)."""
        return all(p.error is None and p.acked == p.messages for p in self.processes)

    def __str__(self) -> str:
        n = len(self.processes)
        target = "as fast as possible" if self.target_rate is None else f"{self.target_rate:g}/s"
        what = "acknowledged" if self.qos else "written out (QoS 0)"
        text = (
            f"load: published {self.messages} messages (1 reading each) from {n} "
            f"process{'es' if n != 1 else ''} in {self.elapsed:.1f} s: "
            f"{self.rate:.0f} messages/s achieved (target: {target}); "
            f"{self.acked} {what}"
        )
        if n > 1:
            text += "; per process: " + ", ".join(
                f"#{p.index} {p.messages} in {p.elapsed:.1f} s ({p.rate:.0f}/s)"
                for p in self.processes
            )
        if self.stopped:
            text += " (stopped early)"
        if self.manifest is not None:
            text += f"; manifest written to {self.manifest}"
        return text


@dataclass(frozen=True)
class _Share:
    """One process's part of the run (pickled to the child)."""

    index: int
    lab: str
    devices: int
    messages: int | None  # None: until `duration` ends
    duration: float | None
    rate: float | None  # this process's messages/s; None: as fast as possible
    base_ms: int
    host: str
    port: int
    qos: int
    mqtt_version: MqttVersion
    client_id: str


def _publish_share(
    share: _Share,
    pub: Publisher,
    stop: StopFlag,
    counts: MutableSequence[int],
    tick: Callable[[], None] | None,
    result: ProcessResult,
) -> None:
    """Publish `share`'s messages on a connected `pub`; updates `result` and `counts`."""
    topics = [
        f"livelab/{share.lab}/{device_name(share.index, n)}/telemetry" for n in range(share.devices)
    ]
    nd = len(topics)
    limit = share.messages if share.messages is not None else nd * DAY_MS
    if limit > nd * DAY_MS:  # run_load refuses this; a guard for the times
        limit = nd * DAY_MS
    base = share.base_ms
    rate = share.rate
    slot = 2 * share.index
    publish = pub.publish
    fmt = PAYLOAD
    started = t0 = time.monotonic()
    end_at = math.inf if share.duration is None else started + share.duration
    result.started = started
    sent = 0
    while sent < limit:
        if stop.is_set():
            result.stopped = True
            break
        now = time.monotonic()
        if now >= end_at:
            break
        if rate is None:
            upto = min(limit, sent + CHUNK)
        else:
            due = int((now - t0) * rate) + 1
            cap = max(1, int(rate))  # catch up at most one second's worth
            if due - sent > cap:
                t0 += (due - sent - cap) / rate
                due = sent + cap
            upto = min(limit, due)
            if upto <= sent:
                pub.idle(min(t0 + sent / rate, end_at) - now, stop)
                continue
        for j in range(sent, upto):
            k, d = divmod(j, nd)
            publish(topics[d], fmt % (base + k, k % 1000))
        sent = upto
        result.messages = sent
        counts[slot] = sent
        counts[slot + 1] = pub.acknowledged
        if tick is not None:
            tick()
    if share.messages is None and sent >= limit:
        log.warning(
            "load process %d: its devices reached the start time of the run; stopping (use "
            "more --devices for runs this long)",
            share.index,
        )


def _run_share(
    share: _Share,
    stop: StopFlag,
    counts: MutableSequence[int],
    tick: Callable[[], None] | None = None,
    ready: Callable[[], None] | None = None,
    go: StopFlag | None = None,
) -> ProcessResult:
    """Connect, (wait for `go`,) publish the share, drain; errors go into the result."""
    result = ProcessResult(share.index, share.devices)
    pub = Publisher(
        host=share.host,
        port=share.port,
        qos=share.qos,
        mqtt_version=share.mqtt_version,
        client_id=share.client_id,
    )
    try:
        pub.connect()
    except BrokerUnreachable as exc:
        result.error_kind, result.error = "unreachable", exc.reason
        return result
    try:
        if ready is not None:
            ready()
        if go is not None:
            while not go.is_set() and not stop.is_set():
                pub.idle(0.1, go)
        _publish_share(share, pub, stop, counts, tick, result)
        try:
            pub.close()
        except PublishIncomplete as exc:
            result.error_kind, result.error = "incomplete", str(exc)
    except BaseException:
        with contextlib.suppress(PublishIncomplete):
            pub.close(timeout=2.0)
        raise
    finally:
        result.finished = time.monotonic()
        result.messages = pub.sent
        result.acked = pub.acknowledged
        result.failed = pub.failed
        counts[2 * share.index] = result.messages
        counts[2 * share.index + 1] = result.acked
    return result


def _child_main(
    share: _Share,
    stop: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    counts: MutableSequence[int],
    results: multiprocessing.queues.Queue[tuple[str, Any]],
    log_level: int,
) -> None:
    """Entry point of a child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: parent decides
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s livelab-sim load-{share.index}: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = _run_share(
            share, stop, counts, ready=lambda: results.put(("ready", share.index)), go=go
        )
    except Exception as exc:  # a bug: tell the parent rather than die silently
        result = ProcessResult(share.index, share.devices, error_kind="crash", error=repr(exc))
    results.put(("done", result))
    results.close()
    results.join_thread()


class _Progress:
    """Logs the total messages/s every `every` seconds from the processes' counters."""

    def __init__(self, every: float, counts: MutableSequence[int]) -> None:
        self.every = every
        self.counts = counts
        self.last = time.monotonic()
        self.last_sent = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        sent = sum(self.counts[0::2])
        acked = sum(self.counts[1::2])
        rate = (sent - self.last_sent) / (now - self.last)
        self.last, self.last_sent = now, sent
        log.info("load: %d messages, %.0f messages/s, %d awaiting ack", sent, rate, sent - acked)


def _gone(
    procs: Sequence[multiprocessing.process.BaseProcess],
    shares: list[_Share],
    results: multiprocessing.queues.Queue[tuple[str, Any]],
    ready: set[int],
    done: dict[int, ProcessResult],
) -> None:
    """A child exited: take what it reported before (a child flushes its queue before it
    exits); a child that reported nothing crashed."""
    with contextlib.suppress(queue.Empty):
        while True:
            kind, payload = results.get(timeout=0.5)
            if kind == "ready":
                ready.add(payload)
            else:
                done[payload.index] = payload
    for i, p in enumerate(procs):
        if i not in done and p.exitcode is not None:
            done[i] = ProcessResult(
                i,
                shares[i].devices,
                error_kind="crash",
                error=f"load process {i} exited with code {p.exitcode} without a result",
            )


def _run_children(
    shares: list[_Share], stop: threading.Event, progress_every: float
) -> list[ProcessResult]:
    ctx = multiprocessing.get_context("spawn")
    mp_stop = ctx.Event()
    go = ctx.Event()
    counts = ctx.Array("q", 2 * len(shares), lock=False)
    results: multiprocessing.queues.Queue[tuple[str, Any]] = ctx.Queue()
    level = logging.getLogger("simulators").getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_child_main,
            args=(share, mp_stop, go, counts, results, level),
            name=f"livelab-sim-load-{share.index}",
        )
        for share in shares
    ]
    done: dict[int, ProcessResult] = {}
    ready: set[int] = set()
    progress = _Progress(progress_every, counts)
    try:
        for p in procs:
            p.start()
        ready_by = time.monotonic() + READY_TIMEOUT
        while len(done) < len(procs):
            if stop.is_set():
                mp_stop.set()
            if not go.is_set():
                failed = any(r.error for r in done.values())
                if len(ready | set(done)) == len(procs) or failed or stop.is_set():
                    if failed:
                        mp_stop.set()  # one cannot connect: the others stop at once
                    go.set()
                elif time.monotonic() > ready_by:
                    raise RuntimeError(f"load processes not ready within {READY_TIMEOUT:g} s")
            try:
                kind, payload = results.get(timeout=0.2)
            except queue.Empty:
                if any(p.exitcode is not None for i, p in enumerate(procs) if i not in done):
                    _gone(procs, shares, results, ready, done)
                if go.is_set():
                    progress()
                continue
            if kind == "ready":
                ready.add(payload)
            else:
                done[payload.index] = payload
        for p in procs:
            p.join(timeout=10)
    finally:
        mp_stop.set()
        go.set()
        for p in procs:
            if p.is_alive():
                p.join(timeout=5 if len(done) == len(procs) else 0.1)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        results.close()
        results.join_thread()
    return [done[i] for i in range(len(shares))]


def run_load(
    *,
    lab: str,
    processes: int = 1,
    messages: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    devices: int = 100,
    qos: int = 1,
    host: str = "127.0.0.1",
    port: int = 1883,
    mqtt_version: MqttVersion = "3.1.1",
    manifest: str | Path | None = None,
    stop: threading.Event | None = None,
    progress_every: float = 5.0,
) -> LoadResult:
    """Publish `messages` messages in total, or for `duration` seconds, from `processes`
    processes over `devices` series, at `rate` messages/s in total (None: as fast as possible).

    Raises ValueError for bad arguments, `BrokerUnreachable` when a process cannot connect,
    `PublishIncomplete` when acknowledgements are missing at the end (after writing the
    manifest, marked incomplete).

    With ``processes > 1`` the children are started with "spawn", which imports the calling
    program's main module in each child: it must not do its work on import (keep it under
    ``if __name__ == "__main__":``).
    """
    if (messages is None) == (duration is None):
        raise ValueError("give exactly one of messages (a count) and duration (seconds)")
    if not is_lab(lab):
        raise ValueError(f"lab {lab!r}: 1-64 of a-z 0-9 _ -, starting with a letter or digit")
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if devices < processes:
        raise ValueError(f"devices ({devices}) must be at least processes ({processes})")
    if messages is not None and messages < 1:
        raise ValueError(f"messages must be at least 1, not {messages}")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive number of seconds, not {duration!r}")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of messages/s, not {rate!r}")
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, not {qos!r}")
    if messages is not None and -(-messages // devices) > DAY_MS:
        raise ValueError(
            f"{messages} messages over {devices} devices is more than a day of milliseconds "
            "per device; use more devices"
        )
    stop = stop or threading.Event()
    now_ms = int(time.time()) * 1000
    base_ms = now_ms - DAY_MS
    run = secrets.token_hex(3)
    per_device = split(devices, processes)
    per_message = split(messages, processes) if messages is not None else [None] * processes
    shares = [
        _Share(
            index=i,
            lab=lab,
            devices=per_device[i],
            messages=per_message[i],
            duration=duration,
            rate=None if rate is None else rate / processes,
            base_ms=base_ms,
            host=host,
            port=port,
            qos=qos,
            mqtt_version=mqtt_version,
            client_id=f"livelab-load-{os.getpid()}-{run}-{i}",
        )
        for i in range(processes)
    ]
    target = "as fast as possible" if rate is None else f"{rate:g} messages/s"
    log.info(
        "load: %s to %s:%s from %d process(es), %d devices, %s, QoS %d",
        f"{messages} messages" if messages is not None else f"{duration:g} s",
        host,
        port,
        processes,
        devices,
        target,
        qos,
    )
    started_at = datetime.now(UTC)
    if processes == 1:
        counts = [0, 0]
        results = [_run_share(shares[0], stop, counts, tick=_Progress(progress_every, counts))]
    else:
        results = _run_children(shares, stop, progress_every)
    result = LoadResult(
        processes=results,
        qos=qos,
        target_rate=rate,
        stopped=stop.is_set() or any(r.stopped for r in results),
        started_at=started_at,
        finished_at=datetime.now(UTC),
        base_ms=base_ms,
        lab=lab,
    )
    unreachable = [r for r in results if r.error_kind == "unreachable"]
    if unreachable:
        raise BrokerUnreachable(host, port, unreachable[0].error or "unknown")
    crashed = [r for r in results if r.error_kind == "crash"]
    if manifest is not None:
        write_manifest(result, manifest)
        result.manifest = Path(manifest)
    if crashed:
        raise RuntimeError("; ".join(r.error or "crashed" for r in crashed))
    if not result.complete:
        raise PublishIncomplete(
            result.messages - result.acked - sum(r.failed for r in results),
            sum(r.failed for r in results),
            host,
            port,
        )
    return result


def write_manifest(result: LoadResult, path: str | Path) -> Manifest:
    """The manifest of a load run: per device its readings and their time range."""
    m = Manifest(
        mode="load",
        started_at=result.started_at,
        finished_at=result.finished_at,
        complete=result.complete,
        messages=result.messages,
        readings=result.messages,
    )
    lab = m.lab(result.lab)
    for p in result.processes:
        for n, count in enumerate(split(p.messages, p.devices)):
            if count:
                lab.add(
                    device_name(p.index, n),
                    SENSOR,
                    from_epoch_ms(result.base_ms + count - 1),
                    count,
                )
                lab.widen(from_epoch_ms(result.base_ms))
    m.save(path)
    return m


# -- the command line (wired into `livelab-sim load` by simulators.__main__) --


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load generator's options: --processes, --messages, --duration, --rate, --devices,
    --manifest."""
    g = parser.add_argument_group("load")
    g.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="publishing processes, each with its own MQTT connection; 1 publishes from this "
        "process (default: %(default)s; more than the CPU count rarely helps)",
    )
    g.add_argument(
        "--messages",
        type=positive_int,
        metavar="N",
        help="publish N messages in total, then stop (give this or --duration)",
    )
    g.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="publish for this many seconds, then stop (give this or --messages)",
    )
    g.add_argument(
        "--rate",
        type=positive_float,
        metavar="MSGS_PER_S",
        help="total messages per second over all processes, on a steady schedule "
        "(default: as fast as the broker acknowledges)",
    )
    g.add_argument(
        "--devices",
        type=positive_int,
        default=100,
        metavar="N",
        help="series in total, spread over the processes: devices load-PP-NNNN, sensor "
        "'load', one reading per message (default: %(default)s)",
    )
    g.add_argument(
        "--manifest",
        metavar="FILE",
        help="write what was sent as JSON, for `livelab-sim audit` to check that every "
        "message was stored exactly once",
    )


def run_from_args(
    args: argparse.Namespace,
    *,
    host: str,
    port: int,
    qos: int,
    mqtt_version: MqttVersion,
    lab: str,
    stop: threading.Event | None,
) -> int:
    """Run from parsed options; print the summary. 0 ok, 1 broker unreachable or messages
    unacknowledged. Raises ValueError for a usage error."""
    if (args.messages is None) == (args.duration is None):
        raise ValueError("give --messages N or --duration SECONDS (one of them)")
    try:
        result = run_load(
            lab=lab,
            processes=args.processes,
            messages=args.messages,
            duration=args.duration,
            rate=args.rate,
            devices=args.devices,
            qos=qos,
            host=host,
            port=port,
            mqtt_version=mqtt_version,
            manifest=args.manifest,
            stop=stop,
        )
    except (BrokerUnreachable, PublishIncomplete) as exc:
        print(f"livelab-sim: error: {exc}", file=sys.stderr)
        return 1
    print(result)
    return 0
