"""Durations as people write them: ``90s``, ``15m``, ``6h``, ``2d``, ``1w``, ``1h30m``, ``500ms``
(a plain number means seconds), for the CLI and scenario files (`Duration`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str | float | timedelta) -> timedelta:
    """'90' or '90s', '15m', '6h', '2d', '1w', '1h30m', '500ms', a number of seconds or a
    timedelta, at least 1 ms; ValueError with an example of the expected form."""
    if isinstance(text, timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and _WHOLE.fullmatch(clean := text.strip().lower()):
        parts = _PART.findall(clean) or [(clean, "")]
        seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    else:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 15m, 6h, 2d, 1h30m)")
    if not 0.001 <= seconds < float("inf"):
        raise ValueError(f"{text!r}: the duration must be positive (1 ms at least)")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """The shortest of the forms above: 60s -> '1m', 5400s -> '1h30m', 0.5s -> '500ms'."""
    ms = round(td / timedelta(milliseconds=1))
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        out.append(f"{ms}ms")
    return "".join(out) or "0s"


#: A duration field of a pydantic model: '60s', '15m', '1h30m' or a number of seconds.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
