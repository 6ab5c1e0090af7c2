"""The message stream (pure: no broker): determinism, per-device intervals, every fault kind
visible in the messages, and the accounting the audit relies on."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from schemas.telemetry import from_ms
from schemas.times import parse_rfc3339
from simulators.faults import MALFORMED_KINDS, Faults
from simulators.scenario import LabSpec, load_scenario
from simulators.stream import Outgoing, Stream

START = datetime(2026, 6, 1, tzinfo=UTC)
DEMO = load_scenario("oceanhamnen").labs[0]


def lab(faults: Faults | None = None, **device_changes: object) -> LabSpec:
    spec = DEMO.renamed("t").with_devices(**device_changes)
    return spec if faults is None else replace(spec, faults=faults)


def run(
    spec: LabSpec, hours: float = 6, seed: int = 22, **kw: object
) -> tuple[Stream, list[Outgoing]]:
    options: dict[str, object] = {"timed_only": True, "stagger": False, **kw}
    stream = Stream(
        [spec], seed=seed, start=START, end=START + timedelta(hours=hours), **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return stream, list(stream)


def stored(messages: list[Outgoing]) -> Counter[tuple[str, str, datetime]]:
    return Counter((r.device, r.sensor, r.time) for m in messages if m.expect for r in m.readings)


def test_same_seed_same_messages_other_seed_other_values() -> None:
    spec = replace(DEMO, faults=load_scenario("rehearsal").labs[0].faults)
    _, a = run(spec, hours=3)
    _, b = run(spec, hours=3)
    assert [(m.topic, m.payload, m.at) for m in a] == [(m.topic, m.payload, m.at) for m in b]
    _, c = run(spec, hours=3, seed=23)
    assert [m.payload for m in a] != [m.payload for m in c]


def test_each_device_keeps_its_interval_and_form() -> None:
    stream, messages = run(lab(), hours=1)
    per_device = Counter(m.topic for m in messages)
    assert per_device["livelab/t/aq-01/telemetry"] == 60  # every minute
    assert per_device["livelab/t/energy-01/telemetry"] == 4  # every 15 minutes
    assert per_device["livelab/t/parking-01/telemetry"] == 120  # every 30 s, form 1 -> 2
    assert per_device["livelab/t/sea-01/telemetry"] == 4  # 12 instants, 3 per message
    assert per_device["livelab/t/noise-01/senml"] == 60
    senml = json.loads(next(m.payload for m in messages if m.topic.endswith("noise-01/senml")))
    assert senml[0]["bt"] == START.timestamp() and senml[0]["u"] == "dB(A)"
    sea = json.loads(next(m.payload for m in messages if "sea-01" in m.topic))
    assert [parse_rfc3339(o["ts"]) for o in sea] == [
        START + timedelta(minutes=5 * i) for i in range(3)
    ]
    assert stream.expected_readings == sum(len(m.readings) for m in messages) == stream.readings
    assert not stream.faults


def test_live_streams_stagger_devices_within_their_interval() -> None:
    spec = lab(interval=timedelta(seconds=10))
    stream = Stream([spec], seed=22, start=START, end=START + timedelta(seconds=10))
    times = sorted(m.readings[0].time for m in stream)
    assert len(times) == len(spec.devices) and len(set(times)) > len(spec.devices) // 2
    assert all(START <= t < START + timedelta(seconds=10) for t in times)


def test_drop_removes_readings_and_counts_them() -> None:
    clean_stream, clean = run(lab())
    stream, messages = run(lab(Faults(drop=0.2)))
    dropped = stream.faults["drop"]
    assert 0.1 * clean_stream.readings < dropped < 0.3 * clean_stream.readings
    assert sum(stored(messages).values()) == sum(stored(clean).values()) - dropped
    assert set(stored(messages)) < set(stored(clean))


def test_duplicates_repeat_a_message_later_and_count_once() -> None:
    stream, messages = run(lab(Faults(duplicate=0.1)))
    copies = [m for m in messages if not m.expect]
    assert len(copies) == stream.faults["duplicate"] > 0
    originals = {m.payload: m for m in messages if m.expect}
    for copy in copies:
        assert copy.payload in originals and copy.at >= originals[copy.payload].at
    assert max(stored(messages).values()) == 1
    # form 1 devices get none: a copy without a time would be a new reading
    _, live = run(lab(Faults(duplicate=1.0), form=1), hours=0.5, timed_only=False)
    assert all(m.expect for m in live)


def test_out_of_order_and_late_messages_are_overtaken() -> None:
    stream, messages = run(lab(Faults(out_of_order=0.1, late=0.02, late_by=timedelta(minutes=20))))
    assert stream.faults["out_of_order"] > 0 and stream.faults["late"] > 0
    overtaken = late = 0
    last: dict[str, datetime] = {}
    for m in messages:
        t = max(r.time for r in m.readings)
        if m.topic in last and t < last[m.topic]:
            overtaken += 1
        last[m.topic] = max(t, last.get(m.topic, t))
        late += m.at - t.timestamp() >= 20 * 60
    assert overtaken >= stream.faults["out_of_order"] // 2
    assert late >= stream.faults["late"] - 2  # the drain at the end can send a few earlier
    assert [m.at for m in messages[: len(messages) // 2]] == sorted(
        m.at for m in messages[: len(messages) // 2]
    )


def test_malformed_messages_of_every_kind_are_rejections_with_nothing_to_store() -> None:
    stream, messages = run(lab(Faults(malformed=0.3)), hours=2)
    bad = [m for m in messages if m.rejection]
    assert len(bad) == stream.faults["malformed"]
    kinds = {k.split(":")[1]: n for k, n in stream.faults.items() if k.startswith("malformed:")}
    assert set(kinds) == set(MALFORMED_KINDS) and sum(kinds.values()) == len(bad)
    assert all(not m.expect and not m.readings for m in bad)
    payloads = [m.payload for m in bad]
    assert b"" in payloads
    assert any(b"NaN" in p for p in payloads)
    assert any(len(p) > 256 * 1024 for p in payloads)
    assert any(m.topic.endswith("/xml") for m in bad)
    assert any(
        b'"vs"' in p and m.topic.endswith("/senml") for p, m in zip(payloads, bad, strict=True)
    )
    assert any(b"1999-12-31" in p for p in payloads)
    for p in payloads:
        if p.startswith(b'{"ts":"') and b"values" not in p:
            with pytest.raises(json.JSONDecodeError):
                json.loads(p)


def test_clock_skew_shifts_a_device_by_a_constant() -> None:
    stream, messages = run(lab(Faults(clock_skew=0.5, clock_skew_max=timedelta(seconds=60))))
    interval = {d.name: d.interval for d in DEMO.devices}
    offsets: dict[str, set[timedelta]] = defaultdict(set)
    for m in messages:
        for r in m.readings:
            offsets[r.device].add((r.time - START) % interval[r.device])  # off its grid by
    skewed = [d for d, o in offsets.items() if o != {timedelta(0)}]
    assert len(skewed) == stream.faults["clock_skew"] > 0
    assert all(len(o) == 1 for o in offsets.values())  # a constant per device
    for d in skewed:
        (off,) = offsets[d]
        assert min(off, interval[d] - off) <= timedelta(seconds=60)  # within clock_skew_max


def test_bursts_add_readings_between_two_samples() -> None:
    stream, messages = run(lab(Faults(burst=0.05, burst_size=5)))
    extra = [
        r
        for m in messages
        for r in m.readings
        if r.time.second or r.time.microsecond
        if r.device not in ("parking-01",)
    ]
    assert stream.faults["burst"] > 0
    assert len(extra) <= stream.faults["burst_readings"]
    assert sum(stored(messages).values()) == stream.readings + stream.faults["burst_readings"]
    assert max(stored(messages).values()) == 1


def test_offline_devices_leave_a_gap() -> None:
    faults = Faults(offline=0.01, offline_for=timedelta(minutes=30))
    stream, messages = run(lab(faults, interval=timedelta(minutes=1)), hours=24)
    assert stream.faults["offline"] > 0
    times: dict[str, list[datetime]] = defaultdict(list)
    for m in messages:
        times[m.topic].extend(sorted({r.time for r in m.readings}))
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(sorted(ts))]
    assert sum(g >= timedelta(minutes=30) for g in gaps) >= stream.faults["offline"] // 2
    total = sum(stored(messages).values())
    assert total == stream.readings - stream.faults["offline_readings"]


def test_accounting_with_every_fault_adds_up() -> None:
    stream, messages = run(
        replace(lab(), faults=load_scenario("rehearsal").labs[0].faults), hours=48
    )
    f = stream.faults
    expected = stream.readings - f["drop"] - f["offline_readings"] + f["burst_readings"]
    assert sum(stored(messages).values()) == expected
    assert max(stored(messages).values()) == 1
    assert sum(m.rejection for m in messages) == f["malformed"]
    assert sum(not m.expect and not m.rejection for m in messages) == f["duplicate"]
    assert all(from_ms(0) < r.time for m in messages for r in m.readings)
