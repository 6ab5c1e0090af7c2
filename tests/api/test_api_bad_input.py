"""Bad input answers 400 with a detail naming what is wrong; never a 500."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

GOOD = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"start": None}, ["start", "required"]),
        ({"end": None}, ["end", "required"]),
        ({"start": "2026-01-01"}, ["start", "RFC 3339"]),
        ({"start": "2026-01-01T00:00:00"}, ["start", "RFC 3339"]),  # no offset
        ({"end": "yesterday"}, ["end", "RFC 3339"]),
        ({"end": "2026-02-30T00:00:00Z"}, ["end", "not a valid date"]),
        ({"start": "2026-01-01T00:00:00+25:00"}, ["start", "offset"]),
        ({"end": "2026-01-01T00:00:00Z"}, ["end", "must be after start"]),
        ({"end": "2025-12-31T00:00:00Z"}, ["end", "must be after start"]),
        ({"bucket": "2h"}, ["bucket", "'2h'", "1mo"]),
        ({"bucket": ""}, ["bucket"]),
        ({"tz": "Mars/Olympus"}, ["tz", "Mars/Olympus"]),
        ({"tz": "../../etc/passwd"}, ["tz"]),
        ({"tz": ""}, ["tz"]),
        ({"stats": "avg,median"}, ["stats", "median", "count"]),
        ({"stats": ","}, ["stats"]),
        ({"format": "xml"}, ["format", "csv"]),
        ({"fill": "zero"}, ["fill", "null"]),
        ({"device": "Bad Device"}, ["device", "Bad Device"]),
        ({"sensor": "-x"}, ["sensor", "-x"]),
        ({"start": "0001-01-01T00:00:00+23:59", "end": "0001-01-02T00:00:00Z"}, ["start"]),
    ],
)
def test_bad_aggregate_params(
    client: TestClient,
    lab: str,
    auth: dict[str, str],
    params: dict[str, str | None],
    words: list[str],
) -> None:
    query = {k: v for k, v in {**GOOD, **params}.items() if v is not None}
    resp = client.get(f"/v1/labs/{lab}/aggregates", params=query, headers=auth)
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, (word, detail)


NASTY = [
    "",
    " ",
    "\x00",
    "%00",
    "'",
    '"',
    "' OR 1=1 --",
    "\\",
    "😀",
    "a" * 5000,
    "-1",
    "0",
    "1e308",
    "NaN",
    "null",
    "[]",
    "{}",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "2026-01-01T00:00:60Z",
    "2026-01-01T24:00:00Z",
    "\u202e",
    "UTC",
    "1mo",
    "avg",
    "Europe/Stockholm",
    "../..",
    "/etc/localtime",
    "posix/Europe/Stockholm",
    "EST5EDT",
    "+01:00",
    "csv",
    "json",
]


def test_nasty_values_never_500(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(datetime(2026, 1, 1, tzinfo=UTC), 1.0)])
    names = [
        "start",
        "end",
        "bucket",
        "tz",
        "stats",
        "device",
        "sensor",
        "format",
        "fill",
        "layout",
    ]
    for name in names:
        for value in NASTY:
            resp = client.get(
                f"/v1/labs/{lab}/aggregates", params={**GOOD, name: value}, headers=auth
            )
            assert resp.status_code in (200, 400), (name, value, resp.status_code, resp.text)
            if resp.status_code == 400:
                assert isinstance(resp.json()["detail"], str)
    for value in NASTY:
        resp = client.get(f"/v1/labs/{quote(value, safe='')}/aggregates", params=GOOD, headers=auth)
        assert resp.status_code in (400, 404), (value, resp.status_code, resp.text)
        if not (value.isascii() and value.isprintable()):
            continue  # not sendable in a header
        resp = client.get("/v1/labs", headers={"Authorization": f"Bearer {value}"})
        assert resp.status_code == 401, (value, resp.status_code, resp.text)


def test_extreme_but_valid_range(client: TestClient, lab: str, auth: dict[str, str]) -> None:
    resp = client.get(
        f"/v1/labs/{lab}/aggregates",
        params={
            "start": "2000-01-01T00:00:00Z",
            "end": "2099-01-01T00:00:00Z",
            "bucket": "1mo",
            "tz": "Pacific/Kiritimati",
            "fill": "null",
        },
        headers=auth,
    )
    assert resp.status_code == 200, resp.text


def test_nasty_values_on_other_routes_never_500(
    client: TestClient, lab: str, auth: dict[str, str], add_series: Callable[..., int]
) -> None:
    add_series(lab, "d", "s", [(datetime(2026, 1, 1, tzinfo=UTC), 1.0)])
    routes = {
        "readings": ["start", "end", "device", "sensor", "limit", "cursor"],
        "rejections": ["limit", "cursor"],
        "sensors": ["device", "sensor"],
        "latest": ["device", "sensor"],
    }
    for route, names in routes.items():
        for name in names:
            for value in NASTY:
                resp = client.get(
                    f"/v1/labs/{lab}/{route}", params={**GOOD, name: value}, headers=auth
                )
                assert resp.status_code in (200, 400), (route, name, value, resp.text)


@pytest.mark.parametrize("route", ["sensors", "latest", "readings", "aggregates"])
@pytest.mark.parametrize(
    ("name", "value"),
    [("device", "Station 1"), ("device", "false,true"), ("sensor", "a b"), ("sensor", "-no2")],
)
def test_filter_outside_the_name_rule_is_a_400(
    client: TestClient, lab: str, auth: dict[str, str], route: str, name: str, value: str
) -> None:
    """A filter that can match no series is a mistake: 400 naming the parameter, not `[]`."""
    params = {**GOOD, name: ["ok", value]}
    resp = client.get(f"/v1/labs/{lab}/{route}", params=params, headers=auth)
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"].startswith(f"{name} filter: {name} name {value!r} is not valid")


@pytest.mark.parametrize("bucket", ["1m", "15m", "1h", "1d", "1w", "1mo"])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-30T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("9999-12-31T10:00:00Z", "9999-12-31T22:00:00Z"),
        ("9999-12-31T23:00:00-00:30", "9999-12-31T23:59:59Z"),
        ("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z"),
        ("0001-01-03T00:00:00Z", "0001-01-03T00:07:00Z"),
    ],
)
def test_ranges_at_the_ends_of_time_never_500(
    client: TestClient,
    lab: str,
    auth: dict[str, str],
    add_series: Callable[..., int],
    bucket: str,
    start: str,
    end: str,
) -> None:
    add_series(lab, "d", "s", [(datetime(2026, 1, 1, tzinfo=UTC), 1.0)])
    for tz in ("UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"):
        params = {"start": start, "end": end, "bucket": bucket, "tz": tz, "fill": "null"}
        resp = client.get(f"/v1/labs/{lab}/aggregates", params=params, headers=auth)
        assert resp.status_code in (200, 400), (params, resp.status_code, resp.text)
