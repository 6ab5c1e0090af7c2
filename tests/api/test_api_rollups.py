"""Aggregates composed from the rollups equal aggregates over the raw readings.

Random readings, with exact and conflicting duplicates, are stored out of order in several
batches through the real ingest writer (`ingest.store.Store`, which keeps the rollups); then
the API's answer for random bucket sizes, zones, stats, ranges, `fill` and layouts is compared
with a computation over the readings as stored (first value wins), done here in plain Python.
Each test runs on two deployments: daily partials in UTC (the session's database) and in
Europe/Stockholm (a database of this module, set with `ingest.rollups.set_zone`).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import compose, keys
from api.app import create_app
from api.buckets import BUCKETS
from api.settings import Settings
from ingest import rollups
from ingest.store import Store
from schemas.migrate import migrate
from tests.conftest import scratch_database

# Whole-hour offsets, half and quarter hours, a 30-minute DST shift (Lord Howe), 45 minutes.
ZONES = [
    "UTC",
    "Europe/Stockholm",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Pacific/Chatham",
]
STATS = ["avg", "min", "max", "sum", "count"]
# Around the March/April DST changes of the zones above, over several UTC days and a month end.
T0 = datetime(2025, 3, 27, tzinfo=UTC)
SPAN = timedelta(days=14)
SERIES = [("dev-a", "t"), ("dev-a", "rh"), ("dev-b", "t")]
# Bucket sizes, with the longest range asked for each (keeps fill=null answers small).
MAX_RANGE = {
    "1m": timedelta(hours=6),
    "5m": timedelta(days=1),
    "15m": timedelta(days=3),
    "1h": SPAN,
    "6h": SPAN,
    "1d": SPAN,
    "1w": SPAN,
    "1mo": SPAN,
}


def reference(
    stored: dict[tuple[int, datetime], float],
    bucket: str,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
) -> dict[tuple[int, datetime], list[float]]:
    """(series index, bucket start) -> values, computed reading by reading."""
    spec = BUCKETS[bucket]
    local_start = start.astimezone(zone)
    origin = datetime(local_start.year, local_start.month, local_start.day, tzinfo=zone)
    origin_utc = origin.astimezone(UTC)
    groups: dict[tuple[int, datetime], list[float]] = defaultdict(list)
    for (i, t), v in stored.items():
        if not start <= t < end:
            continue
        if spec.calendar:
            day = t.astimezone(zone).date()
            if bucket == "1w":
                day -= timedelta(days=day.weekday())
            elif bucket == "1mo":
                day = day.replace(day=1)
            b = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
        else:
            b = origin_utc + (t - origin_utc) // spec.nominal * spec.nominal
        groups[(i, b)].append(v)
    return groups


def stat_values(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"avg": None, "min": None, "max": None, "sum": None, "count": 0}
    return {
        "avg": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "sum": sum(values),
        "count": len(values),
        "_mag": sum(abs(v) for v in values),
    }


def magnitude(want: dict[str, Any], stat: str) -> float:
    mag: float = want.get("_mag", 0.0)
    return mag / want["count"] if stat == "avg" and want["count"] else mag


def assert_close(got: Any, want: Any, stat: str, mag: float, where: str) -> None:
    if stat in ("min", "max", "count") or want is None:
        assert got == want, f"{where} {stat}: {got!r} != {want!r}"
        return
    # 1e-9 relative to the sum of |values| (for avg: their mean): a sum that cancels out to
    # nearly zero has no relative precision in any order of addition.
    assert got is not None and abs(got - want) <= 1e-9 * mag + 1e-12, f"{where} {stat}"


def parse_csv(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for row in rows:
        rec: dict[str, Any] = {}
        for k, v in row.items():
            if k in ("device", "sensor", "bucket"):
                rec[k] = v
            elif v == "":
                rec[k] = None
            elif k.endswith("count"):
                rec[k] = int(v)
            else:
                rec[k] = float(v)
        out.append(rec)
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 120))
    seconds = st.integers(0, int(SPAN.total_seconds()) - 1)
    values = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    readings = [
        (draw(st.integers(0, len(SERIES) - 1)), T0 + timedelta(seconds=draw(seconds)), draw(values))
        for _ in range(n)
    ]
    # Exact duplicates (a redelivery) and conflicting ones (same time, another value).
    for _ in range(draw(st.integers(0, 20))):
        i, t, v = readings[draw(st.integers(0, len(readings) - 1))]
        readings.append((i, t, v if draw(st.booleans()) else draw(values)))
    order = draw(st.permutations(range(len(readings))))
    arrival = [readings[k] for k in order]
    cuts = sorted(draw(st.lists(st.integers(0, len(arrival)), max_size=4)))
    bucket = draw(st.sampled_from(list(BUCKETS)))
    # Range ends anywhere, or on quarter hours (where the rollups' boundaries are).
    longest = int(MAX_RANGE[bucket].total_seconds())
    length = draw(st.integers(1, longest) | st.integers(1, longest // 900).map(lambda q: q * 900))
    offset = draw(st.integers(0, 86400 * 15) | st.integers(0, 96 * 15).map(lambda q: q * 900))
    start = T0 - timedelta(hours=6) + timedelta(seconds=offset)
    return {
        "batches": [arrival[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrival)], strict=True)],
        "bucket": bucket,
        "zone": draw(st.sampled_from(ZONES)),
        "start": start,
        "end": start + timedelta(seconds=length),
        "stats": draw(st.lists(st.sampled_from(STATS), min_size=1, max_size=5, unique=True)),
        "fill": draw(st.booleans()),
        "layout": draw(st.sampled_from(["long", "wide"])),
        "format": draw(st.sampled_from(["json", "csv"])),
        "device": draw(st.sampled_from([None, "dev-a"])),
    }


@dataclass
class Deployment:
    """Where a case is stored and asked: the API, the ingest writer and a connection."""

    client: TestClient
    store: Store
    db: psycopg.Connection

    def key(self, lab: str) -> str:
        return keys.create_key(self.db, "test", [lab])[0]


@pytest.fixture(scope="module")
def stockholm_database() -> Iterator[str]:
    """A migrated database whose daily partials follow Europe/Stockholm."""
    with scratch_database("livelab_test_days") as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert rollups.check_zone(conn, "Europe/Stockholm") is None
            rollups.set_zone(conn, "Europe/Stockholm")
        yield url


@pytest.fixture(scope="module")
def stockholm_client(stockholm_database: str) -> Iterator[TestClient]:
    settings = Settings(database_url=stockholm_database, api_key_cache_seconds=0, api_rate_limit=0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(params=["UTC", "Europe/Stockholm"], ids=["days-utc", "days-stockholm"])
def deployment(
    request: pytest.FixtureRequest, database_url: str, client: TestClient
) -> Iterator[Deployment]:
    if request.param == "UTC":
        url, api = database_url, client
    else:
        url = request.getfixturevalue("stockholm_database")
        api = request.getfixturevalue("stockholm_client")
    store = Store(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert rollups.zone_of(conn) == request.param
        yield Deployment(api, store, conn)
    store.close()


def iso(dt: datetime, zone: ZoneInfo) -> str:
    text = dt.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenarios())
def test_composed_aggregates_equal_raw_computation(
    case: dict[str, Any], deployment: Deployment
) -> None:
    check_case(case, deployment)


def _fixed_case(bucket: str, zone: str, start: datetime, end: datetime, **extra: Any) -> Any:
    every_7_min = [(k % 3, T0 + timedelta(minutes=7 * k), float(k % 11) - 3) for k in range(2880)]
    case = {
        "batches": [every_7_min[1::2], every_7_min[::2], every_7_min[:50]],
        "bucket": bucket, "zone": zone, "start": start, "end": end, "stats": STATS,
        "fill": False, "layout": "long", "format": "json", "device": None, **extra,
    }  # fmt: skip
    return pytest.param(case, id=f"{bucket}-{zone}-{extra}")


@pytest.mark.parametrize(
    "case",
    [
        # Each bucket one hourly partial (no grouping), and the same with ragged ends.
        _fixed_case("1h", "UTC", T0, T0 + timedelta(days=13)),
        _fixed_case("1h", "UTC", T0 + timedelta(minutes=7), T0 + timedelta(days=13, seconds=1)),
        _fixed_case("15m", "Asia/Kolkata", T0, T0 + timedelta(days=3), layout="wide"),
        _fixed_case("1h", "Asia/Kolkata", T0, T0 + timedelta(days=5), format="csv"),
        _fixed_case("1d", "Australia/Lord_Howe", T0, T0 + timedelta(days=14), fill=True),
        _fixed_case("1mo", "Europe/Stockholm", T0 - timedelta(days=40), T0 + timedelta(days=40)),
        _fixed_case("1w", "Asia/Kathmandu", T0, T0 + timedelta(days=14), layout="wide"),
    ],
)
def test_composed_aggregates_equal_raw_computation_examples(
    case: dict[str, Any], deployment: Deployment
) -> None:
    check_case(case, deployment)


def check_case(case: dict[str, Any], dep: Deployment) -> None:
    lab = f"p{secrets.token_hex(6)}"
    stored: dict[tuple[int, datetime], float] = {}
    for batch in case["batches"]:
        readings = []
        for i, t, v in batch:
            stored.setdefault((i, t), v)  # the first value wins
            readings.append((lab, *SERIES[i], t, v))
        dep.store.write(readings)
    assert rollups.verify(dep.db, lab) == []

    zone = ZoneInfo(case["zone"])
    start, end, bucket = case["start"], case["end"], case["bucket"]
    params: dict[str, Any] = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "bucket": bucket,
        "tz": case["zone"],
        "stats": ",".join(case["stats"]),
        "layout": case["layout"],
        "format": case["format"],
    }
    if case["fill"]:
        params["fill"] = "null"
    wanted = [i for i, (d, _) in enumerate(SERIES) if case["device"] in (None, d)]
    if case["device"]:
        params["device"] = case["device"]
    r = dep.client.get(
        f"/v1/labs/{lab}/aggregates",
        params=params,
        headers={"Authorization": f"Bearer {dep.key(lab)}"},
    )
    assert r.status_code == 200, r.text
    got = parse_csv(r.text) if case["format"] == "csv" else r.json()["data"]

    groups = reference(stored, bucket, zone, start, end)
    # Series that have readings at all exist (the registry); order: device, sensor (bytes).
    present = sorted({i for i, _ in stored} & set(wanted), key=lambda i: SERIES[i])
    starts = compose.bucket_starts(
        BUCKETS[bucket], zone, datetime(*start.astimezone(zone).timetuple()[:3], tzinfo=zone),
        start, end,
    )  # fmt: skip
    where = f"{case['zone']} {bucket} [{start}, {end})"
    if case["layout"] == "long":
        expected = [(i, b) for i in present for b in starts if case["fill"] or (i, b) in groups]
        assert [(row["device"], row["sensor"], row["bucket"]) for row in got] == [
            (*SERIES[i], iso(b, zone)) for i, b in expected
        ], where
        for row, (i, b) in zip(got, expected, strict=True):
            want = stat_values(groups.get((i, b), []))
            for stat in case["stats"]:
                assert_close(row[stat], want[stat], stat, magnitude(want, stat), where)
    else:
        buckets = [b for b in starts if case["fill"] or any((i, b) in groups for i in present)]
        assert [row["bucket"] for row in got] == [iso(b, zone) for b in buckets], where
        columns = ["bucket"] + [
            f"{SERIES[i][0]}/{SERIES[i][1]}/{stat}" for i in present for stat in case["stats"]
        ]
        for row, b in zip(got, buckets, strict=True):
            assert list(row) == columns, where
            for i in present:
                want = stat_values(groups.get((i, b), []))
                for stat in case["stats"]:
                    name = f"{SERIES[i][0]}/{SERIES[i][1]}/{stat}"
                    assert_close(row[name], want[stat], stat, magnitude(want, stat), where)


def test_bucket_starts_follow_local_days_across_dst() -> None:
    zone = ZoneInfo("Australia/Lord_Howe")  # +11 in summer, +10:30 from 6 April 2025 02:00
    start, end = datetime(2025, 4, 4, tzinfo=UTC), datetime(2025, 4, 8, tzinfo=UTC)
    origin = datetime(2025, 4, 4, tzinfo=zone)
    starts = compose.bucket_starts(BUCKETS["1d"], zone, origin, start, end)
    assert [b.astimezone(zone).isoformat() for b in starts] == [
        "2025-04-04T00:00:00+11:00",
        "2025-04-05T00:00:00+11:00",
        "2025-04-06T00:00:00+11:00",
        "2025-04-07T00:00:00+10:30",
        "2025-04-08T00:00:00+10:30",
    ]
    assert [date(2025, 4, d) for d in (4, 5, 6, 7, 8)] == [
        b.astimezone(zone).date() for b in starts
    ]


def test_plan_reads_coarsest_tier_and_raw_only_at_unaligned_ends() -> None:
    zone = ZoneInfo("Europe/Stockholm")
    start = datetime(2025, 1, 1, 0, 7, tzinfo=UTC)  # not on any tier boundary
    end = datetime(2026, 1, 1, tzinfo=UTC)
    origin = datetime(2025, 1, 1, tzinfo=zone)

    def plan(bucket: str, tz: ZoneInfo, daily_zone: str, o: datetime = origin) -> compose.Plan:
        spec = BUCKETS[bucket]
        starts = compose.bucket_starts(spec, tz, o, start, end)
        step = None if spec.calendar else spec.nominal
        return compose.plan(starts, start, end, step, compose.grids(tz, daily_zone))

    # Daily partials in UTC: UTC months read them, Stockholm days and months read hours.
    month = plan("1mo", ZoneInfo("UTC"), "UTC", datetime(2025, 1, 1, tzinfo=UTC))
    assert month.raw == [(start, datetime(2025, 1, 1, 0, 15, tzinfo=UTC))]
    assert month.tiers["rollup_1d"] == [(datetime(2025, 1, 2, tzinfo=UTC), end)]
    assert "rollup_1d" not in plan("1mo", zone, "UTC").tiers
    day = plan("1d", zone, "UTC")
    assert day.tiers["rollup_1h"] == [(datetime(2025, 1, 1, 1, tzinfo=UTC), end)]
    assert "rollup_1d" not in day.tiers  # no UTC day fits in a Stockholm day
    # Daily partials in Stockholm: a year of Stockholm days is one range of them (the first,
    # cut by `start`, and the last, cut by `end`, from hours), and months read them too.
    day = plan("1d", zone, "Europe/Stockholm")
    first, last = datetime(2025, 1, 1, 23, tzinfo=UTC), datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert day.tiers["rollup_1d"] == [(first, last)]
    assert day.tiers["rollup_1h"] == [(datetime(2025, 1, 1, 1, tzinfo=UTC), first), (last, end)]
    assert plan("1mo", zone, "Europe/Stockholm").tiers["rollup_1d"][0][0] == first
    kolkata = ZoneInfo("Asia/Kolkata")
    k = plan("1d", kolkata, "Europe/Stockholm")
    assert "rollup_15m" in k.tiers and len(k.raw) == 1  # :30 boundaries: 15-minute partials
    assert "rollup_1d" not in k.tiers  # the daily partials follow another zone
    for o in (origin, datetime(2025, 1, 1, tzinfo=kolkata)):  # hours on :00 and on :30 UTC
        hours = compose.bucket_starts(BUCKETS["1h"], kolkata, o, start, end)
        usable = compose.grids(kolkata, "UTC")
        tiled = compose.plan(hours, start, end, BUCKETS["1h"].nominal, usable)
        assert tiled == compose.plan(hours, start, end, None, usable)  # as bucket by bucket
    assert tiled.tiers == {"rollup_15m": [(datetime(2025, 1, 1, 0, 15, tzinfo=UTC), end)]}
    five = plan("5m", zone, "Europe/Stockholm")
    assert five.tiers == {} and five.raw == [(start, end)]  # finer than any tier: raw


def test_daily_partials_are_read_only_where_their_zone_was_checked() -> None:
    zone = ZoneInfo("Europe/Stockholm")
    start, end = datetime(1969, 12, 1, tzinfo=UTC), datetime(1970, 2, 1, tzinfo=UTC)
    starts = compose.bucket_starts(BUCKETS["1mo"], zone, start, start, end)
    parts = compose.plan(starts, start, end, None, compose.grids(zone, "Europe/Stockholm"))
    [(lo, _)] = parts.tiers["rollup_1d"]
    assert lo == datetime(1970, 1, 1, tzinfo=zone)  # 1969 from the hourly partials
