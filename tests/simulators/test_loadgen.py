"""The load generator against the real Mosquitto: exact counts from one and two processes,
valid and unique readings, a paced run, the manifest, stopping, errors and the options."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ingest.parse import parse_message
from schemas.telemetry import json_schema
from simulators.errors import BrokerUnreachable
from simulators.loadgen import LoadOptions, device_name, run_load
from simulators.manifest import Manifest
from tests.helpers import free_port, run_sim, wait_for

ROOT = Path(__file__).resolve().parents[2]


def check_messages(messages: list[tuple[str, bytes]], lab: str) -> Counter[str]:
    """Each message valid for ingest and the JSON Schema, one reading; every (device, time)
    unique and no later than now. Returns the readings per device."""
    validator = jsonschema.Draft202012Validator(json_schema())
    now = datetime.now(UTC)
    seen: set[tuple[str, datetime]] = set()
    per_device: Counter[str] = Counter()
    for topic, payload in messages:
        validator.validate(json.loads(payload))
        parsed = parse_message(topic, payload, now)
        assert parsed.rejection is None, parsed.rejection
        assert len(parsed.readings) == 1
        ((r_lab, device, sensor, time, _value),) = parsed.readings
        assert (r_lab, sensor) == (lab, "load")
        assert now - timedelta(days=2) < time <= now
        assert (device, time) not in seen, f"{device} {time} sent twice"
        seen.add((device, time))
        per_device[device] += 1
    return per_device


@pytest.mark.parametrize("processes", [1, 2])
def test_every_message_arrives_once_and_is_valid(
    mqtt_broker: tuple[str, int], lab: str, collector: Any, processes: int
) -> None:
    n = 6001
    result = run_load(
        LoadOptions(
            lab=lab, processes=processes, messages=n, devices=7, host=mqtt_broker[0],
            port=mqtt_broker[1],
        )
    )  # fmt: skip
    assert (result.messages, result.acked) == (n, n)
    assert [p.messages for p in result.processes] == ([n] if processes == 1 else [3001, 3000])
    assert result.complete and not result.stopped
    assert result.rate > 0
    assert f"published {n} messages" in str(result)
    assert collector.wait_for(n, timeout=30) == n
    per_device = check_messages(collector.messages, lab)
    if processes == 1:
        expected = {device_name(0, i): c for i, c in enumerate([858] * 2 + [857] * 5)}
    else:  # 4 + 3 devices; 3001 = 751 x 1 + 750 x 3 and 3000 = 1000 x 3
        expected = {device_name(0, i): c for i, c in enumerate([751, 750, 750, 750])}
        expected |= {device_name(1, i): 1000 for i in range(3)}
    assert per_device == expected


def test_a_paced_run_keeps_roughly_to_the_rate_and_ends(
    mqtt_broker: tuple[str, int], lab: str, collector: Any
) -> None:
    rate, duration, processes = 400.0, 1.5, 2
    result = run_load(
        LoadOptions(
            lab=lab, processes=processes, duration=duration, rate=rate, devices=4,
            host=mqtt_broker[0], port=mqtt_broker[1],
        )
    )  # fmt: skip
    assert 0 < result.messages <= rate * duration * 1.5 + processes
    assert result.messages == result.acked
    assert result.options.rate == rate and "target: 400/s" in str(result)
    assert collector.wait_for(result.messages, timeout=30) == result.messages
    check_messages(collector.messages, lab)


def test_manifest_matches_what_was_sent(
    mqtt_broker: tuple[str, int], lab: str, collector: Any, tmp_path: Path
) -> None:
    path = tmp_path / "load.json"
    n = 2500
    result = run_load(
        LoadOptions(
            lab=lab, processes=2, messages=n, devices=5, host=mqtt_broker[0],
            port=mqtt_broker[1], manifest=path,
        )
    )  # fmt: skip
    assert result.manifest == path and str(path) in str(result)
    manifest = Manifest.load(path)
    assert (manifest.mode, manifest.messages, manifest.readings, manifest.complete) == (
        "load",
        n,
        n,
        True,
    )
    assert manifest.started_at is not None and manifest.finished_at is not None
    assert manifest.started_at <= manifest.finished_at
    assert set(manifest.labs) == {lab}
    expected = manifest.labs[lab]
    assert expected.readings == n
    assert collector.wait_for(n, timeout=30) == n
    per_device = check_messages(collector.messages, lab)
    assert dict(expected.series) == {(d, "load"): c for d, c in per_device.items()}
    assert expected.start is not None and expected.end is not None
    for _, payload in collector.messages:
        ts = json.loads(payload)["ts"]
        assert expected.start <= datetime.fromtimestamp(ts / 1000, UTC) < expected.end


@pytest.mark.parametrize("processes", [1, 2])
def test_stop_ends_a_run_after_draining(
    mqtt_broker: tuple[str, int], lab: str, collector: Any, processes: int
) -> None:
    stop = threading.Event()

    def stop_once_publishing() -> None:  # (children take a while to start on a busy machine)
        collector.wait_for(50 * processes, timeout=60, settle=0)
        stop.set()

    timer = threading.Thread(target=stop_once_publishing)
    timer.start()
    result = run_load(
        LoadOptions(
            lab=lab, processes=processes, duration=120, rate=500, devices=4,
            host=mqtt_broker[0], port=mqtt_broker[1],
        ),
        stop,
    )  # fmt: skip
    timer.join()
    assert result.stopped and "(stopped early)" in str(result)
    assert 0 < result.messages == result.acked
    assert collector.wait_for(result.messages, timeout=30) == result.messages


@pytest.mark.parametrize("processes", [1, 2])
def test_unreachable_broker(processes: int) -> None:
    port = free_port()
    with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"):
        run_load(LoadOptions(lab="tunreachable", processes=processes, messages=10, port=port))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of messages"),
        ({"messages": 10, "duration": 1.0}, "exactly one of messages"),
        ({"messages": 10, "processes": 3, "devices": 2}, r"devices \(2\) must be at least"),
        ({"messages": 0}, "messages must be at least 1"),
        ({"duration": -1.0}, "duration must be a positive"),
        ({"messages": 10, "rate": 0.0}, "rate must be a positive"),
        ({"messages": 10, "lab": "Not A Lab"}, "lab 'Not A Lab'"),
        ({"messages": 10**11, "devices": 1}, "more than a day of milliseconds"),
    ],
)
def test_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadOptions(**{"lab": "tusage", **kwargs})


def test_the_load_command(
    mqtt_broker: tuple[str, int], lab: str, collector: Any, tmp_path: Path
) -> None:
    help_text = run_sim("load", "--help").stdout
    for option in ("--processes", "--messages", "--duration", "--rate", "--devices", "--manifest"):
        assert option in help_text
    broker = ["--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1])]
    manifest = tmp_path / "m.json"
    proc = run_sim(
        "load", "--lab", lab, "--messages", "300", "--devices", "3", "--manifest", str(manifest),
        "--mqtt-version", "5", *broker,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "load: published 300 messages" in proc.stdout
    assert collector.wait_for(300) == 300
    assert Manifest.load(manifest).messages == 300
    unreachable = run_sim("load", "--messages", "5", "--mqtt-port", str(free_port()))
    assert unreachable.returncode == 1
    assert "cannot connect to MQTT broker" in unreachable.stderr
    neither = run_sim("load")
    assert neither.returncode == 2 and "--messages N or --duration" in neither.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--processes", "0"],
        ["--messages", "many"],
        ["--duration", "-5"],
        ["--rate", "inf"],
        ["--devices", "1.5"],
    ],
)
def test_bad_option_values_are_usage_errors(argv: list[str]) -> None:
    proc = run_sim("load", *argv)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr.lower()


def test_sigint_to_the_process_group_stops_every_process_cleanly(
    mqtt_broker: tuple[str, int], lab: str, collector: Any
) -> None:
    # What Ctrl-C in a terminal does: SIGINT to the parent and its children alike. The
    # children ignore it; the parent's handler sets `stop`, which it passes on to them.
    script = textwrap.dedent(
        f"""
        import logging, signal, sys, threading
        from simulators.loadgen import LoadOptions, run_load
        if __name__ == "__main__":
            logging.basicConfig(level=logging.INFO)
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *a: stop.set())
            options = LoadOptions(lab={lab!r}, processes=2, duration=120, rate=2000, devices=4,
                                  host={mqtt_broker[0]!r}, port={mqtt_broker[1]},
                                  progress_every=0.2)
            print(run_load(options, stop), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the first progress line: both children are publishing
            if re.search(r"load: [1-9]\d* messages, \d+ messages/s", line):
                break
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "(stopped early)" in out
    assert "KeyboardInterrupt" not in err
    sent = int(out.split("published ")[1].split()[0])
    assert sent > 0
    wait_for(lambda: len(collector.messages) >= sent, timeout=30, what=f"{sent} messages")
    assert collector.wait_for(sent) == sent
