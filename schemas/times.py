"""Timestamps as CONTRACT.md spells them: RFC 3339 with an offset, or epoch milliseconds."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

# RFC 3339 date-time: full date, 'T' (or 't' / space is NOT allowed here), full time with a
# mandatory offset ('Z' or +hh:mm). datetime.fromisoformat alone would also take naive times,
# week dates and other ISO 8601 forms that the contract does not allow. DIGIT is ASCII 0-9
# (RFC 3339 uses RFC 5234's core rules): without re.ASCII, `\d` would also take fullwidth or
# Arabic-Indic digits, which int() reads happily.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset into an aware datetime (microsecond precision).

    Raises ValueError with a message fit to show to the sender.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(
            f"{text[:64]!r} is not an RFC 3339 timestamp with offset "
            "(e.g. 2026-06-01T12:00:00Z or 2026-06-01T14:00:00.250+02:00)"
        )
    year, month, day, hour, minute, second, frac, offset = m.groups()
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            raise ValueError(f"{text[:64]!r} has an invalid offset {offset!r}")
        tz = timezone(sign * timedelta(hours=oh, minutes=om))
    sec = int(second)
    leap = sec == 60  # RFC 3339 allows a leap second; store it as the next second's start
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), 59 if leap else sec, micro, tz
        )
        return dt + timedelta(seconds=1) if leap else dt
    except (ValueError, OverflowError) as exc:  # OverflowError: 9999-12-31T23:59:60Z
        raise ValueError(f"{text[:64]!r} is not a valid date and time: {exc}") from None


def from_epoch_ms(ms: float) -> datetime:
    """Milliseconds since the Unix epoch to an aware UTC datetime. Raises ValueError."""
    if not math.isfinite(ms):
        raise ValueError("timestamp is not a finite number")
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise ValueError(f"timestamp {ms!r} ms is out of range") from None


def format_rfc3339(dt: datetime) -> str:
    """An aware datetime as RFC 3339 ('Z' for UTC, else its own offset)."""
    text = dt.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def local_day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) of the local calendar day `day` in `zone`. fold=0: a midnight
    skipped by a DST change maps to the instant of the change (the day's first real instant); a
    repeated one to its first occurrence."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
