"""The JSON telemetry payloads of CONTRACT.md (topic ``livelab/{lab}/{device}/telemetry``).

Three forms, as devices send them:

1. ``{"no2": 17.4, "pm25": 8.1}`` - values measured now (the worker's receive time).
2. ``{"ts": T, "values": {"no2": 17.4}}`` - values measured at T: an RFC 3339 string with
   offset, or a JSON number of milliseconds since the Unix epoch.
3. ``[obj, obj, ...]`` - a JSON array of objects of forms 1 or 2.

Decisions that ingest follows too (they make the forms unambiguous):

- In an object, the keys ``ts`` and ``values`` are reserved: an object with ``values`` is form
  2 (``ts`` optional, meaning the receive time; no other keys allowed); any other object is
  form 1, and ``ts`` in it is an error, not a sensor.
- A value is a finite number or ``true``/``false`` (stored as 1/0). NaN and Infinity are not
  JSON (RFC 8259), so `encode` refuses them.
- An object must not repeat a key (ingest rejects it, naming the key); a dict cannot, so the
  builders here never do.
- A message is at most `MAX_PAYLOAD_BYTES` of UTF-8 and carries at most
  `MAX_READINGS_PER_MESSAGE` readings.

The builders here (`now_values`, `timed_values`, `batch`, `encode`) are what simulators and
tests use to make payloads; `json_schema()` returns the same rules as a JSON Schema (draft
2020-12, the file ``schemas/telemetry.schema.json``) for device developers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal, TypeAlias

from schemas.names import describe_bad_name, is_sensor
from schemas.times import EPOCH, format_rfc3339

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 10_000
RESERVED_KEYS = frozenset({"ts", "values"})
SCHEMA_FILE = "telemetry.schema.json"

Value: TypeAlias = float | int | bool
TsFormat: TypeAlias = Literal["rfc3339", "epoch_ms"]
Form1: TypeAlias = dict[str, Value]
Form2: TypeAlias = dict[str, Any]  # {"ts": str | int, "values": {sensor: value}}
Payload: TypeAlias = dict[str, Any] | list[dict[str, Any]]


class PayloadError(ValueError):
    """A payload that the contract does not allow (bad name, value, time or size)."""


def _check_values(values: Mapping[str, Value], *, form1: bool) -> dict[str, Value]:
    if not values:
        raise PayloadError("a telemetry object needs at least one reading")
    if len(values) > MAX_READINGS_PER_MESSAGE:
        raise PayloadError(
            f"{len(values)} readings in one object; at most {MAX_READINGS_PER_MESSAGE} allowed"
        )
    out: dict[str, Value] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not is_sensor(name):
            raise PayloadError(describe_bad_name("sensor", str(name)))
        if form1 and name in RESERVED_KEYS:
            raise PayloadError(
                f"{name!r} is a reserved key and cannot name a sensor in a form 1 object; "
                'send {"ts": ..., "values": {...}} instead'
            )
        if isinstance(value, bool):
            out[name] = value
        elif isinstance(value, int | float):
            if not math.isfinite(value):
                raise PayloadError(f"sensor {name!r}: value {value!r} is not a finite number")
            out[name] = value
        else:
            raise PayloadError(f"sensor {name!r}: value {value!r} is not a number or true/false")
    return out


def format_ts(ts: datetime | int, ts_format: TsFormat = "rfc3339") -> str | int:
    """A timestamp as form 2 carries it: RFC 3339 text, or epoch milliseconds (an int).

    A datetime must be aware; it is written with millisecond precision either way so both
    spellings mean the same instant. An int is taken as epoch milliseconds already.
    """
    if isinstance(ts, bool):
        raise PayloadError(f"timestamp {ts!r} is not a datetime or epoch milliseconds")
    if isinstance(ts, int):
        ms = ts
    elif isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise PayloadError(f"timestamp {ts.isoformat()} has no UTC offset (naive datetime)")
        ms = epoch_ms(ts)
    else:
        raise PayloadError(f"timestamp {ts!r} is not a datetime or epoch milliseconds")
    if ts_format == "epoch_ms":
        return ms
    if ts_format == "rfc3339":
        if isinstance(ts, datetime):
            # Keep the caller's offset (e.g. +02:00), truncated to milliseconds.
            return _format_ms(ts.replace(microsecond=ts.microsecond // 1000 * 1000))
        return _format_ms(from_ms(ms))
    raise ValueError(f"unknown ts_format {ts_format!r}; use 'rfc3339' or 'epoch_ms'")


def _format_ms(dt: datetime) -> str:
    text = format_rfc3339(dt)
    # isoformat writes 6 fraction digits when there are microseconds; we only keep ms.
    if dt.microsecond:
        head, _, rest = text.partition(".")
        frac, offset = rest[:6], rest[6:]
        text = f"{head}.{frac[:3]}{offset}"
    return text


def epoch_ms(dt: datetime) -> int:
    """An aware datetime as whole milliseconds since the Unix epoch (floored)."""
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def now_values(values: Mapping[str, Value]) -> Form1:
    """Form 1: ``{"no2": 17.4, ...}``, values measured now."""
    return _check_values(values, form1=True)


def timed_values(
    ts: datetime | int | None, values: Mapping[str, Value], *, ts_format: TsFormat = "rfc3339"
) -> Form2:
    """Form 2: ``{"ts": T, "values": {...}}``; ``ts=None`` leaves ``ts`` out (receive time).

    `ts` is an aware datetime or epoch milliseconds; `ts_format` chooses how it is written.
    """
    checked = _check_values(values, form1=False)
    if ts is None:
        return {"values": checked}
    return {"ts": format_ts(ts, ts_format), "values": checked}


def batch(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Form 3: a JSON array of form 1/2 objects (built with `now_values`/`timed_values`)."""
    items = [dict(obj) for obj in objects]
    if not items:
        raise PayloadError("a form 3 array needs at least one object")
    total = sum(count_readings(obj) for obj in items)
    if total > MAX_READINGS_PER_MESSAGE:
        raise PayloadError(
            f"{total} readings in one message; at most {MAX_READINGS_PER_MESSAGE} allowed"
        )
    return items


def count_readings(payload: Mapping[str, Any] | list[Any]) -> int:
    """How many readings a payload built here carries."""
    if isinstance(payload, list):
        return sum(count_readings(obj) for obj in payload)
    if "values" in payload:
        return len(payload["values"])
    return len(payload)


def encode(payload: Payload) -> bytes:
    """Compact UTF-8 JSON bytes; raises `PayloadError` for NaN/Infinity or an oversize result."""
    try:
        data = json.dumps(
            payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
    except ValueError as exc:  # "Out of range float values are not JSON compliant"
        raise PayloadError(f"payload is not valid JSON: {exc}") from exc
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"payload is {len(data)} bytes; at most {MAX_PAYLOAD_BYTES} bytes allowed"
        )
    return data


@cache
def _schema_text() -> str:
    return resources.files("schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of forms 1-3, a fresh dict on every call."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema
