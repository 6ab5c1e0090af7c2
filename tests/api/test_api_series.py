"""/sensors, /latest, /readings (paginated) and /rejections (paginated)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def iso(dt: datetime) -> str:
    text = dt.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@pytest.fixture
def lab_data(lab: str, add_series: Callable[..., int]) -> dict[tuple[str, str], list[Any]]:
    rng = random.Random(3)
    data: dict[tuple[str, str], list[Any]] = {}
    base = utc(2026, 6, 1)
    for device, sensor, unit in [
        ("dev-b", "no2", "ug/m3"),
        ("dev-a", "t", "Cel"),
        ("dev-a", "no2", None),
    ]:
        times = sorted({base + timedelta(seconds=rng.randrange(0, 3600)) for _ in range(50)})
        # a few times shared between series, to exercise the (time, series) ordering
        times = sorted(set(times) | {base + timedelta(minutes=10), base + timedelta(minutes=20)})
        readings = [(t, rng.uniform(0, 100)) for t in times]
        add_series(lab, device, sensor, readings, unit=unit)
        data[(device, sensor)] = readings
    return data


def test_sensors(client: TestClient, lab: str, auth: dict[str, str], lab_data: Any) -> None:
    resp = client.get(f"/v1/labs/{lab}/sensors", headers=auth)
    assert resp.status_code == 200
    body = resp.json()
    assert body["next"] is None
    want = [
        {
            "device": d,
            "sensor": s,
            "unit": {"no2": "ug/m3", "t": "Cel"}.get(s) if (d, s) != ("dev-a", "no2") else None,
            "first_reading": iso(lab_data[(d, s)][0][0]),
            "last_reading": iso(lab_data[(d, s)][-1][0]),
            "reading_count": len(lab_data[(d, s)]),
        }
        for d, s in sorted(lab_data)
    ]
    assert body["data"] == want
    resp = client.get(
        f"/v1/labs/{lab}/sensors", params={"device": "dev-a", "sensor": "t"}, headers=auth
    )
    assert [(r["device"], r["sensor"]) for r in resp.json()["data"]] == [("dev-a", "t")]


def test_latest(
    client: TestClient,
    lab: str,
    auth: dict[str, str],
    lab_data: Any,
    add_series: Callable[..., int],
) -> None:
    add_series(lab, "dev-c", "empty", [])
    resp = client.get(f"/v1/labs/{lab}/latest", headers=auth)
    assert resp.status_code == 200
    assert resp.json()["data"] == [
        {
            "device": d,
            "sensor": s,
            "time": iso(lab_data[(d, s)][-1][0]),
            "value": lab_data[(d, s)][-1][1],
        }
        for d, s in sorted(lab_data)
    ]
    resp = client.get(f"/v1/labs/{lab}/latest", params={"sensor": "no2"}, headers=auth)
    assert [(r["device"], r["sensor"]) for r in resp.json()["data"]] == [
        ("dev-a", "no2"),
        ("dev-b", "no2"),
    ]


def test_readings_pages(client: TestClient, lab: str, auth: dict[str, str], lab_data: Any) -> None:
    start, end = utc(2026, 6, 1, 0, 5), utc(2026, 6, 1, 0, 50)
    ids = {k: i for i, k in enumerate(lab_data)}  # series ids grow in insertion order
    want = sorted(
        ((t, ids[k], k, v) for k, rows in lab_data.items() for t, v in rows if start <= t < end),
        key=lambda r: (r[0], r[1]),
    )
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {"start": iso(start), "end": iso(end), "limit": 7}
    pages = 0
    while True:
        resp = client.get(f"/v1/labs/{lab}/readings", params=params, headers=auth)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["data"]) <= 7
        got.extend(body["data"])
        pages += 1
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
    assert len(want) > 20 and pages == -(-len(want) // 7)
    assert [(r["time"], r["device"], r["sensor"], r["value"]) for r in got] == [
        (iso(t), k[0], k[1], v) for t, _, k, v in want
    ]


def test_readings_filters_and_bad_cursor(
    client: TestClient, lab: str, auth: dict[str, str], lab_data: Any
) -> None:
    params = {"start": "2026-06-01T00:00:00Z", "end": "2026-06-02T00:00:00Z", "device": "dev-b"}
    resp = client.get(f"/v1/labs/{lab}/readings", params=params, headers=auth)
    assert [r["value"] for r in resp.json()["data"]] == [v for _, v in lab_data[("dev-b", "no2")]]
    for bad in [
        "x",
        "e30=",
        "WzEsMiwzXQ",
        "W1tdXQ",
        "Wy0xLC0xXQ",
        "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5LDFd",
    ]:
        resp = client.get(
            f"/v1/labs/{lab}/readings", params={**params, "cursor": bad}, headers=auth
        )
        assert resp.status_code == 400 and "cursor" in resp.json()["detail"], (bad, resp.text)
    queries: list[dict[str, Any]] = [{"limit": 0}, {"limit": 10001}, {"limit": "many"}]
    for query in queries:
        resp = client.get(f"/v1/labs/{lab}/readings", params={**params, **query}, headers=auth)
        assert resp.status_code == 400 and "limit" in resp.json()["detail"], resp.text
    resp = client.get(f"/v1/labs/{lab}/readings", params={"start": params["start"]}, headers=auth)
    assert resp.status_code == 400 and "end" in resp.json()["detail"]


def test_rejections_newest_first_paginated(
    client: TestClient, db: psycopg.Connection, lab: str, auth: dict[str, str]
) -> None:
    rows = []
    for i in range(5):
        payload = f'{{"no2": "high-{i}"}}'.encode() + (b"\xff\xfe" if i == 3 else b"")
        rec = db.execute(
            "INSERT INTO rejections (received_at, lab, device, topic, reason, rejected_count, "
            "payload, payload_size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                utc(2026, 6, 1, 0, i),
                lab,
                "dev-1",
                f"livelab/{lab}/dev-1/telemetry",
                f"reason {i}",
                i + 1,
                payload,
                len(payload) + 100,
            ),
        ).fetchone()
        assert rec is not None
        rows.append((rec[0], i, payload))
    db.execute(
        "INSERT INTO rejections (received_at, lab, topic, reason, payload, payload_size) "
        "VALUES (now(), %s, 'x', 'other lab', '', 0)",
        (lab + "-other",),
    )
    resp = client.get(f"/v1/labs/{lab}/rejections", params={"limit": 2}, headers=auth)
    assert resp.status_code == 200
    first = resp.json()
    assert [r["reason"] for r in first["data"]] == ["reason 4", "reason 3"]
    row = first["data"][1]
    assert row == {
        "id": rows[3][0],
        "received_at": "2026-06-01T00:03:00Z",
        "topic": f"livelab/{lab}/dev-1/telemetry",
        "device": "dev-1",
        "reason": "reason 3",
        "rejected_count": 4,
        "payload": '{"no2": "high-3"}\ufffd\ufffd',
        "payload_size": len(rows[3][2]) + 100,
        "count": 1,
        "last_received_at": "2026-06-01T00:03:00Z",
    }
    seen = [r["reason"] for r in first["data"]]
    cursor = first["next"]
    while cursor is not None:
        page = client.get(
            f"/v1/labs/{lab}/rejections", params={"limit": 2, "cursor": cursor}, headers=auth
        ).json()
        seen += [r["reason"] for r in page["data"]]
        cursor = page["next"]
    assert seen == [f"reason {i}" for i in range(4, -1, -1)]
    resp = client.get(f"/v1/labs/{lab}/rejections", params={"cursor": "nope"}, headers=auth)
    assert resp.status_code == 400


def test_rejections_make_a_lab_visible_to_all_labs_keys(
    client: TestClient, db: psycopg.Connection, lab: str, make_key: Callable[..., str]
) -> None:
    star = {"Authorization": f"Bearer {make_key('*')}"}
    assert client.get(f"/v1/labs/{lab}/rejections", headers=star).status_code == 404
    db.execute(
        "INSERT INTO rejections (received_at, lab, topic, reason, payload, payload_size) "
        "VALUES (now(), %s, 'x', 'bad', 'x', 1)",
        (lab,),
    )
    resp = client.get(f"/v1/labs/{lab}/rejections", headers=star)
    assert resp.status_code == 200 and [r["reason"] for r in resp.json()["data"]] == ["bad"]


@pytest.mark.parametrize("route", ["sensors", "latest", "readings", "rejections", "aggregates"])
def test_scope_applies_to_every_lab_route(
    client: TestClient, lab: str, make_key: Callable[..., str], route: str
) -> None:
    params = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    other = {"Authorization": f"Bearer {make_key(lab + '-other')}"}
    resp = client.get(f"/v1/labs/{lab}/{route}", params=params, headers=other)
    assert resp.status_code == 404 and resp.json() == {"detail": f"lab '{lab}' not found"}
    resp = client.get(f"/v1/labs/{lab}/{route}", params=params)
    assert resp.status_code == 401
