"""Property-based tests of the message rules: no input makes `parse_message` raise, a bad
message gives one rejection, and the valid readings of a mixed message are all returned."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.parse import Limits, Parsed, parse_message
from schemas.names import is_sensor
from schemas.telemetry import epoch_ms, format_ts

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
TOPIC = "livelab/oceanhamnen/aq-01/telemetry"
SENML = "livelab/oceanhamnen/aq-01/senml"
LIMITS = Limits()

# Fast and deterministic enough for CI on a busy machine: no deadline (no timed assertions),
# no example database written into the worktree.
FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(parsed: Parsed, topic: str) -> None:
    """What holds for every message, good or bad."""
    for lab, device, sensor, when, value in parsed.readings:
        assert (lab, device) == ("oceanhamnen", "aq-01")
        assert is_sensor(sensor)
        assert LIMITS.min_time <= when <= NOW + LIMITS.max_future
        assert type(value) is float and math.isfinite(value)
    for (lab, device, sensor), unit in parsed.units.items():
        assert (lab, device) == ("oceanhamnen", "aq-01") and is_sensor(sensor)
        assert 0 < len(unit) <= 64 and unit.isprintable()
    rejection = parsed.rejection
    if rejection is None:
        assert parsed.readings, "a message without readings must be rejected"
        return
    assert (rejection.lab, rejection.device, rejection.topic) == ("oceanhamnen", "aq-01", topic)
    assert rejection.reason and rejection.rejected_count >= 0
    # The reason goes into a PostgreSQL text column: valid UTF-8, no NUL.
    rejection.reason.encode("utf-8")
    assert "\x00" not in rejection.reason


def parse(topic: str, payload: bytes) -> Parsed:
    parsed = parse_message(topic, payload, NOW, LIMITS)
    check(parsed, topic)
    return parsed


TOPICS = st.sampled_from([TOPIC, SENML])

# -- Arbitrary input ----------------------------------------------------------------------

# Keys the parser gives meaning to, beside arbitrary text.
KEYS = st.sampled_from(
    ["ts", "values", "bn", "bt", "bu", "bv", "n", "v", "vb", "vs", "vd", "s", "t", "u", "no2"]
) | st.text(max_size=6)

# JSON text, built by hand so that it can hold what json.dumps never writes: repeated keys,
# NaN/Infinity, integers past int()'s 4300-digit limit, lone surrogates.
SCALARS = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "-Infinity", "1e400", "-0", '"\\ud800"']),
    st.integers(min_value=4301, max_value=5000).map(lambda digits: "9" * digits),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=0, max_value=2 * epoch_ms(NOW)).map(str),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: json.dumps(format_ts(d))),
    st.text(max_size=8).map(json.dumps),
)


def _json_object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


JSON_TEXT = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(KEYS, children), max_size=5).map(_json_object),
    ),
    max_leaves=25,
)


@FAST
@given(topic=TOPICS, payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(topic: str, payload: bytes) -> None:
    parse(topic, payload)


@FAST
@given(topic=TOPICS, text=JSON_TEXT)
def test_arbitrary_json_never_raises(topic: str, text: str) -> None:
    parse(topic, text.encode("utf-8"))


@FAST
@given(
    topic=TOPICS,
    text=JSON_TEXT,
    edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=3)), max_size=4),
)
def test_damaged_json_never_raises(topic: str, text: str, edits: list[tuple[int, bytes]]) -> None:
    payload = bytearray(text.encode("utf-8"))
    for at, chunk in edits:
        at %= len(payload) + 1
        payload[at : at + len(chunk)] = chunk
    parse(topic, bytes(payload))


def test_deep_nesting_is_a_rejection() -> None:
    for topic in (TOPIC, SENML):
        for text in ("[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
            assert parse(topic, text.encode()).rejection is not None


# -- Mixed messages: good parts are stored, bad parts counted, one rejection -------------

SENSORS = st.from_regex(r"[a-z][a-z0-9_.:]{0,11}", fullmatch=True).filter(
    lambda name: name not in ("ts", "values")
)
VALUES = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
TIMES = st.integers(min_value=0, max_value=86_400_000).map(
    lambda ms: NOW - timedelta(milliseconds=ms)
)

Expected = list[tuple[str, datetime, float]]


@st.composite
def good_element(draw: st.DrawFn) -> tuple[str, Expected]:
    """A form 1 or form 2 object and the readings it stands for."""
    readings = draw(st.dictionaries(SENSORS, VALUES, min_size=1, max_size=3))
    if draw(st.booleans()):
        text = json.dumps(readings)
        when = NOW
    else:
        when = draw(TIMES)
        ts = format_ts(when, draw(st.sampled_from(["rfc3339", "epoch_ms"])))
        text = json.dumps({"ts": ts, "values": readings})
    return text, [(s, when, float(v)) for s, v in readings.items()]


# Each with the number of readings it loses. HUGE stands for an integer of 5000 digits (kept
# out of the strategy's repr, which Hypothesis warns about past a few kB).
HUGE = "9" * 5000
BAD_ELEMENTS = [
    ('{"a": "1"}', 1),
    ('{"a": 1, "b": 2, "a": 3}', 2),
    ('{"values": {"a": 1, "a": 2}}', 1),
    ('{"ts": 1, "ts": 2, "values": {"a": 1, "b": 2}}', 2),
    ('{"ts": "2026-06-01T11:00:00", "values": {"a": 1, "b": 2}}', 2),
    ('{"ts": "\\uff12\\uff10\\uff12\\uff16-06-01T11:00:00Z", "values": {"a": 1}}', 1),
    ('{"ts": "9999-12-31T23:59:60Z", "values": {"a": 1}}', 1),
    ('{"ts": true, "values": {"a": 1}}', 1),
    ('{"ts": 946684799999, "values": {"a": 1}}', 1),
    ('{"ts": HUGE, "values": {"a": 1}}', 1),
    ('{"ts": 1780311600000, "values": {"a": 1}, "device": "x"}', 1),
    ('{"x": HUGE}', 1),
    ('{"x": NaN, "y": -Infinity, "z": 1e400}', 3),
    ('{"bad name": 1}', 1),
    ('{"\\ud800": 1}', 1),
    ("5", 1),
    ("[]", 1),
    ("null", 1),
]


Part = tuple[str, Expected, int]  # JSON text, the readings it stands for, readings it loses


def mixed(good: st.SearchStrategy[tuple[str, Expected]], bad: list[tuple[str, int]]):
    """Lists of 1-8 parts, each good or bad."""
    return st.lists(
        st.one_of(
            good.map(lambda g: (g[0], g[1], 0)),
            st.sampled_from(bad).map(lambda b: (b[0].replace("HUGE", HUGE), [], b[1])),
        ),
        min_size=1,
        max_size=8,
    )


def assert_mixed(parsed: Parsed, parts: list[Part], prefix: str = "") -> None:
    """Every good reading returned, in order; one rejection counting what the bad parts lose."""
    expected = [(prefix + s, w, v) for _, readings, _ in parts for s, w, v in readings]
    lost = sum(count for _, _, count in parts)
    assert [(s, w, v) for _, _, s, w, v in parsed.readings] == expected
    if lost:
        assert parsed.rejection is not None
        assert parsed.rejection.rejected_count == lost
    else:
        assert parsed.rejection is None


@FAST
@given(parts=mixed(good_element(), BAD_ELEMENTS))
def test_mixed_telemetry_keeps_every_valid_reading(parts: list[Part]) -> None:
    parsed = parse(TOPIC, ("[" + ",".join(text for text, _, _ in parts) + "]").encode())
    assert_mixed(parsed, parts)


@st.composite
def good_record(draw: st.DrawFn) -> tuple[str, Expected]:
    sensor = draw(SENSORS)
    value = draw(VALUES)
    seconds = draw(st.integers(min_value=-86_400, max_value=0))
    record: dict[str, object] = {"n": sensor, "v": value, "t": seconds}
    if draw(st.booleans()):
        record["u"] = draw(st.sampled_from(["Cel", "ug/m3", "%RH", "dB"]))
    return json.dumps(record), [(sensor, NOW + timedelta(seconds=seconds), float(value))]


BAD_RECORDS = [
    ('{"n": "a", "v": "1"}', 1),
    ('{"n": "a", "v": 1, "v": 2}', 1),
    ('{"n": "a", "v": 1, "vb": true}', 1),
    ('{"n": "a", "vb": 1}', 1),
    ('{"n": "a", "vs": "x"}', 1),
    ('{"n": "a", "vd": "aGk="}', 1),
    ('{"n": "a", "s": 5}', 1),
    ('{"n": "a", "v": NaN}', 1),
    ('{"n": "a", "v": 1e400}', 1),
    ('{"n": "a", "v": HUGE}', 1),
    ('{"n": "a", "v": 1, "t": "x"}', 1),
    ('{"n": "a", "v": 1, "t": true}', 1),
    ('{"n": "a", "v": 1, "t": -1000000000}', 1),
    ('{"n": "a", "v": 1, "t": 3600}', 1),
    ('{"n": "a", "v": 1, "u": 5}', 1),
    ('{"n": "a", "v": 1, "u": "\\u0000"}', 1),
    ('{"n": 5, "v": 1}', 1),
    ('{"n": "bad name", "v": 1}', 1),
    ('{"n": "a"}', 1),
    ("7", 1),
    ("[]", 1),
]


@FAST
@given(base=st.sampled_from(["", "d1:", "urn:dev:x:"]), parts=mixed(good_record(), BAD_RECORDS))
def test_mixed_senml_keeps_every_valid_reading(base: str, parts: list[Part]) -> None:
    pack = [json.dumps({"bn": base, "bt": NOW.timestamp()})] + [text for text, _, _ in parts]
    parsed = parse(SENML, ("[" + ",".join(pack) + "]").encode())
    assert_mixed(parsed, parts, prefix=base)
