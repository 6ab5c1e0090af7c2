"""Unit tests of schemas.times: RFC 3339 as the contract spells it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.times import format_rfc3339, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-01T12:00:00Z", datetime(2026, 6, 1, 12, tzinfo=UTC)),
        ("2026-06-01t12:00:00.5z", datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        (
            "2026-06-01T14:00:00.250+02:00",
            datetime(2026, 6, 1, 14, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2026-06-30T23:59:60Z", datetime(2026, 7, 1, tzinfo=UTC)),
    ],
)
def test_valid(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\uff12\uff10\uff12\uff16-06-01T12:00:00Z",  # fullwidth: str.isdigit, not RFC 3339 DIGIT
        "2026-0\u0666-01T12:00:00Z",  # an Arabic-Indic six
        "2026-06-01T12:00:00.\u09e7Z",  # a Bengali one in the fraction
        "2026-06-01T12:00:00+0\uff12:00",
        "2026-06-01T12:00:00",
        "2026-06-01 12:00:00Z",
        "2026-06-01T12:00:00Z\n",
    ],
)
def test_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match="is not an RFC 3339 timestamp"):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:60Z", "2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z"]
)
def test_out_of_range_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="is not a valid date and time"):
        parse_rfc3339(text)


def test_format_round_trip() -> None:
    dt = datetime(2026, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert format_rfc3339(dt) == "2026-06-01T12:00:00.123000Z"
    assert parse_rfc3339(format_rfc3339(dt)) == dt
