"""End to end: `livelab-sim` runs with faults, a real worker stores them, and the delivery audit
(`--verify`, `livelab-sim audit`) asks the real API whether every reading is there once.

The audit must pass on a clean run and on a run with every fault injected, and must fail,
naming the series, when readings are withheld from the database after the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from simulators.manifest import Manifest
from tests.helpers import count_readings, rejected_messages, run_sim, wait_for


@pytest.fixture
def ingesting(
    start_worker: Any, mqtt_broker: tuple[str, int], api_server: Any, api_key: str, lab: str
) -> list[str]:
    """A worker storing the test's lab; the options that point a run at it and the API."""
    start_worker()
    return [
        "--lab", lab, "--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1]),
        "--api-url", api_server.url, "--api-key", api_key, "--wait", "5", "-q",
    ]  # fmt: skip


def test_clean_backfill_verifies_and_withheld_readings_fail_the_audit(
    ingesting: list[str],
    api_server: Any,
    api_key: str,
    db: psycopg.Connection,
    lab: str,
    tmp_path: Path,
) -> None:
    manifest_path = tmp_path / "run.json"
    proc = run_sim(
        "backfill", "--start", "2026-03-28T00:00:00+01:00", "--end", "2026-03-29T12:00:00+02:00",
        "--manifest", str(manifest_path), "--verify",
        *ingesting,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = Manifest.load(manifest_path)
    expected = manifest.labs[lab].readings
    assert manifest.complete and expected == count_readings(db, lab) > 2000
    assert f"{expected} readings expected, {expected} stored" in proc.stdout, proc.stdout
    assert "audit: OK" in proc.stdout
    assert "aq-01" in proc.stdout and "energy-01" in proc.stdout

    # Withhold readings: take 3 of aq-02/no2 and 1 of sea-01/level out of the database.
    with db.cursor() as cur:
        cur.execute(
            "DELETE FROM readings WHERE (series_id, time) IN (SELECT r.series_id, r.time "
            "FROM readings r JOIN series s ON s.id = r.series_id WHERE s.lab = %s AND "
            "s.device = 'aq-02' AND s.sensor = 'no2' ORDER BY r.time LIMIT 3)",
            (lab,),
        )
        cur.execute(
            "DELETE FROM readings WHERE (series_id, time) IN (SELECT r.series_id, r.time "
            "FROM readings r JOIN series s ON s.id = r.series_id WHERE s.lab = %s AND "
            "s.device = 'sea-01' AND s.sensor = 'level' ORDER BY r.time DESC LIMIT 1)",
            (lab,),
        )
    report = tmp_path / "report.json"
    audited = run_sim(
        "audit", "--manifest", str(manifest_path), "--api-url", api_server.url,
        "--api-key", api_key, "--wait", "1", "--json", str(report),
    )  # fmt: skip
    assert audited.returncode == 1, audited.stdout + audited.stderr
    missing = {
        (row["device"], row["sensor"]): row["diff"]
        for lab_report in json.loads(report.read_text())["labs"]
        for row in lab_report["series"]
        if row["status"] != "ok"
    }
    assert missing == {("aq-02", "no2"): -3, ("sea-01", "level"): -1}
    assert re.search(r"aq-02\s+no2\s+\d+\s+\d+\s+-3\s+missing", audited.stdout), audited.stdout


def test_rehearsal_with_every_fault_verifies_exactly(
    ingesting: list[str], db: psycopg.Connection, lab: str, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "run.json"
    proc = run_sim(
        "backfill", "--scenario", "rehearsal", "--start", "2026-05-01T00:00:00Z",
        "--end", "2026-05-02T00:00:00Z", "--fault", "malformed=0.05",
        "--manifest", str(manifest_path), "--verify", "--strict-rejections",
        *ingesting,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = Manifest.load(manifest_path)
    faults = manifest.faults
    for kind in ("drop", "duplicate", "out_of_order", "late", "malformed", "burst", "offline"):
        assert faults[kind] > 0, (kind, dict(faults))
        assert re.search(rf"^\s+{kind}\s+{faults[kind]}\s", proc.stdout, re.M), proc.stdout
    assert count_readings(db, lab) == manifest.labs[lab].readings
    assert rejected_messages(db, lab) == manifest.labs[lab].rejections == faults["malformed"]


def test_live_run_with_form_1_and_senml_verifies(
    ingesting: list[str], db: psycopg.Connection, lab: str, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "live.json"
    proc = run_sim(
        "live", "--rate", "40", "--duration", "3", "--history", "30m", "--fault", "duplicate=0.2",
        "--manifest", str(manifest_path), "--verify",
        *ingesting,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = Manifest.load(manifest_path)
    assert manifest.labs[lab].open_end  # parking-01 speaks form 1
    wait_for(lambda: count_readings(db, lab) == manifest.labs[lab].readings, what="all stored")
