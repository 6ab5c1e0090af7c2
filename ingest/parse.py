"""Turn one MQTT message into readings and rejections (pure logic, no I/O).

Implements the message rules of CONTRACT.md for ``livelab/{lab}/{device}/telemetry`` (JSON
telemetry forms 1-3) and ``livelab/{lab}/{device}/senml`` (SenML JSON, RFC 8428). Nothing here
raises for bad input: every problem becomes a plain-words reason in a `Rejection`, and the
valid readings of the same message are still returned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.names import TopicError, describe_bad_name, is_sensor, parse_topic
from schemas.telemetry import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_MESSAGE
from schemas.times import format_rfc3339, from_epoch_ms, parse_rfc3339

# A reading: (lab, device, sensor, time, value).
Reading = tuple[str, str, str, datetime, float]

# One rejection row says at most this many individual reasons; the rest are counted.
MAX_REASONS_PER_ROW = 10
SENML_RELATIVE_LIMIT = 2**28  # RFC 8428 section 4.5.3: times below this are relative to now


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable bounds of what a message may carry."""

    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_readings: int = MAX_READINGS_PER_MESSAGE
    min_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1 or self.max_readings < 1:
            raise ValueError("max_payload_bytes and max_readings must be at least 1")
        if self.min_time.tzinfo is None:
            raise ValueError("min_time must be timezone-aware")
        if self.max_future < timedelta(0):
            raise ValueError("max_future must not be negative")


@dataclass(slots=True)
class Rejection:
    """What could not be stored from one message, and why."""

    lab: str | None
    device: str | None
    topic: str
    reason: str
    rejected_count: int  # readings not stored; 0 when the message could not be read at all


@dataclass(slots=True)
class Parsed:
    readings: list[Reading] = field(default_factory=list)
    rejection: Rejection | None = None
    # The unit of a sensor, where the message said one (SenML `u`/`bu`).
    units: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # True when a reading's time was taken from the receive time (form 1, SenML relative
    # times): a redelivery must then reuse the first receive time (see ingest.receipts).
    relative: bool = False


class _Unreadable:
    """Stands for a JSON number Python cannot hold: NaN, Infinity, or an integer of thousands
    of digits (int() refuses more than 4300), so it is rejected per value, not per message."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what the value is, in words: "NaN", "a number too large"


# An integer longer than this is far beyond a 64-bit float (about 1.8e308) whatever its digits
# are; it is never converted, so int()'s quadratic cost and its digit limit (4300 by default,
# at least 640 when lowered with PYTHONINTMAXSTRDIGITS) never apply.
_MAX_INT_CHARS = 400
_TOO_LARGE = _Unreadable("a number too large for a 64-bit float")


def _int(text: str) -> int | _Unreadable:
    return int(text) if len(text) <= _MAX_INT_CHARS else _TOO_LARGE


class _Repeats(dict[str, Any]):
    """A JSON object that repeats a key (the contract rejects it); `key` is the first repeat."""

    __slots__ = ("key",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                self.key = key
                break
            seen.add(key)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys in silence; this is the cheap way to see them:
    # one dict() per object, and the slow path only when a key was repeated.
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Repeats(pairs)


def _repeated(obj: dict[str, Any], where: str) -> str | None:
    """A reason when `obj` repeats a key, else None."""
    if type(obj) is _Repeats:
        return (
            f"{where}key {_shown(obj.key)} appears more than once; an object must not repeat a key"
        )
    return None


# Built once: json.loads with any keyword builds a new decoder per call, which cost more than
# the hooks do.
_DECODER = json.JSONDecoder(parse_constant=_Unreadable, parse_int=_int, object_pairs_hook=_object)


def _loads(text: str) -> Any:
    return _DECODER.decode(text)


def _shown(text: str, limit: int = 80) -> str:
    """`text` quoted for a reason, shortened; repr() escapes control and surrogate characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _listed(keys: list[str], limit: int = 5) -> str:
    """A sorted list of keys for a reason, at most `limit` of them."""
    shown = "[" + ", ".join(_shown(k, 40) for k in keys[:limit]) + "]"
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, _Unreadable):
        return value.kind
    return type(value).__name__


def _number(value: Any) -> float | str:
    """The reading value as a float, or a reason why it is not one."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return "is too large for a 64-bit float"
        if not math.isfinite(number):
            return "is not a finite number"
        return number
    if isinstance(value, _Unreadable):
        return (
            f"is {value.kind}" if value is _TOO_LARGE else f"is {value.kind}, not a finite number"
        )
    return f"is {_kind(value)}, not a number"


class _Collector:
    """Gathers readings and reasons for one message."""

    def __init__(self, lab: str, device: str, limits: Limits, received_at: datetime) -> None:
        self.lab = lab
        self.device = device
        self.limits = limits
        self.received_at = received_at
        self.latest = received_at + limits.max_future
        self.readings: list[Reading] = []
        self.reasons: list[str] = []
        self.rejected = 0
        self.relative = False  # a time was taken from received_at

    def reject(self, reason: str, count: int = 1) -> None:
        self.reasons.append(reason)
        self.rejected += count

    def check_time(self, when: datetime) -> str | None:
        if when < self.limits.min_time:
            return (
                f"time {format_rfc3339(when)} is before {format_rfc3339(self.limits.min_time)}, "
                "the earliest accepted"
            )
        if when > self.latest:
            ahead = (when - self.received_at).total_seconds()
            return (
                f"time {format_rfc3339(when)} is {ahead:.0f} s after the receive time; at most "
                f"{self.limits.max_future.total_seconds():.0f} s into the future is accepted"
            )
        return None

    def add(self, sensor: Any, value: Any, when: datetime, where: str) -> bool:
        if not isinstance(sensor, str) or not is_sensor(sensor):
            name = sensor if isinstance(sensor, str) else repr(sensor)
            self.reject(f"{where}{describe_bad_name('sensor', name)}")
            return False
        number = _number(value)
        if isinstance(number, str):
            self.reject(f"{where}value of sensor {sensor!r} {number}")
            return False
        self.readings.append((self.lab, self.device, sensor, when, number))
        return True

    def rejection(self, topic: str) -> Rejection | None:
        if not self.reasons:
            return None
        shown = self.reasons[:MAX_REASONS_PER_ROW]
        more = len(self.reasons) - len(shown)
        reason = "; ".join(shown) + (f"; and {more} more problems" if more else "")
        return Rejection(self.lab, self.device, topic, reason, self.rejected)


def parse_message(
    topic: str, payload: bytes, received_at: datetime, limits: Limits = Limits()
) -> Parsed:
    """Validate one message; `received_at` is the worker's receive time (timezone-aware)."""
    try:
        where = parse_topic(topic)
    except TopicError as exc:
        return Parsed(rejection=Rejection(exc.lab, exc.device, topic, str(exc), 0))

    def whole(reason: str) -> Parsed:
        return Parsed(rejection=Rejection(where.lab, where.device, topic, reason, 0))

    if len(payload) > limits.max_payload_bytes:
        return whole(
            f"payload is {len(payload)} bytes; the limit is {limits.max_payload_bytes} bytes"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return whole(f"payload is not UTF-8 text (invalid byte at offset {exc.start})")
    try:
        document = _loads(text)
    except json.JSONDecodeError as exc:
        return whole(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return whole("malformed JSON: nested too deeply")

    collector = _Collector(where.lab, where.device, limits, received_at)
    parsed = Parsed()
    if where.format == "senml":
        problem = _senml(document, collector, parsed.units)
    else:
        problem = _telemetry(document, collector)
    if problem is not None:
        return whole(problem)
    parsed.readings = collector.readings
    parsed.rejection = collector.rejection(topic)
    parsed.relative = collector.relative
    return parsed


# -- JSON telemetry (CONTRACT.md forms 1-3) ----------------------------------------------------


def _telemetry(document: Any, out: _Collector) -> str | None:
    """Fill `out`; return a reason when the whole message must be rejected."""
    if isinstance(document, dict):
        elements = [document]
    elif isinstance(document, list):
        elements = document
    else:
        return (
            f"payload is {_kind(document)}; telemetry must be a JSON object or an array of objects"
        )
    total = sum(_count(element) for element in elements)
    if total > out.limits.max_readings:
        return (
            f"message carries {total} readings; at most {out.limits.max_readings} "
            "are accepted in one message"
        )
    if total == 0:
        return "message carries no readings"
    array = isinstance(document, list)
    for index, element in enumerate(elements):
        where = f"element {index}: " if array else ""
        if not isinstance(element, dict):
            out.reject(f"{where}is {_kind(element)}, not an object of readings")
            continue
        repeated = _repeated(element, where)
        if repeated is not None:
            out.reject(repeated, _count(element))
            continue
        if "values" in element or "ts" in element:
            _timestamped(element, out, where)
        else:
            out.relative = True
            for sensor, value in element.items():
                out.add(sensor, value, out.received_at, where)
    return None


def _count(element: Any) -> int:
    if not isinstance(element, dict):
        return 1
    values = element.get("values") if ("values" in element or "ts" in element) else element
    return len(values) if isinstance(values, dict) else 1


def _timestamped(element: dict[str, Any], out: _Collector, where: str) -> None:
    values = element.get("values")
    count = len(values) if isinstance(values, dict) else 1
    extra = sorted(set(element) - {"ts", "values"})
    if extra:
        out.reject(
            f"{where}unexpected keys {_listed(extra)} beside 'ts' and 'values' "
            '(a timestamped reading is {"ts": T, "values": {...}})',
            count,
        )
        return
    if not isinstance(values, dict):
        out.reject(f"{where}'values' is {_kind(values)}, not an object of readings", count)
        return
    repeated = _repeated(values, f"{where}'values': ")
    if repeated is not None:
        out.reject(repeated, count)
        return
    when = _telemetry_time(element.get("ts"), out.received_at) if "ts" in element else None
    if when is None:
        when = out.received_at
        out.relative = True
    elif isinstance(when, str):
        out.reject(f"{where}{when}", count)
        return
    problem = out.check_time(when)
    if problem:
        out.reject(f"{where}{problem}", count)
        return
    for sensor, value in values.items():
        out.add(sensor, value, when, where)


def _telemetry_time(ts: Any, received_at: datetime) -> datetime | str:
    """The time `ts` stands for, or a reason why it is not a valid time."""
    if isinstance(ts, str):
        try:
            return parse_rfc3339(ts)
        except ValueError as exc:
            return f"ts {exc}"
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        try:
            return from_epoch_ms(float(ts))
        except (ValueError, OverflowError) as exc:
            return f"ts {exc}"
    return (
        f"ts is {_kind(ts)}; it must be an RFC 3339 timestamp with offset "
        "or milliseconds since the Unix epoch"
    )


# -- SenML (RFC 8428, JSON) ---------------------------------------------------------------------

SENML_BASE_FIELDS = ("bn", "bt", "bu", "bv")
SENML_VALUE_FIELDS = ("v", "vb", "vs", "vd")
_VALUE_LABELS = frozenset((*SENML_VALUE_FIELDS, "s"))  # a record with none is base fields only
MAX_UNIT_CHARS = 64


def _finite(label: str, value: Any) -> float | str:
    """A SenML time or base value as a finite float, or a reason (a boolean is not a number)."""
    if isinstance(value, bool):
        return f"{label} is a boolean, not a number"
    number = _number(value)
    return f"{label} {number}" if isinstance(number, str) else number


def _unit_problem(label: str, unit: Any) -> str | None:
    if not isinstance(unit, str):
        return f"{label} is {_kind(unit)}, not a string"
    if len(unit) > MAX_UNIT_CHARS or not unit.isprintable():
        return (
            f"{label} {_shown(unit)} is not valid: a unit is at most {MAX_UNIT_CHARS} printable "
            "characters"
        )
    return None


def _senml_base(label: str, value: Any) -> tuple[Any, str | None]:
    """A base field's value, or a reason why it is invalid."""
    if label == "bn":
        return value, None if isinstance(value, str) else f"bn is {_kind(value)}, not a string"
    if label == "bu":
        return value, _unit_problem("bu", value)
    number = _finite(label, value)
    return (None, number) if isinstance(number, str) else (number, None)


def _senml(document: Any, out: _Collector, units: dict[tuple[str, str, str], str]) -> str | None:
    if not isinstance(document, list):
        return f"SenML pack is {_kind(document)}; it must be a JSON array of records"
    if not document:
        return "SenML pack is empty"
    if len(document) > out.limits.max_readings:
        return (
            f"SenML pack has {len(document)} records; at most {out.limits.max_readings} "
            "are accepted in one message"
        )
    # RFC 8428 section 4.4: a label ending in "_" must be understood, else the whole pack is
    # rejected. livelab understands none.
    must = sorted({k for r in document if isinstance(r, dict) for k in r if k.endswith("_")})
    if must:
        return (
            f"SenML pack uses must-understand labels {_listed(must)} that livelab does not support"
        )
    # Base fields apply to their record and every later one (RFC 8428 section 4.1). One that is
    # invalid (or repeated) leaves every later record that uses it unreadable, until a valid one
    # replaces it: storing those records without their base would store wrong data.
    base: dict[str, Any] = {"bn": "", "bt": 0.0, "bu": None, "bv": 0.0}
    broken: dict[str, str] = {}  # base field -> "bv of record 3" while it is invalid
    for index, record in enumerate(document):
        where = f"record {index}: "
        if not isinstance(record, dict):
            out.reject(f"{where}is {_kind(record)}, not a SenML record")
            continue
        carries = 1 if not _VALUE_LABELS.isdisjoint(record) else 0
        problem = _repeated(record, where)
        if problem is not None:
            for label in SENML_BASE_FIELDS:
                if label in record:
                    broken[label] = f"{label} of record {index}"
            out.reject(problem, carries)
            continue
        for label in SENML_BASE_FIELDS:
            if label in record:
                value, invalid = _senml_base(label, record[label])
                if invalid is None:
                    base[label] = value
                    broken.pop(label, None)
                else:
                    broken[label] = f"{label} of record {index}"
                    problem = problem or f"{where}{invalid}"
        if problem is not None:
            out.reject(problem, carries)
            continue
        if not carries:
            if "n" in record or "t" in record:
                out.reject(f"{where}has no value (v or vb)")
            continue  # a record of base fields only
        if broken:
            uses = ("bn", "bt", "bv" if "v" in record else "", "" if "u" in record else "bu")
            depends = next((broken[label] for label in uses if label in broken), None)
            if depends is not None:
                out.reject(f"{where}not stored: it depends on {depends}, which is invalid")
                continue
        _senml_record(record, where, base, out, units)
    if not out.readings and not out.reasons:  # only base fields: nothing stored, nothing said
        return "SenML pack carries no readings"
    return None


def _senml_record(
    record: dict[str, Any],
    where: str,
    base: dict[str, Any],
    out: _Collector,
    units: dict[tuple[str, str, str], str],
) -> None:
    """Store or reject one record that carries a value; `base` holds valid base fields."""
    name = record.get("n", "")
    if not isinstance(name, str):
        out.reject(f"{where}n is {_kind(name)}, not a string")
        return
    sensor = base["bn"] + name
    value_keys = [k for k in SENML_VALUE_FIELDS if k in record]
    if len(value_keys) > 1:
        out.reject(
            f"{where}sensor {_shown(sensor)} has more than one value ({', '.join(value_keys)})"
        )
        return
    if "vs" in record or "vd" in record:
        kind = "string (vs)" if "vs" in record else "data (vd)"
        out.reject(f"{where}sensor {_shown(sensor)} has a {kind} value; only numbers are stored")
        return
    value: float
    if "v" in record:
        if isinstance(record["v"], bool):
            out.reject(f"{where}value of sensor {_shown(sensor)} is a boolean in 'v'; use 'vb'")
            return
        number = _number(record["v"])
        if isinstance(number, str):
            out.reject(f"{where}value of sensor {_shown(sensor)} {number}")
            return
        value = number + base["bv"]
        if not math.isfinite(value):
            out.reject(f"{where}value of sensor {_shown(sensor)} plus bv is beyond a 64-bit float")
            return
    elif "vb" in record:
        if not isinstance(record["vb"], bool):
            out.reject(
                f"{where}vb of sensor {_shown(sensor)} is {_kind(record['vb'])}, not a boolean"
            )
            return
        value = 1.0 if record["vb"] else 0.0
    else:
        out.reject(f"{where}sensor {_shown(sensor)} has only a sum (s); no value is stored")
        return
    unit = base["bu"]
    if "u" in record:
        problem = _unit_problem("u", record["u"])
        if problem is not None:
            out.reject(f"{where}{problem}")
            return
        unit = record["u"]
    t = _finite("t", record["t"]) if "t" in record else 0.0
    if isinstance(t, str):
        out.reject(f"{where}{t}")
        return
    seconds = base["bt"] + t
    try:
        if abs(seconds) < SENML_RELATIVE_LIMIT:
            when = out.received_at + timedelta(seconds=seconds)
            out.relative = True
        else:
            when = from_epoch_ms(seconds * 1000.0)
    except (ValueError, OverflowError):
        out.reject(f"{where}time {seconds!r} s is out of range")
        return
    problem = out.check_time(when)
    if problem:
        out.reject(f"{where}{problem}")
        return
    if out.add(sensor, value, when, where) and unit:
        units[(out.lab, out.device, sensor)] = unit
