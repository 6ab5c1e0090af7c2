"""Aggregates against the real database; expected values are computed here in plain Python."""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def iso(dt: datetime) -> str:
    text = dt.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def expected_rows(
    series: dict[tuple[str, str], list[tuple[datetime, float]]],
    bucket_of: Callable[[datetime], datetime],
    stats: list[str],
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, datetime], list[float]] = defaultdict(list)
    for (device, sensor), readings in series.items():
        for t, v in readings:
            if start <= t < end:
                groups[(device, sensor, bucket_of(t))].append(v)
    out = []
    for (device, sensor, b), values in sorted(groups.items()):
        row: dict[str, Any] = {"device": device, "sensor": sensor, "bucket": iso(b)}
        calc = {
            "avg": sum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "sum": sum(values),
            "count": len(values),
        }
        for s in stats:
            row[s] = calc[s]
        out.append(row)
    return out


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert want, "the test data must give some rows"
    assert [list(r) for r in got] == [list(r) for r in want]  # same keys, same order
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for k, v in w.items():
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=1e-12), (k, g, w)
            else:
                assert g[k] == v, (k, g, w)
                assert type(g[k]) is type(v), (k, g, w)


def get(client: TestClient, lab: str, auth: dict[str, str], **params: Any) -> Any:
    resp = client.get(f"/v1/labs/{lab}/aggregates", params=params, headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["next"] is None
    return body["data"]


@pytest.fixture
def two_series(lab: str, add_series: Callable[..., int]) -> dict[tuple[str, str], list[Any]]:
    """Two devices, two sensors, irregular readings over 3 hours (and some outside)."""
    rng = random.Random(7)
    series: dict[tuple[str, str], list[Any]] = {}
    for device, sensor in [("dev-b", "no2"), ("dev-a", "no2"), ("dev-a", "pm25")]:
        times = sorted(
            {
                utc(2026, 6, 1, 9, 50) + timedelta(seconds=rng.randrange(0, 4 * 3600))
                for _ in range(300)
            }
        )
        readings = [(t, round(rng.uniform(-20, 80), 3)) for t in times]
        add_series(lab, device, sensor, readings)
        series[(device, sensor)] = readings
    return series


@pytest.mark.parametrize(("bucket", "step"), [("1m", 60), ("15m", 900), ("1h", 3600)])
def test_fixed_buckets_all_stats(
    client: TestClient, lab: str, auth: dict[str, str], two_series: Any, bucket: str, step: int
) -> None:
    start, end = utc(2026, 6, 1, 10), utc(2026, 6, 1, 13)
    stats = ["avg", "min", "max", "sum", "count"]

    def bucket_of(t: datetime) -> datetime:
        return utc(2026, 6, 1) + timedelta(
            seconds=(t - utc(2026, 6, 1)).total_seconds() // step * step
        )

    data = get(
        client, lab, auth, start=iso(start), end=iso(end), bucket=bucket, stats=",".join(stats)
    )
    assert_rows_equal(data, expected_rows(two_series, bucket_of, stats, start, end))


def test_defaults_are_1h_utc_and_avg_min_max_count(
    client: TestClient, lab: str, auth: dict[str, str], two_series: Any
) -> None:
    start, end = utc(2026, 6, 1, 10), utc(2026, 6, 1, 12)
    data = get(client, lab, auth, start="2026-06-01T12:00:00+02:00", end=iso(end))

    def hour(t: datetime) -> datetime:
        return t.replace(minute=0, second=0, microsecond=0)

    assert_rows_equal(
        data, expected_rows(two_series, hour, ["avg", "min", "max", "count"], start, end)
    )
    assert data[0]["bucket"] == "2026-06-01T10:00:00Z"


def test_start_inclusive_end_exclusive(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(utc(2026, 1, 1, 0), 1.0), (utc(2026, 1, 1, 1), 2.0)])
    data = get(
        client,
        lab,
        auth,
        start="2026-01-01T00:00:00Z",
        end="2026-01-01T01:00:00Z",
        stats="sum,count",
    )
    assert data == [
        {"device": "d", "sensor": "s", "bucket": "2026-01-01T00:00:00Z", "sum": 1.0, "count": 1}
    ]


def test_stats_selection_and_order(
    client: TestClient, lab: str, auth: dict[str, str], two_series: Any
) -> None:
    start, end = utc(2026, 6, 1, 10), utc(2026, 6, 1, 11)
    data = get(client, lab, auth, start=iso(start), end=iso(end), stats=["max,count", "avg", "max"])
    assert list(data[0]) == ["device", "sensor", "bucket", "max", "count", "avg"]
    assert all(isinstance(r["count"], int) and isinstance(r["avg"], float) for r in data)

    def hour(t: datetime) -> datetime:
        return t.replace(minute=0, second=0, microsecond=0)

    assert_rows_equal(data, expected_rows(two_series, hour, ["max", "count", "avg"], start, end))


def test_device_and_sensor_filters(
    client: TestClient, lab: str, auth: dict[str, str], two_series: Any
) -> None:
    start, end = utc(2026, 6, 1, 10), utc(2026, 6, 1, 13)

    def hour(t: datetime) -> datetime:
        return t.replace(minute=0, second=0, microsecond=0)

    def pick(keep: Callable[[str, str], bool]) -> dict[Any, Any]:
        return {k: v for k, v in two_series.items() if keep(*k)}

    stats = ["count", "sum"]
    base = {"start": iso(start), "end": iso(end), "stats": "count,sum"}
    data = get(client, lab, auth, **base, device="dev-a")
    assert_rows_equal(data, expected_rows(pick(lambda d, s: d == "dev-a"), hour, stats, start, end))
    data = get(client, lab, auth, **base, sensor="no2")
    assert_rows_equal(data, expected_rows(pick(lambda d, s: s == "no2"), hour, stats, start, end))
    data = get(client, lab, auth, **base, device=["dev-a", "dev-b"], sensor="pm25")
    assert_rows_equal(data, expected_rows(pick(lambda d, s: s == "pm25"), hour, stats, start, end))
    assert get(client, lab, auth, **base, device="nobody") == []


def local_day(t: datetime, tz: ZoneInfo) -> datetime:
    return datetime.combine(t.astimezone(tz).date(), dtime(0), tzinfo=tz)


def test_stockholm_days_across_spring_forward(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    # 2026-03-29 02:00 local -> 03:00: the day has 23 hours (22:59 UTC on the 28th ... 22:00).
    readings = [
        (utc(2026, 3, 28, 22, 30), 1.0),  # 23:30 local on the 28th
        (utc(2026, 3, 28, 23, 30), 2.0),  # 00:30 local on the 29th (UTC says 28th)
        (utc(2026, 3, 29, 21, 30), 4.0),  # 23:30 local on the 29th (+02:00)
        (utc(2026, 3, 29, 22, 30), 8.0),  # 00:30 local on the 30th (UTC says 29th)
        (utc(2026, 3, 29, 12, 0), 16.0),
    ]
    add_series(lab, "d", "s", readings)
    data = get(
        client,
        lab,
        auth,
        start="2026-03-28T00:00:00+01:00",
        end="2026-03-31T00:00:00+02:00",
        bucket="1d",
        tz="Europe/Stockholm",
        stats="sum,count",
    )
    assert data == [
        {
            "device": "d",
            "sensor": "s",
            "bucket": "2026-03-28T00:00:00+01:00",
            "sum": 1.0,
            "count": 1,
        },
        {
            "device": "d",
            "sensor": "s",
            "bucket": "2026-03-29T00:00:00+01:00",
            "sum": 22.0,
            "count": 3,
        },
        {
            "device": "d",
            "sensor": "s",
            "bucket": "2026-03-30T00:00:00+02:00",
            "sum": 8.0,
            "count": 1,
        },
    ]
    start, end = utc(2026, 3, 27, 23), utc(2026, 3, 30, 22)
    want = expected_rows(
        {("d", "s"): readings}, lambda t: local_day(t, STOCKHOLM), ["sum", "count"], start, end
    )
    assert [r["sum"] for r in want] == [r["sum"] for r in data]


def test_stockholm_days_across_fall_back(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    # 2026-10-25 03:00 local -> 02:00: the day has 25 hours (22:00 UTC on the 24th ... 23:00).
    readings = [
        (utc(2026, 10, 24, 21, 30), 1.0),  # 23:30 local on the 24th
        (utc(2026, 10, 24, 22, 30), 2.0),  # 00:30 local on the 25th (+02:00)
        (utc(2026, 10, 25, 0, 30), 4.0),  # 02:30 local, first time
        (utc(2026, 10, 25, 1, 30), 8.0),  # 02:30 local, second time
        (utc(2026, 10, 25, 22, 30), 16.0),  # 23:30 local on the 25th (+01:00)
        (utc(2026, 10, 25, 23, 30), 32.0),  # 00:30 local on the 26th
    ]
    add_series(lab, "d", "s", readings)
    data = get(
        client,
        lab,
        auth,
        start="2026-10-24T00:00:00+02:00",
        end="2026-10-27T00:00:00+01:00",
        bucket="1d",
        tz="Europe/Stockholm",
        stats="sum",
    )
    assert [(r["bucket"], r["sum"]) for r in data] == [
        ("2026-10-24T00:00:00+02:00", 1.0),
        ("2026-10-25T00:00:00+02:00", 30.0),
        ("2026-10-26T00:00:00+01:00", 32.0),
    ]


def test_fill_null_days_across_dst(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(utc(2026, 3, 29, 12), 5.0)])
    add_series(lab, "d", "t", [])
    data = get(
        client,
        lab,
        auth,
        start="2026-03-27T12:00:00+01:00",
        end="2026-03-31T00:00:00+02:00",
        bucket="1d",
        tz="Europe/Stockholm",
        fill="null",
        stats="avg,count",
    )
    days = [
        "2026-03-27T00:00:00+01:00",
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    ]
    assert [(r["sensor"], r["bucket"]) for r in data] == [("s", d) for d in days] + [
        ("t", d) for d in days
    ]
    assert [(r["avg"], r["count"]) for r in data[:4]] == [(None, 0), (None, 0), (5.0, 1), (None, 0)]
    assert all(r["avg"] is None and r["count"] == 0 for r in data[4:])
    # without fill the empty buckets (and the empty series) are absent
    data = get(
        client,
        lab,
        auth,
        start="2026-03-27T12:00:00+01:00",
        end="2026-03-31T00:00:00+02:00",
        bucket="1d",
        tz="Europe/Stockholm",
    )
    assert [r["bucket"] for r in data] == ["2026-03-29T00:00:00+01:00"]


def test_fill_null_fixed_buckets(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(utc(2026, 1, 1, 0, 7), 1.0), (utc(2026, 1, 1, 0, 31), 3.0)])
    data = get(
        client,
        lab,
        auth,
        start="2026-01-01T00:05:00Z",
        end="2026-01-01T01:00:00Z",
        bucket="15m",
        fill="null",
        stats="sum,count",
    )
    assert [(r["bucket"], r["sum"], r["count"]) for r in data] == [
        ("2026-01-01T00:00:00Z", 1.0, 1),
        ("2026-01-01T00:15:00Z", None, 0),
        ("2026-01-01T00:30:00Z", 3.0, 1),
        ("2026-01-01T00:45:00Z", None, 0),
    ]


def test_weeks_start_monday_local(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    readings = [
        (utc(2026, 6, 7, 14, 30), 1.0),  # Sunday 23:30 JST
        (utc(2026, 6, 7, 15, 30), 2.0),  # Monday 00:30 JST (Sunday in UTC)
        (utc(2026, 6, 14, 14, 0), 4.0),  # Sunday 23:00 JST
        (utc(2026, 6, 14, 16, 0), 8.0),  # Monday 01:00 JST
    ]
    add_series(lab, "d", "s", readings)

    def week(t: datetime) -> datetime:
        day = t.astimezone(tokyo).date()
        return datetime.combine(day - timedelta(days=day.weekday()), dtime(0), tzinfo=tokyo)

    start, end = utc(2026, 6, 1), utc(2026, 6, 30)
    data = get(
        client, lab, auth, start=iso(start), end=iso(end), bucket="1w", tz="Asia/Tokyo", stats="sum"
    )
    assert data == expected_rows({("d", "s"): readings}, week, ["sum"], start, end)
    assert [r["bucket"] for r in data] == [
        "2026-06-01T00:00:00+09:00",
        "2026-06-08T00:00:00+09:00",
        "2026-06-15T00:00:00+09:00",
    ]
    assert all(date.fromisoformat(r["bucket"][:10]).weekday() == 0 for r in data)


def test_months_local(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    readings = [
        (utc(2026, 2, 28, 22, 50), 1.0),  # 23:50 local, February
        (utc(2026, 2, 28, 23, 10), 2.0),  # 00:10 local, March (February in UTC)
        (utc(2026, 3, 31, 21, 30), 4.0),  # 23:30 local, March (+02:00)
        (utc(2026, 3, 31, 22, 30), 8.0),  # 00:30 local, April (March in UTC)
    ]
    add_series(lab, "d", "s", readings)
    data = get(
        client,
        lab,
        auth,
        start="2026-02-01T00:00:00+01:00",
        end="2026-05-01T00:00:00+02:00",
        bucket="1mo",
        tz="Europe/Stockholm",
        stats="sum",
    )
    assert [(r["bucket"], r["sum"]) for r in data] == [
        ("2026-02-01T00:00:00+01:00", 1.0),
        ("2026-03-01T00:00:00+01:00", 6.0),
        ("2026-04-01T00:00:00+02:00", 8.0),
    ]


def test_hours_in_half_hour_zone_and_across_fall_back(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(utc(2026, 6, 1, 4, 40), 1.0), (utc(2026, 6, 1, 5, 20), 2.0)])
    data = get(
        client,
        lab,
        auth,
        start="2026-06-01T00:00:00Z",
        end="2026-06-01T12:00:00Z",
        bucket="1h",
        tz="Asia/Kolkata",
        stats="sum",
    )
    # 04:40Z = 10:10 IST, 05:20Z = 10:50 IST: one local hour
    assert [(r["bucket"], r["sum"]) for r in data] == [("2026-06-01T10:00:00+05:30", 3.0)]

    add_series(lab, "e", "s", [(utc(2026, 10, 25, 0, 30), 1.0), (utc(2026, 10, 25, 1, 30), 2.0)])
    data = get(
        client,
        lab,
        auth,
        start="2026-10-25T00:00:00+02:00",
        end="2026-10-25T06:00:00+01:00",
        bucket="1h",
        tz="Europe/Stockholm",
        stats="sum",
        device="e",
    )
    # 02:30 local happens twice: two different hours, never merged.
    assert [(r["bucket"], r["sum"]) for r in data] == [
        ("2026-10-25T02:00:00+02:00", 1.0),
        ("2026-10-25T02:00:00+01:00", 2.0),
    ]


def test_csv(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(utc(2026, 1, 1, 0, 7), 1.5), (utc(2026, 1, 1, 0, 8), 2.5)])
    add_series(lab, "d", "a:b/c", [(utc(2026, 1, 1, 1, 7), -3.0)])
    resp = client.get(
        f"/v1/labs/{lab}/aggregates",
        params={
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-01T02:00:00Z",
            "stats": "count,avg",
            "format": "csv",
            "fill": "null",
        },
        headers=auth,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert rows == [
        ["device", "sensor", "bucket", "count", "avg"],
        ["d", "a:b/c", "2026-01-01T00:00:00Z", "0", ""],
        ["d", "a:b/c", "2026-01-01T01:00:00Z", "1", "-3.0"],
        ["d", "s", "2026-01-01T00:00:00Z", "2", "2.0"],
        ["d", "s", "2026-01-01T01:00:00Z", "0", ""],
    ]


def test_range_too_large(
    api_settings: Any, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    from api.app import create_app

    add_series(lab, "d", "s", [(utc(2026, 1, 1), 1.0)])
    settings = api_settings.model_copy(update={"api_max_buckets": 24})
    with TestClient(create_app(settings)) as small:
        ok = small.get(
            f"/v1/labs/{lab}/aggregates",
            headers=auth,
            params={"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        )
        assert ok.status_code == 200, ok.text
        resp = small.get(
            f"/v1/labs/{lab}/aggregates",
            headers=auth,
            params={"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:01Z"},
        )
        assert resp.status_code == 400
        detail = resp.json()["detail"]
        assert "25 buckets" in detail and "24" in detail and "larger bucket" in detail
        resp = small.get(
            f"/v1/labs/{lab}/aggregates",
            headers=auth,
            params={
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-03-01T00:00:00Z",
                "bucket": "1mo",
            },
        )
        assert resp.status_code == 200


def test_too_many_rows_across_series(
    api_settings: Any, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    """The per-series bucket limit alone lets a big lab ask for millions of rows."""
    from api.app import create_app

    for device in ("d1", "d2", "d3"):
        add_series(lab, device, "s", [(utc(2026, 1, 1), 1.0)])
    settings = api_settings.model_copy(update={"api_max_rows": 60})
    day = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "fill": "null"}
    with TestClient(create_app(settings)) as small:
        resp = small.get(f"/v1/labs/{lab}/aggregates", headers=auth, params=day)
        assert resp.status_code == 400
        detail = resp.json()["detail"]
        assert "72 rows (3 series x 24 buckets of 1h)" in detail and "filter by device" in detail
        two = small.get(
            f"/v1/labs/{lab}/aggregates", headers=auth, params={**day, "device": ["d1", "d2"]}
        )
        assert two.status_code == 200, two.text
        assert len(two.json()["data"]) == 48
