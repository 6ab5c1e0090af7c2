"""The delivery audit (`simulators.audit`) against a real worker, database and API process.

Each test publishes known readings and malformed messages for its own lab through the real
broker, waits until the worker stored them (checked in the database), builds the manifest a
run would have written, and audits it over HTTP. The pure parts (summing, comparing, the
table) have fast tests of their own at the end.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api import keys
from schemas.times import format_rfc3339
from simulators.audit import Observed, audit, build_report, compare_series, run_audit, settled
from simulators.errors import AuditError, SimulatorError
from simulators.manifest import Manifest
from simulators.options import SimSettings
from simulators.report import SUMMARY_ROWS
from tests.helpers import (
    Publisher,
    count_readings,
    free_port,
    rejected_messages,
    run_sim,
    wait_for,
)

BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# What `publish_known` stores: readings per series (aq-01 sends no2 and pm25 together).
SERIES = {("aq-01", "no2"): 10, ("aq-01", "pm25"): 10, ("sea-01", "temp"): 6}
READINGS = sum(SERIES.values())
WAIT = 1.0  # seconds without change before a failing audit reports (data is stored already)


def telemetry(lab: str, device: str) -> str:
    return f"livelab/{lab}/{device}/telemetry"


def form2(t: datetime, **values: Any) -> bytes:
    return json.dumps({"ts": format_rfc3339(t), "values": values}).encode()


def known_messages(lab: str) -> list[tuple[str, bytes]]:
    """The readings of SERIES (plus one duplicate message, stored once) and 2 malformed ones."""
    items = [
        (telemetry(lab, "aq-01"), form2(BASE + timedelta(minutes=i), no2=10.0 + i, pm25=2.0 * i))
        for i in range(10)
    ]
    items += [
        (telemetry(lab, "sea-01"), form2(BASE + timedelta(minutes=5 * i), temp=4.0 + i))
        for i in range(6)
    ]
    items.append(items[3])  # a duplicate: the same (series, time) is stored once
    items.append((telemetry(lab, "aq-01"), b"{not json"))
    items.append((telemetry(lab, "sea-01"), form2(BASE, temp="warm")))
    return items


def expected_manifest(lab: str, started_at: datetime, rejected: int = 2) -> Manifest:
    """The manifest a backfill run of `known_messages` would have written."""
    manifest = Manifest(
        mode="backfill",
        scenario="audit-test",
        seed=7,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        complete=True,
        messages=19,
        readings=READINGS + 2,
    )
    spec = manifest.lab(lab)
    for i in range(10):
        spec.add("aq-01", "no2", BASE + timedelta(minutes=i))
        spec.add("aq-01", "pm25", BASE + timedelta(minutes=i))
    for i in range(6):
        spec.add("sea-01", "temp", BASE + timedelta(minutes=5 * i))
    spec.rejections = rejected
    return manifest


@dataclass
class Stored:
    lab: str
    url: str
    key: str
    started_at: datetime

    def manifest(self, rejected: int = 2) -> Manifest:
        return expected_manifest(self.lab, self.started_at, rejected)

    def audit(self, manifest: Manifest, **kwargs: Any) -> Any:
        kwargs.setdefault("wait", WAIT)
        return audit(manifest, api_url=self.url, api_key=self.key, **kwargs)


@pytest.fixture
def stored(
    start_worker: Any,
    publisher: Publisher,
    db: psycopg.Connection,
    lab: str,
    api_server: Any,
    api_key: str,
) -> Stored:
    """SERIES and 2 rejections stored for the lab, plus one rejection from before the run."""
    start_worker()
    # A rejection before the run started: the audit must not count it.
    publisher.publish(telemetry(lab, "aq-01"), b"[1, 2")
    wait_for(lambda: rejected_messages(db, lab) == 1, what="the earlier rejection stored")
    started_at = datetime.now(UTC)
    publisher.publish_many(known_messages(lab))
    wait_for(lambda: count_readings(db, lab) >= READINGS, what="readings stored")
    wait_for(lambda: rejected_messages(db, lab) >= 3, what="rejections stored")
    assert count_readings(db, lab) == READINGS and rejected_messages(db, lab) == 3
    return Stored(lab, api_server.url, api_key, started_at)


def statuses(report: Any) -> dict[tuple[str, str], tuple[str, int]]:
    return {(r.device, r.sensor): (r.status, r.diff) for r in report.rows}


# --- Against the real services -----------------------------------------------------------------


def test_audit_passes_when_everything_was_stored_once(stored: Stored) -> None:
    report = stored.audit(stored.manifest())
    assert report.ok, report.format_table()
    assert report.problems == []
    got = [(r.lab, r.device, r.sensor, r.expected, r.stored, r.diff, r.status) for r in report.rows]
    assert got == [(stored.lab, d, s, n, n, 0, "ok") for (d, s), n in sorted(SERIES.items())]
    [lab] = report.labs
    assert (lab.rejections.expected, lab.rejections.found) == (2, 2)  # not the earlier one
    assert report.totals["expected"] == report.totals["stored"] == READINGS
    table = report.format_table()
    assert "audit: OK" in table
    for device, sensor in SERIES:
        assert any(
            device in line and sensor in line and line.endswith("ok") for line in table.splitlines()
        )


def test_audit_finds_withheld_readings_on_the_right_series(stored: Stored) -> None:
    manifest = stored.manifest()
    manifest.labs[stored.lab].series[("aq-01", "no2")] += 2  # the run says it sent 12
    report = stored.audit(manifest)
    assert not report.ok
    assert statuses(report) == {
        ("aq-01", "no2"): ("missing", -2),
        ("aq-01", "pm25"): ("ok", 0),
        ("sea-01", "temp"): ("ok", 0),
    }
    assert report.totals["missing"] == 2
    assert len(report.problems) == 1 and "2 reading(s) missing" in report.problems[0]
    assert "aq-01/no2 -2" in report.problems[0]
    assert "missing 2" in report.format_table()


def test_audit_finds_doubled_readings(stored: Stored) -> None:
    manifest = stored.manifest()
    manifest.labs[stored.lab].series[("aq-01", "pm25")] -= 3  # stored 3 more than sent
    report = stored.audit(manifest)
    assert not report.ok
    assert statuses(report)[("aq-01", "pm25")] == ("doubled", 3)
    assert [s for s, _ in statuses(report).values()].count("ok") == 2
    assert "doubled" in report.problems[0]
    assert "doubled 3" in report.format_table()


def test_audit_fails_on_a_series_the_manifest_does_not_name(stored: Stored) -> None:
    manifest = stored.manifest()
    del manifest.labs[stored.lab].series[("sea-01", "temp")]
    report = stored.audit(manifest)
    assert not report.ok
    assert statuses(report)[("sea-01", "temp")] == ("unexpected", 6)
    assert report.totals["unexpected"] == 6
    assert "unexpected" in report.problems[0]


def test_rejections_fewer_fail_more_are_a_note_unless_strict(stored: Stored) -> None:
    fewer = stored.audit(stored.manifest(rejected=3))
    assert not fewer.ok
    assert fewer.labs[0].rejections.found == 2
    assert fewer.problems == [
        f"{stored.lab}: 1 rejection(s) missing (2 of 3 found since the run started): "
        "a rejection lost is a message dropped in silence"
    ]
    assert all(r.ok for r in fewer.rows)

    more = stored.audit(stored.manifest(rejected=1))
    assert more.ok, more.format_table()
    assert any("1 more rejection(s)" in n and "redelivered" in n for n in more.notes)
    assert "more 1" in more.format_table()

    strict = stored.audit(stored.manifest(rejected=1), strict_rejections=True)
    assert not strict.ok
    assert "1 more rejection(s)" in strict.problems[0]


def test_incomplete_run_is_said_and_missing_readings_still_fail(stored: Stored) -> None:
    manifest = stored.manifest()
    manifest.complete = False
    report = stored.audit(manifest)
    assert report.ok  # everything handed to the client was stored
    assert any("incomplete" in note for note in report.notes)
    assert "INCOMPLETE" in report.format_table()
    manifest.labs[stored.lab].series[("sea-01", "temp")] += 1
    assert not stored.audit(manifest).ok


def test_open_end_counts_form_1_readings_up_to_now(
    start_worker: Any,
    publisher: Publisher,
    db: psycopg.Connection,
    lab: str,
    api_server: Any,
    api_key: str,
) -> None:
    start_worker()
    publisher.publish(telemetry(lab, "aq-01"), b'{"no2": 1.0}')  # before the run: not counted
    wait_for(lambda: count_readings(db, lab) == 1, what="the earlier reading stored")
    manifest = Manifest(mode="live", started_at=datetime.now(UTC), complete=True)
    spec = manifest.lab(lab)
    spec.open_end = True
    for device, values in (("aq-01", {"no2": 2.0, "pm25": 3.0}), ("sea-01", {"temp": 4.0})):
        sent = datetime.now(UTC)
        publisher.publish(telemetry(lab, device), json.dumps(values).encode())
        for sensor in values:
            spec.add(device, sensor, sent)
    wait_for(lambda: count_readings(db, lab) == 4, what="readings stored")
    # Saved and loaded, as `livelab-sim audit --manifest` reads it.
    report = audit(
        Manifest.model_validate_json(manifest.model_dump_json()),
        api_url=api_server.url,
        api_key=api_key,
        wait=WAIT,
    )
    assert report.ok, report.format_table()
    assert statuses(report) == {
        ("aq-01", "no2"): ("ok", 0),
        ("aq-01", "pm25"): ("ok", 0),
        ("sea-01", "temp"): ("ok", 0),
    }
    [audited] = report.labs
    assert audited.end is not None and audited.end > datetime.now(UTC) - timedelta(minutes=1)
    assert "open end" in report.format_table()


def test_audit_waits_for_ingest_to_catch_up(
    start_worker: Any,
    publisher: Publisher,
    lab: str,
    api_server: Any,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_worker()
    manifest = expected_manifest(lab, datetime.now(UTC))
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["report"] = audit(manifest, api_url=api_server.url, api_key=api_key, wait=30)
        except BaseException as exc:
            result["error"] = exc

    caplog.set_level(logging.INFO, logger="simulators")
    auditor = threading.Thread(target=run)
    auditor.start()
    # Nothing is stored yet: the audit must wait and see the readings arrive.
    wait_for(
        lambda: any("waiting for ingest: 0 of 26 readings stored" in m for m in caplog.messages),
        what="the audit waiting",
    )
    publisher.publish_many(known_messages(lab))
    auditor.join(60)
    assert not auditor.is_alive()
    assert "error" not in result, result.get("error")
    assert result["report"].ok, result["report"].format_table()


def test_long_ranges_are_split_when_the_server_refuses_them(
    start_worker: Any,
    publisher: Publisher,
    db: psycopg.Connection,
    lab: str,
    start_api: Any,
    api_key: str,
) -> None:
    start_worker()
    times = [BASE + timedelta(days=d, hours=d % 5) for d in range(0, 200, 7)]
    publisher.publish_many([(telemetry(lab, "aq-01"), form2(t, no2=1.0)) for t in times])
    wait_for(lambda: count_readings(db, lab) == len(times), what="readings stored")
    manifest = Manifest(mode="backfill", started_at=datetime.now(UTC), complete=True)
    for t in times:
        manifest.lab(lab).add("aq-01", "no2", t)
    small = start_api(LIVELAB_API_MAX_BUCKETS="3")  # 90 days of 1mo buckets at most
    whole = httpx.get(
        f"{small.url}/v1/labs/{lab}/aggregates",
        params={"start": format_rfc3339(BASE), "end": format_rfc3339(times[-1]), "bucket": "1mo"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert whole.status_code == 400 and "limit" in whole.json()["detail"]
    report = audit(manifest, api_url=small.url, api_key=api_key, wait=WAIT)
    assert report.ok, report.format_table()
    assert statuses(report) == {("aq-01", "no2"): ("ok", 0)}
    assert report.rows[0].stored == len(times)


def test_a_lab_the_key_cannot_see_fails_clearly(stored: Stored, db: psycopg.Connection) -> None:
    other, _ = keys.create_key(db, "other", [stored.lab + "-other"])
    report = audit(stored.manifest(), api_url=stored.url, api_key=other, wait=WAIT)
    assert not report.ok
    assert report.labs[0].error is not None
    assert "404" in report.problems[0] and stored.lab in report.problems[0]


def test_a_wrong_key_is_an_audit_error_and_exit_3(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AuditError, match=r"refused the key \(401\)") as caught:
        audit(stored.manifest(), api_url=stored.url, api_key="llk_wrong", wait=WAIT)
    assert isinstance(caught.value, SimulatorError)
    code = run_audit(stored.manifest(), api_url=stored.url, api_key="llk_x")
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    assert err.startswith("livelab-sim: error: the API refused the key (401)")


def test_an_unreachable_api_is_exit_3_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    manifest = expected_manifest("somelab", datetime.now(UTC))
    code = run_audit(manifest, api_url=url, api_key="llk_x", wait=0)
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    assert err == (
        f"livelab-sim: error: cannot reach the API at {url}: connection refused; "
        "is `livelab-api serve` running?\n"
    )


def test_run_audit_prints_the_table_exits_0_or_1_and_writes_json(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    stored.manifest().save(path)
    report_path = tmp_path / "audit.json"
    args: dict[str, Any] = {
        "api_url": stored.url,
        "api_key": stored.key,
        "wait": 1,
        "json_path": report_path,
    }
    assert run_audit(Manifest.load(path), **args) == 0
    out, err = capsys.readouterr()
    assert "audit: OK" in out and err == ""
    assert any(line.split()[:3] == [stored.lab, "aq-01", "no2"] for line in out.splitlines())
    body = json.loads(report_path.read_text())
    assert body["ok"] is True and body["totals"]["stored"] == READINGS
    assert {(r["device"], r["sensor"]): r["status"] for r in body["labs"][0]["series"]} == {
        key: "ok" for key in SERIES
    }

    bad = stored.manifest()
    bad.labs[stored.lab].series[("sea-01", "temp")] += 4
    assert run_audit(bad, **args) == 1
    out, _ = capsys.readouterr()
    assert "missing 4" in out and "audit: FAILED" in out
    body = json.loads(report_path.read_text())
    assert body["ok"] is False and body["totals"]["missing"] == 4


def test_run_audit_needs_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_audit(expected_manifest("somelab", datetime.now(UTC)), api_url="x", api_key=None)
    assert code == 2
    assert "--api-key" in capsys.readouterr().err


# --- Pure parts ----------------------------------------------------------------------------------


def test_cli_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIVELAB_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LIVELAB_API_KEY", "llk_env")
    settings = SimSettings()
    assert (settings.api_url, settings.api_key) == ("http://127.0.0.1:9", "llk_env")
    path = tmp_path / "run.json"
    expected_manifest("somelab", datetime.now(UTC)).save(path)
    proc = run_sim("audit", "--manifest", str(path), "--wait", "0")  # asks the API of the env
    assert proc.returncode == 3 and "cannot reach the API at http://127.0.0.1:9" in proc.stderr
    assert run_sim("audit", "--manifest", str(path), "--wait", "-1").returncode == 2


def test_compare_series_statuses() -> None:
    expected = Counter({("a", "x"): 5, ("a", "y"): 5, ("b", "x"): 5, ("c", "z"): 3})
    stored = Counter({("a", "x"): 5, ("a", "y"): 3, ("b", "x"): 7, ("d", "q"): 2})
    rows = compare_series("lab", expected, stored)
    assert [(r.device, r.sensor, r.expected, r.stored, r.diff, r.status) for r in rows] == [
        ("a", "x", 5, 5, 0, "ok"),
        ("a", "y", 5, 3, -2, "missing"),
        ("b", "x", 5, 7, 2, "doubled"),
        ("c", "z", 3, 0, -3, "missing"),
        ("d", "q", 0, 2, 2, "unexpected"),
    ]
    assert [r.status_text() for r in rows] == [
        "ok",
        "missing 2",
        "doubled 2",
        "missing 3",
        "unexpected 2",
    ]


def _big_manifest(devices: int, sensors: int) -> Manifest:
    manifest = Manifest(mode="load", scenario="big", started_at=BASE, complete=True)
    spec = manifest.lab("big")
    for d in range(devices):
        for s in range(sensors):
            spec.add(f"dev-{d:02d}", f"s{s:02d}", BASE, n=100)
    return manifest


def test_settled_means_every_count_matches() -> None:
    manifest = _big_manifest(2, 2)
    manifest.labs["big"].rejections = 1
    stored = Counter(manifest.labs["big"].series)
    assert settled(manifest, {"big": Observed(stored=stored, rejections=1)})
    assert settled(manifest, {"big": Observed(stored=stored, rejections=5)})  # more: final
    assert not settled(manifest, {"big": Observed(stored=stored, rejections=0)})
    assert not settled(manifest, {"big": Observed(stored=stored - Counter({("dev-00", "s00"): 1}))})
    assert not settled(manifest, {"big": Observed(error="404")})


def test_a_big_table_lists_problems_and_sums_up_ok_series_per_device() -> None:
    manifest = _big_manifest(10, 8)  # 80 series: more than SUMMARY_ROWS
    stored = Counter(manifest.labs["big"].series)
    stored[("dev-03", "s05")] -= 7
    stored[("dev-07", "s01")] += 1
    report = build_report(manifest, {"big": Observed(BASE, BASE, stored, 0)})
    assert len(report.rows) == 80 > SUMMARY_ROWS
    lines = report.format_table().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("LAB"))
    body = lines[header + 1 : header + 1 + 12]  # 10 device lines + 2 problem rows
    assert sum("(8 series)" in line for line in body) == 8
    assert sum("(7 series)" in line for line in body) == 2
    assert any("dev-03" in line and "s05" in line and line.endswith("missing 7") for line in body)
    assert any("dev-07" in line and "s01" in line and line.endswith("doubled 1") for line in body)
    assert lines[header + 13].startswith("(80 series of 10 devices")
    # Columns line up: every body row is as wide as the header, or narrower only at the end.
    assert all(line.index("big") == 0 for line in body)
    assert not report.ok and len(report.problems) == 2
    assert lines[-1] == "audit: FAILED (2 problem(s))"


def test_a_small_table_lists_every_series() -> None:
    manifest = _big_manifest(2, 3)
    report = build_report(
        manifest, {"big": Observed(BASE, BASE, Counter(manifest.labs["big"].series), 0)}
    )
    table = report.format_table()
    assert report.ok and table.endswith("audit: OK\n")
    assert sum(line.endswith(" ok") for line in table.splitlines()) == 6 + 1  # + rejections
    assert "(3 series)" not in table
    json.dumps(report.model_dump(mode="json"))  # serialisable


def test_to_json_has_every_row_and_the_verdict() -> None:
    manifest = _big_manifest(1, 2)
    manifest.complete = False
    manifest.labs["big"].rejections = 2
    stored = Counter({("dev-00", "s00"): 100, ("dev-00", "s01"): 99, ("zz", "extra"): 1})
    body = build_report(manifest, {"big": Observed(BASE, BASE, stored, 3)}).model_dump(mode="json")
    assert body["ok"] is False and body["complete"] is False
    assert [(r["sensor"], r["diff"], r["status"]) for r in body["labs"][0]["series"]] == [
        ("s00", 0, "ok"),
        ("s01", -1, "missing"),
        ("extra", 1, "unexpected"),
    ]
    assert body["labs"][0]["rejections"] == {"expected": 2, "found": 3}
    assert body["totals"]["missing"] == 1 and body["totals"]["unexpected"] == 1
    assert any("incomplete" in note for note in body["notes"])
    assert any("redelivered" in note for note in body["notes"])
