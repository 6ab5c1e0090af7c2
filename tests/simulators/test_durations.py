"""Durations as people write them, and back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simulators.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172_800), ("1w", 604_800),
     ("500ms", 0.5), (" 6H ", 21_600), (2.5, 2.5), (60, 60)],
)  # fmt: skip
def test_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "6 hours", "1h30", "m5", "0", "0s", True, -5])
def test_parse_refuses(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "1m"), (5400, "1h30m"), (0.5, "500ms"), (86_400 + 1, "1d1s"), (0, "0s")],
)
def test_format_is_the_shortest_form_and_parses_back(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    if seconds:
        assert parse_duration(text) == timedelta(seconds=seconds)
