"""End to end on the real services: simulator -> Mosquitto -> ingest worker -> TimescaleDB -> API.

The simulator CLI publishes a few hours of the demo lab (QoS 1, original timestamps) and records
every reading it sent; the test computes the aggregates itself from that record (pandas) and
compares them with what the API answers.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api import keys
from api.app import create_app
from api.settings import Settings
from schemas.times import format_rfc3339
from tests.helpers import count_readings, wait_for

START, END = "2026-03-28T20:00:00Z", "2026-03-29T04:00:00Z"  # across Stockholm's DST change


@pytest.fixture
def published(start_worker, mqtt_broker, db, lab, tmp_path: Path) -> pd.DataFrame:
    start_worker()
    record = tmp_path / "sent.csv"
    run = subprocess.run(
        [
            sys.executable, "-m", "simulators", "backfill",
            "--lab", lab, "--start", START, "--end", END, "--interval", "5m",
            "--devices", "aq-01,sea-01,energy-01",
            "--mqtt-host", mqtt_broker[0], "--mqtt-port", str(mqtt_broker[1]),
            "--record", str(record),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    sent = pd.read_csv(record)
    sent["time"] = pd.to_datetime(sent["time"], utc=True)
    assert len(sent) > 300
    wait_for(lambda: count_readings(db, lab) >= len(sent), timeout=60, what="readings stored")
    assert count_readings(db, lab) == len(sent)
    return sent


def _expected(sent: pd.DataFrame, freq: str, tz: str) -> pd.DataFrame:
    frame = sent.assign(bucket=sent["time"].dt.tz_convert(tz).dt.floor(freq))
    grouped = frame.groupby(["device", "sensor", "bucket"])["value"]
    out = grouped.agg(["mean", "min", "max", "sum", "count"]).reset_index()
    out["bucket"] = out["bucket"].map(lambda b: format_rfc3339(b.to_pydatetime()))
    return out.rename(columns={"mean": "avg"}).sort_values(["device", "sensor", "bucket"])


def _api(database_url: str, lab: str, db, **params: str) -> pd.DataFrame:
    key, _ = keys.create_key(db, "e2e", [lab])
    with TestClient(create_app(Settings(database_url=database_url))) as client:
        resp = client.get(
            f"/v1/labs/{lab}/aggregates",
            params={"start": START, "end": END, "stats": "avg,min,max,sum,count", **params},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["next"] is None
        csv = client.get(
            f"/v1/labs/{lab}/aggregates",
            params={"start": START, "end": END, "stats": "avg,count", "format": "csv", **params},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert csv.status_code == 200, csv.text
        from_csv = pd.read_csv(io.StringIO(csv.text))
        assert list(from_csv.columns) == ["device", "sensor", "bucket", "avg", "count"]
        assert len(from_csv) == len(body["data"])
    return pd.DataFrame(body["data"]).sort_values(["device", "sensor", "bucket"])


@pytest.mark.parametrize(("bucket", "freq", "tz"), [("1h", "1h", "UTC"), ("15m", "15min", "UTC")])
def test_api_aggregates_equal_what_was_published(
    published: pd.DataFrame, database_url: str, lab: str, db, bucket: str, freq: str, tz: str
) -> None:
    got = _api(database_url, lab, db, bucket=bucket, tz=tz)
    want = _expected(published, freq, tz)
    assert len(got) == len(want) > 0
    for column in ("device", "sensor", "bucket", "count"):
        assert got[column].tolist() == want[column].tolist(), column
    for column in ("avg", "min", "max", "sum"):
        assert got[column].tolist() == pytest.approx(want[column].tolist(), rel=1e-9), column


def test_api_daily_buckets_follow_stockholm_days(
    published: pd.DataFrame, database_url: str, lab: str, db
) -> None:
    got = _api(database_url, lab, db, bucket="1d", tz="Europe/Stockholm")
    # 20:00Z on 28 March is 21:00 in Stockholm (UTC+1); 04:00Z on 29 March is 06:00 (UTC+2).
    assert sorted(set(got["bucket"])) == ["2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00"]
    want = _expected(published, "1D", "Europe/Stockholm")
    assert got["count"].tolist() == want["count"].tolist()
    assert got["avg"].tolist() == pytest.approx(want["avg"].tolist(), rel=1e-9)


def test_rejections_reach_the_lab_team_through_the_api(
    start_worker, publisher, database_url: str, lab: str, db
) -> None:
    worker = start_worker(ingest_http_port=0)
    topic = f"livelab/{lab}/aq-01/telemetry"
    publisher.publish(topic, b'{"no2": 17.4, "pm25": "high"}')
    publisher.publish(topic, b"\x00not json")
    wait_for(lambda: worker.metrics.rejections._value.get() == 2, what="two rejections stored")
    key, _ = keys.create_key(db, "team", [lab])
    other, _ = keys.create_key(db, "other-team", ["someone-else"])
    with TestClient(create_app(Settings(database_url=database_url))) as client:
        resp = client.get(f"/v1/labs/{lab}/rejections", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200, resp.text
        rows = resp.json()["data"]
        assert [r["topic"] for r in rows] == [topic, topic]
        newest, oldest = rows
        assert newest["reason"].startswith("malformed JSON")
        assert "value of sensor 'pm25' is a string" in oldest["reason"]
        assert oldest["rejected_count"] == 1
        assert oldest["payload"] == '{"no2": 17.4, "pm25": "high"}'
        # Another lab's key does not even learn that the lab exists.
        hidden = client.get(
            f"/v1/labs/{lab}/rejections", headers={"Authorization": f"Bearer {other}"}
        )
        assert hidden.status_code == 404


def test_repeated_rejections_are_one_row_with_a_count_through_the_api(
    start_worker, publisher, database_url: str, lab: str, db
) -> None:
    worker = start_worker(ingest_http_port=0)
    topic = f"livelab/{lab}/broken/telemetry"
    publisher.publish_many([(topic, b"not json %d" % i) for i in range(30)])
    wait_for(lambda: worker.metrics.rejections._value.get() == 30, what="30 rejections stored")
    key, _ = keys.create_key(db, "team", [lab])
    with TestClient(create_app(Settings(database_url=database_url))) as client:
        resp = client.get(f"/v1/labs/{lab}/rejections", headers={"Authorization": f"Bearer {key}"})
        rows = resp.json()["data"]
    assert sum(r["count"] for r in rows) == 30
    assert len(rows) <= 2  # one row, or two where a merge interval ends during the test
    first = rows[-1]
    assert first["payload"] == "not json 0"
    assert first["last_received_at"] >= first["received_at"]
