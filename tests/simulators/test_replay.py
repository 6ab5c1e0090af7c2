"""Replay of a CSV file of readings: what a recorded run sent can be sent again, exactly."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.options import RunOptions
from simulators.replay import ReplayError, read_readings
from simulators.runner import backfill
from tests.helpers import run_sim

START = datetime(2026, 6, 1, tzinfo=UTC)


def test_a_recorded_run_replays_to_another_lab_and_verifies(
    mqtt_broker: tuple[str, int],
    lab: str,
    collector: Any,
    read_csv: Any,
    start_worker: Any,
    api_server: Any,
    api_key: str,
    tmp_path: Path,
) -> None:
    # Record a run of another lab (not stored: no worker listens to it).
    recorded = tmp_path / "recorded.csv"
    backfill(START, START + timedelta(hours=3), RunOptions(
        lab="elsewhere", devices=["aq-01", "sea-01", "energy-01"], host=mqtt_broker[0],
        port=mqtt_broker[1], record=recorded, progress=False,
    ))  # fmt: skip
    start_worker()
    replayed = tmp_path / "replayed.csv"
    proc = run_sim(
        "replay", str(recorded), "--lab", lab, "--record", str(replayed), "--verify",
        "--api-url", api_server.url, "--api-key", api_key, "--wait", "5",
        "--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1]),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "audit: OK" in proc.stdout  # every reading stored exactly once
    assert (
        f"{len(read_csv(recorded))} readings expected, {len(read_csv(recorded))} stored"
        in proc.stdout
    )
    original = read_csv(recorded)
    expected = sorted((lab, *row[1:]) for row in original)
    assert sorted(read_csv(replayed)) == expected
    collector.wait_for(1)
    assert sorted(collector.rows()) == expected


def test_paced_replay_keeps_the_original_spacing(
    mqtt_broker: tuple[str, int], lab: str, collector: Any, tmp_path: Path
) -> None:
    path = tmp_path / "two-hours.csv"
    rows = ["lab,device,sensor,time,value"]
    rows += [f"x,d,s,2026-06-01T{h:02d}:00:00Z,{h}" for h in range(3)]  # 0:00, 1:00, 2:00
    path.write_text("\n".join(rows) + "\n")
    began = time.monotonic()
    proc = run_sim(
        "replay", str(path), "--lab", lab, "--speed", "3600", "-q",
        "--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1]),
    )  # fmt: skip
    elapsed = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr
    assert elapsed >= 2.0  # 2 hours at 3600x: the last message waits 2 s
    assert collector.wait_for(3) == 3
    assert [v for *_, v in collector.rows()] == [0.0, 1.0, 2.0]


def test_repeated_rows_are_sent_once_with_the_first_value(tmp_path: Path) -> None:
    path = tmp_path / "repeats.csv"
    path.write_text(
        "device,sensor,time,value,extra\n"
        "d,s,2026-06-01T00:01:00+02:00,2,x\n"
        "d,s,2026-06-01T00:00:00+02:00,1,x\n"
        "d,s,2026-05-31T22:01:00Z,3,x\n"
    )
    rows, repeats = read_readings(path, lab="x")
    assert repeats == 1
    assert [r[4] for r in rows] == [1, 2]
    assert [r[3] for r in rows] == [
        int(datetime(2026, 5, 31, 22, m, tzinfo=UTC).timestamp() * 1000) for m in (0, 1)
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("device,sensor,value\nd,s,1\n", "missing column(s) lab (or give --lab), time"),
        ("lab,device,sensor,time,value\n", "no readings after the header"),
        (
            "lab,device,sensor,time,value\nx,d,s,2026-06-01T00:00:00,1\n",
            "line 2: time is not RFC 3339",
        ),
        (
            "lab,device,sensor,time,value\nx,d,s,2026-06-01T00:00:00Z,1\nx,d,s,yesterday,2\n",
            "line 3",
        ),
        (
            "lab,device,sensor,time,value\nx,d,s,2026-06-01T00:00:00Z,high\n",
            "value is not a finite number",
        ),
        ("lab,device,sensor,time,value\nx,D 1,s,2026-06-01T00:00:00Z,1\n", "device name 'D 1'"),
        ("lab,device,sensor,time,value\nx,d,s,2026-06-01T00:00:00Z,nan\n", "not a finite number"),
    ],
)
def test_files_that_cannot_be_replayed_say_where_and_why(
    content: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ReplayError) as err:
        read_readings(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_replay_cli_errors_exit_2(tmp_path: Path) -> None:
    missing = run_sim("replay", str(tmp_path / "none.csv"), "--mqtt-port", "1")
    assert missing.returncode == 2 and "none.csv: no such file" in missing.stderr
    form1 = run_sim("replay", str(tmp_path / "none.csv"), "--form", "1")
    assert form1.returncode == 2 and "usage:" in form1.stderr.lower()
