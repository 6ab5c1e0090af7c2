"""Durations as people write them: ``90s``, ``15m``, ``6h``, ``2d``, ``1w``, ``1h30m``, ``500ms``.

Used by the CLI and by scenario files (where a plain number means seconds).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str | float) -> timedelta:
    """'90' or '90s', '15m', '6h', '2d', '1w', '1h30m', '500ms' (or a number of seconds);
    ValueError with an example of the expected form."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and _WHOLE.fullmatch(clean := text.strip().lower()):
        parts = _PART.findall(clean) or [(clean, "")]
        seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    else:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 15m, 6h, 2d, 1h30m)")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{text!r}: the duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """The shortest of the forms above: 60s -> '1m', 5400s -> '1h30m', 0.5s -> '500ms'."""
    ms = round(td / timedelta(milliseconds=1))
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


def _duration_value(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str | int | float):
        raise ValueError("a duration is text like '60s', '15m', '1h30m' or a number of seconds")
    td = parse_duration(value)
    if td < timedelta(milliseconds=1):
        raise ValueError(f"{value!r} is shorter than 1 ms")
    return td


#: A duration field of a pydantic model: '60s', '15m', '1h30m' or a number of seconds.
Duration = Annotated[timedelta, BeforeValidator(_duration_value)]
