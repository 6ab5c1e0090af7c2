"""Every fault kind is observable in what reaches the real broker (a subscriber's view).

One backfill of a small lab with high fault rates goes through Mosquitto; a subscriber on the
lab's topics sees the messages, and each fault must show in them the way a device's faults
would: the same payload twice, timestamps going backwards, messages long after their time,
broken payloads of each kind, a device whose clock is off the grid, readings between two
samples, gaps, and readings that a clean run has but this one lacks.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.names import SENSOR_RE
from schemas.times import from_epoch_ms, parse_rfc3339
from simulators.faults import MALFORMED_KINDS
from simulators.manifest import Manifest
from simulators.options import RunOptions
from simulators.runner import backfill
from tests.helpers import run_sim
from tests.simulators.reference import generate

START = datetime(2026, 6, 1, tzinfo=UTC)
END = START + timedelta(hours=12)
DEVICES = ["aq-01", "aq-02", "aq-03", "energy-01"]
FAULTS = {
    "drop": 0.02,
    "duplicate": 0.03,
    "out_of_order": 0.03,
    "late": 0.01,
    "late_by": timedelta(minutes=30),
    "malformed": 0.03,
    "clock_skew": 0.5,
    "clock_skew_max": timedelta(seconds=45),
    "burst": 0.01,
    "burst_size": 4,
    "offline": 0.004,
    "offline_for": timedelta(minutes=45),
}


def readings_of(payload: bytes) -> list[tuple[str, datetime]] | None:
    """(sensor, time) of a valid form 2/3 message; None if it is not valid telemetry."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    out = []
    for obj in doc if isinstance(doc, list) else [doc]:
        if not isinstance(obj, dict) or set(obj) != {"ts", "values"}:
            return None
        ts = obj["ts"]
        t = from_epoch_ms(ts) if isinstance(ts, int) else parse_rfc3339(ts)
        if not START - timedelta(minutes=5) < t < END + timedelta(minutes=5):
            return None
        if not all(isinstance(v, int | float) for v in obj["values"].values()):
            return None
        if not all(SENSOR_RE.fullmatch(name) for name in obj["values"]):
            return None
        out.extend((sensor, t) for sensor in obj["values"])
    return out


def test_every_fault_shows_in_the_published_messages(
    mqtt_broker: tuple[str, int], lab: str, collector: Any
) -> None:
    manifest = Manifest(mode="backfill")
    summary = backfill(START, END, RunOptions(
        lab=lab, devices=DEVICES, faults=FAULTS, host=mqtt_broker[0], port=mqtt_broker[1],
        manifest=manifest,
    ))  # fmt: skip
    f = summary.faults
    assert collector.wait_for(summary.messages, timeout=30) == summary.messages
    arrived = collector.messages  # (topic, payload) in arrival order

    # duplicate: the same telemetry payload arrives twice
    copies = Counter(p for t, p in arrived if t.endswith("/telemetry") and readings_of(p))
    assert sum(n - 1 for n in copies.values()) == f["duplicate"] > 0

    # malformed: one broken message of each kind, on the lab's topics
    broken = [(t, p) for t, p in arrived if not (t.endswith("/telemetry") and readings_of(p))]
    assert len(broken) == f["malformed"] == manifest.labs[lab].rejections > 0
    assert all(f[f"malformed:{k}"] > 0 for k in MALFORMED_KINDS), dict(f)
    assert sum(t.endswith("/xml") for t, _ in broken) == f["malformed:topic"]
    assert sum(t.endswith("/senml") for t, _ in broken) == f["malformed:senml"]
    assert sum(p == b"" for _, p in broken) == f["malformed:empty"]
    assert sum(len(p) > 256 * 1024 for _, p in broken) == f["malformed:oversize"]
    assert sum(b"NaN" in p for _, p in broken) == f["malformed:nan"]
    assert sum(b"1999-12-31" in p for _, p in broken) == f["malformed:timestamp"]

    seen: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    backwards = late = 0
    newest: dict[str, datetime] = {}
    for topic, payload in arrived:
        rows = readings_of(payload)
        if rows is None:
            continue
        device = topic.split("/")[2]
        t = max(time for _, time in rows)
        if device in newest and t < newest[device]:
            backwards += 1  # out of order or late: an older message after a newer one
            if newest[device] - t >= timedelta(minutes=25):
                late += 1
        newest[device] = max(t, newest.get(device, t))
        seen[device].extend(rows)
    assert backwards >= f["out_of_order"] // 2 > 0
    assert late >= 1 and f["late"] > 0

    # clock skew: a skewed device's readings are all off the minute grid by one offset
    offsets = {
        d: {(t - START) % timedelta(minutes=1) for _, t in rows if d != "energy-01"}
        for d, rows in seen.items()
    }
    skewed = [d for d, o in offsets.items() if o and timedelta(0) not in o]
    assert len(skewed) >= 1 and f["clock_skew"] >= len(skewed)

    # bursts: readings closer together than the device's interval
    close = 0
    for d, rows in seen.items():
        times = sorted({t for _, t in rows})
        step = timedelta(minutes=15 if d == "energy-01" else 1)
        close += sum(b - a < step for a, b in itertools.pairwise(times))
    assert close >= f["burst"] > 0

    # offline: a gap of at least offline_for in some device's readings
    gaps = [
        b - a for rows in seen.values() for a, b in itertools.pairwise(sorted({t for _, t in rows}))
    ]
    assert f["offline"] > 0 and max(gaps) >= timedelta(minutes=45)

    # drop: readings of a clean run that never arrived (beyond the offline gaps)
    clean = {
        (r.device, r.sensor, r.time) for r in generate(lab, START, END, 60, devices=DEVICES)
        if r.device != "energy-01"
    }  # fmt: skip
    got = {(d, s, t) for d, rows in seen.items() if d not in skewed for s, t in rows}
    unskewed = {(d, s, t) for d, s, t in clean if d not in skewed}
    assert len(unskewed - got) >= 1 and f["drop"] > 0
    # ... and exactly: what arrived is what a clean run has, less drops and offline, plus bursts
    aq = [d for d in DEVICES if d != "energy-01"]
    generated = len(list(generate(lab, START, END, 60, devices=aq)))
    generated += len(list(generate(lab, START, END, 900, devices=["energy-01"])))
    arrived_readings = sum(len(set(rows)) for rows in seen.values())
    assert arrived_readings == (generated - f["drop"] - f["offline_readings"] + f["burst_readings"])
    assert sum(manifest.labs[lab].series.values()) == sum(len(set(rows)) for rows in seen.values())


def test_same_scenario_and_seed_send_the_same_run_in_another_process(
    mqtt_broker: tuple[str, int], lab: str, tmp_path: Path
) -> None:
    """Two processes, the rehearsal scenario (every fault on): the same readings recorded,
    the same faults injected; another seed changes both."""

    def run(name: str, seed: str) -> tuple[str, dict[str, Any]]:
        record, manifest = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
        proc = run_sim(
            "backfill", "--scenario", "rehearsal", "--lab", lab, "--seed", seed, "-q",
            "--start", "2026-06-01T00:00:00Z", "--end", "2026-06-01T06:00:00Z",
            "--record", str(record), "--manifest", str(manifest),
            "--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1]),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return record.read_text(), Manifest.load(manifest).model_dump(mode="json")

    first, again, other = run("a", "7"), run("b", "7"), run("c", "8")
    assert first[0] == again[0] and first[1]["faults"] == again[1]["faults"]
    assert first[1]["labs"] == again[1]["labs"] and first[1]["faults"]["malformed"] > 0
    assert first[0] != other[0] and first[1]["faults"] != other[1]["faults"]
