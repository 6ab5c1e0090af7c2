"""Backfill and live runs against the real Mosquitto, via the Python API and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.errors import BrokerUnreachable
from simulators.options import RunOptions
from simulators.publisher import Publisher
from simulators.runner import backfill, live
from tests.helpers import DroppingProxy, free_port, run_sim
from tests.simulators.reference import OCEANHAMNEN, generate

START = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
N_DEVICES = len(OCEANHAMNEN.devices)


def broker_args(mqtt_broker: tuple[str, int]) -> list[str]:
    return ["--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1])]


def test_backfill_api_publishes_what_it_records(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "readings.csv"
    end = START + timedelta(minutes=10)
    summary = backfill(START, end, RunOptions(
        lab=lab, interval=60, form=2, host=mqtt_broker[0], port=mqtt_broker[1], record=record,
    ))  # fmt: skip
    assert summary.messages == 10 * N_DEVICES
    assert collector.wait_for(summary.messages) == summary.messages
    topics = Counter(topic for topic, _ in collector.messages)
    assert topics == {f"livelab/{lab}/{d}/telemetry": 10 for d in OCEANHAMNEN.device_names}
    recorded = read_csv(record)
    assert len(recorded) == summary.readings
    assert sorted(collector.rows()) == sorted(recorded)
    expected = [
        (r.lab, r.device, r.sensor, r.time, float(r.value)) for r in generate(lab, START, end, 60)
    ]
    assert recorded == expected


def test_backfill_form3_batches(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "readings.csv"
    options = RunOptions(
        lab=lab, interval=60, devices=["aq-01", "energy-01"], form=3, batch=50,
        ts_format="epoch_ms", qos=0, host=mqtt_broker[0], port=mqtt_broker[1], record=record,
    )  # fmt: skip
    summary = backfill(START, START + timedelta(hours=1), options)
    assert summary.readings == 60 * 5
    # 60 instants of each device, at most 50 instants per message: 2 messages per device
    assert summary.messages == 4
    collector.wait_for(summary.messages)
    assert len(collector.messages) == 4
    assert [len(json.loads(p)) for _, p in collector.messages] == [50, 50, 10, 10]
    assert sorted(collector.rows()) == sorted(read_csv(record))


def test_backfill_cli(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "cli.csv"
    proc = run_sim(
        "backfill",
        "--lab", lab,
        "--start", "2026-06-01T08:00:00+02:00",
        "--end", "2026-06-01T09:00:00+02:00",
        "--interval", "5m",
        "--devices", "aq-02,sea-01",
        "--devices", "parking-01",
        "--ts-format", "ms",
        "--record", str(record),
        *broker_args(mqtt_broker),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # aq-02 and parking-01 (form 1 in the scenario, form 2 in a backfill): a message per
    # instant; sea-01 batches 3 instants per message (form 3): 12 + 12 + 4
    assert re.search(r"published 28 messages \(96 readings\)", proc.stdout), proc.stdout
    assert collector.wait_for(28) == 28
    assert {t.split("/")[2] for t, _ in collector.messages} == {"aq-02", "sea-01", "parking-01"}
    recorded = read_csv(record)
    assert sorted(collector.rows()) == sorted(recorded)
    # Same seed in another process: same readings as generated here (no per-process hashing).
    expected = generate(
        lab, START, START + timedelta(hours=1), 300, 22, ["aq-02", "sea-01", "parking-01"]
    )
    assert sorted(recorded) == sorted(
        (r.lab, r.device, r.sensor, r.time, float(r.value)) for r in expected
    )


def test_live_cli_publishes_at_about_the_requested_rate(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "live.csv"
    proc = run_sim(
        "live", "--lab", lab, "--duration", "2", "--rate", "20", "--form", "1",
        "--record", str(record),
        *broker_args(mqtt_broker),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"live: published (\d+) messages \((\d+) readings\)", proc.stdout)
    assert m, proc.stdout
    sent = int(m.group(1))
    assert 20 <= sent <= 60  # 40 expected; loose on purpose
    assert collector.wait_for(sent) == sent
    # form 1: no time in the payload; the record holds the publish time, close to now
    rows = collector.rows()
    assert all(t is None for *_, t, _ in rows)
    recorded = read_csv(record)
    assert len(recorded) == len(rows) == int(m.group(2))
    assert sorted((d, s, v) for _, d, s, _, v in rows) == sorted(
        (d, s, v) for _, d, s, _, v in recorded
    )
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=1) < t <= now for *_, t, _ in recorded)


def test_live_api_history_then_live_until_stopped(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "live.csv"
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    options = RunOptions(
        lab=lab, form=2, host=mqtt_broker[0], port=mqtt_broker[1], record=record, stop=stop
    )
    summary = live(
        options, history=timedelta(minutes=30), history_interval=timedelta(minutes=5), rate=30
    )
    assert summary.stopped
    assert summary.history is not None
    assert summary.history.messages in (5 * N_DEVICES, 6 * N_DEVICES)  # 30 min at 5 min
    assert 10 <= summary.messages <= 60
    total = summary.history.messages + summary.messages
    assert collector.wait_for(total) == total
    assert sorted(collector.rows()) == sorted(read_csv(record))


def test_unreachable_broker_exits_1_with_a_clear_message() -> None:
    port = free_port()
    proc = run_sim("backfill", "--start", "now-1h", "--end", "now", "--mqtt-port", str(port))
    assert proc.returncode == 1
    assert f"cannot connect to MQTT broker at 127.0.0.1:{port}" in proc.stderr
    with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"), Publisher(port=port):
        pass


@pytest.mark.parametrize(
    "args",
    [
        ["live", "--rate", "0"],
        ["live", "--rate", "5", "--interval", "10s"],
        ["live", "--history", "6 hours"],
        ["live", "--form", "4"],
        ["live", "--lab", "Oceanhamnen"],
        ["live", "--devices", "aq-99"],
        ["backfill", "--start", "now"],
        ["backfill", "--start", "2026-06-01T00:00:00", "--end", "now"],
        ["backfill", "--start", "now", "--end", "now-1h"],
        ["backfill", "--start", "now-1h", "--end", "now", "--form", "1"],
        ["backfill", "--start", "now-1h", "--end", "now", "--batch", "0"],
        ["backfill", "--start", "now-1h", "--end", "now", "--mqtt-port", "http"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run_sim(*args)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr.lower()


def test_help_and_devices() -> None:
    for cmd in ([], ["live"], ["backfill"]):
        proc = run_sim(*cmd, "--help")
        assert proc.returncode == 0 and "Usage: livelab-sim" in proc.stdout
    proc = run_sim("devices")
    assert proc.returncode == 0
    assert all(d in proc.stdout for d in OCEANHAMNEN.device_names)


def test_sigint_stops_live_cleanly(mqtt_broker: tuple[str, int], lab: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "live", "--lab", lab, "--rate", "50",
         *broker_args(mqtt_broker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "(stopped early)" in out
    assert "SIGINT: stopping" in err


def test_backfill_survives_a_dropped_connection(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    tmp_path: Path,
) -> None:
    proxy = DroppingProxy(mqtt_broker)
    record = tmp_path / "readings.csv"
    result: dict[str, Any] = {}

    def run() -> None:
        options = RunOptions(
            lab=lab, interval=10, devices=["energy-01"], port=proxy.port, record=record
        )
        result["summary"] = backfill(START, START + timedelta(hours=12), options)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while len(collector.messages) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.cut()  # mid-run, with messages in flight
    thread.join(timeout=20)
    proxy.close()
    assert not thread.is_alive()
    assert proxy.accepted >= 2, "the publisher did not reconnect"
    summary = result["summary"]
    assert summary.messages == 12 * 360
    collector.wait_for(summary.messages)
    # At least once: every recorded reading arrived (a re-sent one may arrive twice).
    assert set(collector.rows()) == set(read_csv(record))


def test_live_serves_prometheus_metrics(mqtt_broker, lab) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "live", "--lab", lab, "--rate", "50",
         "--duration", "3", "--metrics-port", str(port), "-q",
         "--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def published() -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("livelab_sim_messages_published_total"):
                return float(line.split()[1])
        return 0.0

    try:
        # The counter exists at 0 from start-up: it must count what is published.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and published() <= 0:
            time.sleep(0.1)
        assert published() > 0
    finally:
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "live: published" in out.decode()


def test_backfill_shows_progress_with_rate_and_eta_on_a_terminal(
    mqtt_broker: tuple[str, int], lab: str
) -> None:
    main, child = pty.openpty()  # stderr is a terminal (one that reports no size, too)
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "backfill", "--lab", lab,
         "--start", "2026-01-01T00:00:00Z", "--end", "2026-01-03T00:00:00Z",
         *broker_args(mqtt_broker)],
        stdout=subprocess.PIPE, stderr=child, text=True,
    )  # fmt: skip
    os.close(child)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the process closed the terminal
        while chunk := os.read(main, 65536):
            seen += chunk
    os.close(main)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    lines = seen.decode(errors="replace").split("\r")  # redrawn in place
    # "backfill: 18812 readings of 67584 (28%), ETA 2 s, 37300 readings/s, 6521 messages, ..."
    pattern = r"^backfill: \d+ readings of 67584 \(\d+%\), ETA (\d+ s|\?), \d+ readings/s"
    assert any(re.search(pattern, line) for line in lines), lines
    assert "published" in out


def test_live_runs_thousands_of_devices_each_on_its_own_interval(
    mqtt_broker: tuple[str, int], lab: str, collector: Any, tmp_path: Path
) -> None:
    scenario = tmp_path / "city.toml"
    scenario.write_text(
        '[[labs]]\nname = "city"\n'
        '[[labs.devices]]\nname = "t-{i:04d}"\ncount = 2000\ninterval = "1s"\n'
        'sensors = [{ name = "temperature", model = "temperature" }]\n'
        '[[labs.devices]]\nname = "slow"\ninterval = "1h"\n'
        'sensors = [{ name = "level", model = "sea_level" }]\n'
    )
    proc = run_sim(
        "live", "--scenario", str(scenario), "--lab", lab, "--duration", "3", "-q",
        *broker_args(mqtt_broker),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"live: published (\d+) messages", proc.stdout)
    assert m, proc.stdout
    sent = int(m.group(1))
    assert collector.wait_for(sent, timeout=20) == sent
    per_device = Counter(topic.split("/")[2] for topic, _ in collector.messages)
    # 3 s at one message per second each (staggered, so 2 to 4 per device); the hourly
    # device has not had its turn yet (or once, if its phase fell in these 3 s).
    assert len([d for d in per_device if d.startswith("t-")]) == 2000
    assert {n for d, n in per_device.items() if d.startswith("t-")} <= {2, 3, 4}
    assert per_device["slow"] <= 1
