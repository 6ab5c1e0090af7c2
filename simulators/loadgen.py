"""The load generator: single-reading form 2 messages as fast as possible, or at a total
rate, from one or more processes: ``run_load(LoadOptions(lab="x", processes=2, messages=N))``.

Device ``load-PP-NNNN``'s k-th reading is at ``base + k`` ms (base: the start of the run
minus a day) with the value ``k % 1000``, so every (device, time) is unique and in the past.
One process runs here; more run in a "spawn" `ProcessPoolExecutor`: they connect, meet at a
barrier, publish their share and report through a shared counter array; children ignore
SIGINT and stop when the parent's event says so. A paced process catches up at most a
second's worth after a stall."""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.names import is_lab, topic_for
from schemas.times import from_epoch_ms
from simulators.errors import BrokerUnreachable, PublishIncomplete
from simulators.manifest import Manifest
from simulators.progress import Progress
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


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """A load run: `messages` in total or `duration` seconds, from `processes` processes over
    `devices` series, at `rate` messages/s in total (None: as fast as possible). Checked on
    creation (ValueError)."""

    lab: str
    processes: int = 1
    messages: int | None = None
    duration: float | None = None
    rate: float | None = None
    devices: int = 100
    qos: int = 1
    host: str = "127.0.0.1"
    port: int = 1883
    mqtt_version: MqttVersion = "3.1.1"
    manifest: str | Path | None = None
    progress_every: float | None = 5.0  # None: no progress lines

    def __post_init__(self) -> None:
        m, d, r, n = self.messages, self.duration, self.rate, self.devices
        if (m is None) == (d is None):
            raise ValueError(
                "give exactly one of messages or duration (--messages N or --duration SECONDS)"
            )
        if not is_lab(self.lab):
            raise ValueError(f"lab {self.lab!r}: 1-64 of a-z 0-9 _ -, starting with a letter")
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, not {self.processes}")
        if n < self.processes:
            raise ValueError(f"devices ({n}) must be at least processes ({self.processes})")
        if m is not None and m < 1:
            raise ValueError(f"messages must be at least 1, not {m}")
        for name, x in (("duration", d), ("rate", r)):
            if x is not None and not (x > 0 and math.isfinite(x)):
                raise ValueError(f"{name} must be a positive number, not {x!r}")
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {self.qos!r}")
        if m is not None and -(-m // n) > DAY_MS:
            raise ValueError(f"{m} messages over {n} devices is more than a day of milliseconds")


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
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class LoadResult:
    """What a load run published, per process and in total."""

    options: LoadOptions
    processes: list[ProcessResult]
    stopped: bool
    started_at: datetime
    finished_at: datetime
    base_ms: int
    manifest: Path | None = None

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.processes)

    @property
    def acked(self) -> int:
        return sum(p.acked for p in self.processes)

    @property
    def elapsed(self) -> float:
        """From the first process's first message to the last acknowledgement of any."""
        active = [p for p in self.processes if p.started > 0]
        return max(p.finished for p in active) - min(p.started for p in active) if active else 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every message published was acknowledged (QoS 1) or written out (QoS 0)."""
        return all(p.error is None and p.acked == p.messages for p in self.processes)

    def __str__(self) -> str:
        n, rate = len(self.processes), self.options.rate
        target = "as fast as possible" if rate is None else f"{rate:g}/s"
        what = "acknowledged" if self.options.qos else "written out (QoS 0)"
        text = (
            f"load: published {self.messages} messages (1 reading each) from {n} "
            f"process{'es' if n != 1 else ''} in {self.elapsed:.1f} s: "
            f"{self.rate:.0f} messages/s achieved (target: {target}); {self.acked} {what}"
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


def _publish(
    o: LoadOptions, result: ProcessResult, base_ms: int, pub: Publisher, stop: StopFlag,
    tick: Callable[[int, int], None],
) -> None:  # fmt: skip
    """Publish process `result.index`'s share on a connected `pub`."""
    topics = [topic_for(o.lab, device_name(result.index, n)) for n in range(result.devices)]
    nd, rate = len(topics), None if o.rate is None else o.rate / o.processes
    messages = None if o.messages is None else split(o.messages, o.processes)[result.index]
    limit = min(messages or nd * DAY_MS, nd * DAY_MS)
    publish = pub.publish
    result.started = t0 = time.monotonic()
    end_at = math.inf if o.duration is None else t0 + o.duration
    sent = 0
    while sent < limit:
        if stop.is_set():
            result.stopped = True
            break
        if (now := time.monotonic()) >= end_at:
            break
        if rate is None:
            upto = min(limit, sent + CHUNK)
        else:
            due = int((now - t0) * rate) + 1
            if due - sent > (cap := max(1, int(rate))):  # catch up at most a second's worth
                t0 += (due - sent - cap) / rate
                due = sent + cap
            if (upto := min(limit, due)) <= sent:
                pub.idle(min(t0 + sent / rate, end_at) - now, stop)
                continue
        for j in range(sent, upto):
            k, d = divmod(j, nd)
            publish(topics[d], PAYLOAD % (base_ms + k, k % 1000))
        sent = result.messages = upto
        tick(sent, pub.acknowledged)
    if messages is None and sent >= limit:
        log.warning("load process %d: its devices reached the start time of the run", result.index)


def _run_share(
    o: LoadOptions, index: int, base_ms: int, stop: StopFlag, tick: Callable[[int, int], None],
    barrier: Any = None,
) -> ProcessResult:  # fmt: skip
    """Connect, (wait at `barrier` for the others,) publish process `index`'s share, drain,
    calling `tick(sent, acknowledged)` on the way; errors go into the result."""
    result = ProcessResult(index, split(o.devices, o.processes)[index])
    pub = Publisher(host=o.host, port=o.port, qos=o.qos, mqtt_version=o.mqtt_version)
    try:
        pub.connect()
    except BrokerUnreachable as exc:
        if barrier is not None:
            barrier.abort()  # the others stop at once
        result.error_kind, result.error = "unreachable", exc.reason
        return result
    try:
        if barrier is not None:
            barrier.wait(READY_TIMEOUT)
        _publish(o, result, base_ms, pub, stop, tick)
        pub.close()
    except threading.BrokenBarrierError:  # another process could not connect: publish nothing
        result.stopped = True
        pub.close()
    except PublishIncomplete as exc:
        result.error_kind, result.error = "incomplete", str(exc)
    except BaseException:
        with contextlib.suppress(PublishIncomplete):
            pub.close(timeout=2.0)
        raise
    finally:
        result.finished = time.monotonic()
        result.messages, result.acked, result.failed = pub.sent, pub.acknowledged, pub.failed
        tick(result.messages, result.acked)
    return result


_child: dict[str, Any] = {}  # a child's stop event, barrier and counters (from the initializer)


def _init_child(stop: Any, barrier: Any, counts: Any, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: parent decides
    fmt = "%(asctime)s %(levelname)s livelab-sim load: %(message)s"
    logging.basicConfig(level=log_level, format=fmt)
    _child.update(stop=stop, barrier=barrier, counts=counts)


def _child_share(o: LoadOptions, index: int, base_ms: int) -> ProcessResult:
    def tick(sent: int, acked: int) -> None:  # the parent reads them for its progress line
        _child["counts"][2 * index : 2 * index + 2] = sent, acked

    return _run_share(o, index, base_ms, _child["stop"], tick, _child["barrier"])


def _run_children(
    o: LoadOptions, base_ms: int, stop: threading.Event, progress: Progress
) -> list[ProcessResult]:
    ctx = multiprocessing.get_context("spawn")
    child_stop, barrier = ctx.Event(), ctx.Barrier(o.processes)
    counts = ctx.Array("q", 2 * o.processes, lock=False)
    level = logging.getLogger("simulators").getEffectiveLevel()
    with ProcessPoolExecutor(
        o.processes, mp_context=ctx, initializer=_init_child,
        initargs=(child_stop, barrier, counts, level),
    ) as pool:  # fmt: skip
        futures = [pool.submit(_child_share, o, i, base_ms) for i in range(o.processes)]
        while wait(futures, timeout=0.2).not_done:
            if stop.is_set():
                child_stop.set()
            if sent := sum(counts[0::2]):
                progress.update(sent, lambda: f"{sent - sum(counts[1::2])} awaiting ack")
    results = []
    for i, future in enumerate(futures):
        try:
            results.append(future.result())
        except Exception as exc:  # a bug or a killed child: say so rather than hang
            error = f"load process {i} crashed: {exc!r}"  # (its messages are unknown: 0)
            results.append(ProcessResult(i, 0, error_kind="crash", error=error))
    return results


def run_load(options: LoadOptions, stop: threading.Event | None = None) -> LoadResult:
    """Run the load; `stop` ends it early. Raises `BrokerUnreachable` when a process cannot
    connect, `PublishIncomplete` when acknowledgements are missing (after writing the manifest).
    With ``processes > 1`` "spawn" imports the calling program's main module in each child:
    keep its work under ``if __name__ == "__main__":``."""
    o, stop = options, stop or threading.Event()
    base_ms = int(time.time()) * 1000 - DAY_MS
    what = f"{o.messages} messages" if o.messages else f"{o.duration:g} s"
    target = "as fast as possible" if o.rate is None else f"{o.rate:g} messages/s"
    log.info(
        "load: %s to %s:%s from %d process(es), %d devices, %s, QoS %d",
        what, o.host, o.port, o.processes, o.devices, target, o.qos,
    )  # fmt: skip
    started_at = datetime.now(UTC)
    progress = Progress("load", None, "messages", o.progress_every)
    if o.processes == 1:

        def tick(sent: int, acked: int) -> None:
            progress.update(sent, lambda: f"{sent - acked} awaiting ack")

        results = [_run_share(o, 0, base_ms, stop, tick)]
    else:
        results = _run_children(o, base_ms, stop, progress)
    progress.close()
    stopped = stop.is_set() or any(r.stopped for r in results)
    result = LoadResult(o, results, stopped, started_at, datetime.now(UTC), base_ms)
    if unreachable := [r for r in results if r.error_kind == "unreachable"]:
        raise BrokerUnreachable(o.host, o.port, unreachable[0].error or "unknown")
    if o.manifest is not None:
        write_manifest(result, o.manifest)
        result.manifest = Path(o.manifest)
    if crashed := [r for r in results if r.error_kind == "crash"]:
        raise RuntimeError("; ".join(r.error or "crashed" for r in crashed))
    if not result.complete:
        failed = sum(r.failed for r in results)
        raise PublishIncomplete(result.messages - result.acked - failed, failed, o.host, o.port)
    return result


def write_manifest(result: LoadResult, path: str | Path) -> None:
    """The manifest of a load run: per device its readings and their time range."""
    m = Manifest(
        mode="load", started_at=result.started_at, finished_at=result.finished_at,
        complete=result.complete, messages=result.messages, readings=result.messages,
    )  # fmt: skip
    lab = m.lab(result.options.lab)
    for p in result.processes:
        for n, count in enumerate(split(p.messages, p.devices)):
            if count:
                last = from_epoch_ms(result.base_ms + count - 1)
                lab.add(device_name(p.index, n), SENSOR, last, count)
                lab.widen(from_epoch_ms(result.base_ms))
    m.save(path)
