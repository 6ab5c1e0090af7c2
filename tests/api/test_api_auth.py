"""API keys and lab scope: 401 without a valid key, 404 for labs outside the scope."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import keys

RANGE = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer llk_" + "x" * 43},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "llk_nobearer"},
    ],
    ids=["none", "unknown", "empty", "basic", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/v1/labs", "/v1/labs/{lab}/aggregates"])
def test_missing_or_bad_key_is_401(
    client: TestClient, lab: str, headers: dict[str, str], path: str
) -> None:
    resp = client.get(path.format(lab=lab), params=RANGE, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert isinstance(resp.json()["detail"], str)


def test_revoked_key_is_401(
    client: TestClient, db: psycopg.Connection, lab: str, make_key: Callable[..., str]
) -> None:
    name = f"revoke-me-{secrets.token_hex(4)}"
    key = make_key(lab, name=name)
    assert client.get("/v1/labs", headers=bearer(key)).status_code == 200
    revoked = keys.revoke_key(db, key[: keys.PREFIX_LENGTH])
    assert [k.name for k in revoked] == [name]
    resp = client.get("/v1/labs", headers=bearer(key))
    assert resp.status_code == 401
    assert "revoked" in resp.json()["detail"]
    with pytest.raises(LookupError):
        keys.revoke_key(db, name)  # nothing active left under that name


def test_key_is_stored_only_as_hash(db: psycopg.Connection, make_key: Callable[..., str]) -> None:
    key = make_key("some-lab")
    assert key.startswith("llk_") and len(key) == 47
    row = db.execute(
        "SELECT prefix, key_hash, labs FROM api_keys WHERE prefix = %s", (key[:12],)
    ).fetchone()
    assert row is not None
    assert row[0] == key[:12] and bytes(row[1]) == keys.hash_key(key) and row[2] == ["some-lab"]
    assert db.execute(
        "SELECT count(*) FROM api_keys WHERE key_hash = %s", (key.encode(),)
    ).fetchone() == (0,)


def test_bad_scope_is_refused(db: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="lab name"):
        keys.create_key(db, "x", ["Bad Lab"])
    with pytest.raises(ValueError, match="at least one lab"):
        keys.create_key(db, "x", [])


def test_lab_outside_scope_is_404_like_a_missing_lab(
    client: TestClient, lab: str, make_key: Callable[..., str], add_series: Callable[..., int]
) -> None:
    other = lab + "-other"
    add_series(other, "d", "s", [(datetime(2026, 1, 1, tzinfo=UTC), 1.0)])
    key = make_key(lab)
    outside = client.get(f"/v1/labs/{other}/aggregates", params=RANGE, headers=bearer(key))
    assert outside.status_code == 404
    assert outside.json() == {"detail": f"lab '{other}' not found"}
    # a lab in the scope without data is fine: an empty answer
    mine = client.get(f"/v1/labs/{lab}/aggregates", params=RANGE, headers=bearer(key))
    assert mine.status_code == 200 and mine.json() == {"data": [], "next": None}
    invalid = client.get("/v1/labs/NOT%20A%20LAB/aggregates", params=RANGE, headers=bearer(key))
    assert invalid.status_code == 404
    assert invalid.json() == {"detail": "lab 'NOT A LAB' not found"}


def test_all_labs_key(
    client: TestClient, lab: str, make_key: Callable[..., str], add_series: Callable[..., int]
) -> None:
    add_series(lab + "-1", "d", "s", [(datetime(2026, 1, 1, tzinfo=UTC), 1.0)])
    add_series(lab + "-2", "d", "s", [(datetime(2026, 1, 1, tzinfo=UTC), 2.0)])
    star = bearer(make_key("*"))
    labs = [row["lab"] for row in client.get("/v1/labs", headers=star).json()["data"]]
    assert {lab + "-1", lab + "-2"} <= set(labs)
    assert labs == sorted(labs)
    for name, value in [(lab + "-1", 1.0), (lab + "-2", 2.0)]:
        resp = client.get(
            f"/v1/labs/{name}/aggregates", params={**RANGE, "stats": "sum"}, headers=star
        )
        assert resp.status_code == 200
        assert [r["sum"] for r in resp.json()["data"]] == [value]
    # a lab nobody has written to does not exist, even for '*'
    resp = client.get(f"/v1/labs/{lab}-3/aggregates", params=RANGE, headers=star)
    assert resp.status_code == 404


def test_labs_counts(
    client: TestClient, lab: str, make_key: Callable[..., str], add_series: Callable[..., int]
) -> None:
    t = [datetime(2026, 5, d, 12, tzinfo=UTC) for d in range(1, 6)]
    add_series(lab, "dev-1", "no2", [(t[1], 1.0), (t[2], 2.0)])
    add_series(lab, "dev-1", "pm25", [(t[3], 1.0)])
    add_series(lab, "dev-2", "no2", [(t[0], 1.0), (t[4], 1.0), (t[2], 5.0)])
    add_series(lab + "-x", "dev-9", "no2", [(t[0], 1.0)])  # not in the scope
    empty = lab + "-empty"
    resp = client.get("/v1/labs", headers=bearer(make_key(lab, empty)))
    assert resp.status_code == 200
    assert resp.json() == {
        "data": [
            {
                "lab": lab,
                "device_count": 2,
                "sensor_count": 3,
                "reading_count": 6,
                "first_reading": "2026-05-01T12:00:00Z",
                "last_reading": "2026-05-05T12:00:00Z",
            },
            {
                "lab": empty,
                "device_count": 0,
                "sensor_count": 0,
                "reading_count": 0,
                "first_reading": None,
                "last_reading": None,
            },
        ],
        "next": None,
    }
