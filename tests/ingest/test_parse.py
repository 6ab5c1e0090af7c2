"""Unit tests of the message rules (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ingest.parse import Limits, parse_message

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
TOPIC = "livelab/oceanhamnen/aq-01/telemetry"
SENML = "livelab/oceanhamnen/aq-01/senml"


DEFAULT_LIMITS = Limits()


def parse(payload: object, topic: str = TOPIC, limits: Limits = DEFAULT_LIMITS):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(topic, raw, NOW, limits)


def values(parsed) -> list[tuple[str, datetime, float]]:
    return [(sensor, when, value) for _, _, sensor, when, value in parsed.readings]


def test_form1_values_measured_now() -> None:
    p = parse({"no2": 17.4, "pm25": 8, "door": True, "alarm": False})
    assert p.rejection is None
    assert values(p) == [
        ("no2", NOW, 17.4),
        ("pm25", NOW, 8.0),
        ("door", NOW, 1.0),
        ("alarm", NOW, 0.0),
    ]
    assert {r[:2] for r in p.readings} == {("oceanhamnen", "aq-01")}


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-06-01T11:00:00.123Z", datetime(2026, 6, 1, 11, 0, 0, 123000, tzinfo=UTC)),
        ("2026-06-01T13:00:00+02:00", datetime(2026, 6, 1, 11, 0, tzinfo=UTC)),
        ("2026-06-01t11:00:00.1234567z", datetime(2026, 6, 1, 11, 0, 0, 123456, tzinfo=UTC)),
        (1780311600000, datetime(2026, 6, 1, 11, 0, tzinfo=UTC)),
        (1780311600000.5, datetime(2026, 6, 1, 11, 0, 0, 500, tzinfo=UTC)),
    ],
)
def test_form2_timestamps(ts: object, expected: datetime) -> None:
    p = parse({"ts": ts, "values": {"no2": 1.5}})
    assert p.rejection is None
    assert values(p) == [("no2", expected, 1.5)]


def test_form3_array_mixes_forms() -> None:
    p = parse([{"a": 1}, {"ts": "2026-06-01T11:59:00Z", "values": {"a": 2, "b": 3}}])
    assert p.rejection is None
    t = datetime(2026, 6, 1, 11, 59, tzinfo=UTC)
    assert values(p) == [("a", NOW, 1.0), ("a", t, 2.0), ("b", t, 3.0)]


def test_values_without_ts_means_now() -> None:
    assert values(parse({"values": {"a": 1}})) == [("a", NOW, 1.0)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'"just a string"', "payload is a string"),
        (b"42", "payload is int"),
        (b"{}", "no readings"),
        (b"[]", "no readings"),
    ],
)
def test_whole_message_rejections(payload: bytes, reason: str) -> None:
    p = parse(payload)
    assert p.readings == []
    assert p.rejection is not None
    assert reason in p.rejection.reason
    assert (p.rejection.lab, p.rejection.device, p.rejection.topic) == (
        "oceanhamnen",
        "aq-01",
        TOPIC,
    )


def test_bad_values_are_rejected_and_good_ones_kept() -> None:
    raw = b'{"ok": 1, "s": "12", "n": null, "nan": NaN, "inf": -Infinity, "big": 1e400, "o": {}}'
    p = parse(raw)
    assert values(p) == [("ok", NOW, 1.0)]
    assert p.rejection is not None
    assert p.rejection.rejected_count == 6
    reason = p.rejection.reason
    for part in (
        "'s' is a string",
        "'n' is null",
        "'nan' is NaN",
        "'inf' is -Infinity",
        "'big' is not a finite number",
        "'o' is an object",
    ):
        assert part in reason


def test_huge_integer_is_rejected_not_crashing() -> None:
    p = parse(b'{"x": ' + b"9" * 400 + b', "y": 2}')
    assert values(p) == [("y", NOW, 2.0)]
    assert "too large" in p.rejection.reason


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 129, "ä", "a,b"])
def test_sensor_names_outside_alphabet(name: str) -> None:
    p = parse({name: 1, "good.name:1/x_y-z": 2})
    assert values(p) == [("good.name:1/x_y-z", NOW, 2.0)]
    assert "sensor name" in p.rejection.reason


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ("1999-12-31T23:59:59Z", "before 2000-01-01T00:00:00Z"),
        ("2026-06-01T12:05:01Z", "301 s after the receive time"),
        ("2026-06-01T12:00:00", "not an RFC 3339 timestamp with offset"),
        ("2026-06-01", "not an RFC 3339"),
        ("2026-02-30T00:00:00Z", "not a valid date"),
        (True, "ts is a boolean"),
        (None, "ts is null"),
        (1e300, "out of range"),
    ],
)
def test_bad_times_reject_the_element(ts: object, reason: str) -> None:
    p = parse([{"ts": ts, "values": {"a": 1, "b": 2}}, {"c": 3}])
    assert values(p) == [("c", NOW, 3.0)]
    assert reason in p.rejection.reason
    assert p.rejection.rejected_count == 2


def test_time_bounds_are_configurable() -> None:
    limits = Limits(min_time=datetime(2026, 1, 1, tzinfo=UTC), max_future=timedelta(hours=1))
    p = parse(
        [
            {"ts": "2025-12-31T23:00:00Z", "values": {"a": 1}},
            {"ts": "2026-06-01T12:30:00Z", "values": {"a": 2}},
        ],
        limits=limits,
    )
    assert [v for _, _, v in values(p)] == [2.0]
    assert "before 2026-01-01" in p.rejection.reason


def test_extra_keys_beside_ts_and_values() -> None:
    p = parse({"ts": 1780311600000, "values": {"a": 1}, "device": "x"})
    assert p.readings == []
    assert "unexpected keys ['device']" in p.rejection.reason


def test_oversize_payload() -> None:
    limits = Limits(max_payload_bytes=100)
    p = parse({"a": "x" * 200}, limits=limits)
    assert p.readings == []
    assert "the limit is 100 bytes" in p.rejection.reason


def test_too_many_readings_in_one_message() -> None:
    p = parse({f"s{i}": i for i in range(10_001)})
    assert p.readings == []
    assert "10001 readings; at most 10000" in p.rejection.reason
    assert len(parse({f"s{i}": i for i in range(10_000)}).readings) == 10_000


def test_array_element_that_is_not_an_object() -> None:
    p = parse([{"a": 1}, 5, "x"])
    assert values(p) == [("a", NOW, 1.0)]
    assert "element 1: is int" in p.rejection.reason
    assert "element 2: is a string" in p.rejection.reason


def test_many_problems_are_summarised() -> None:
    p = parse({f"s{i}": "bad" for i in range(25)})
    assert p.rejection.rejected_count == 25
    assert "and 15 more problems" in p.rejection.reason


@pytest.mark.parametrize(
    ("topic", "lab", "reason"),
    [
        ("livelab/oceanhamnen/aq-01/status", "oceanhamnen", "unknown format 'status'"),
        ("livelab/Oceanhamnen/aq-01/telemetry", None, "lab name 'Oceanhamnen'"),
        ("livelab/oceanhamnen/AQ 1/telemetry", "oceanhamnen", "device name"),
        ("livelab/oceanhamnen/telemetry", "oceanhamnen", "outside the scheme"),
        ("livelab/oceanhamnen/aq-01/telemetry/x", "oceanhamnen", "outside the scheme"),
    ],
)
def test_topics_outside_the_scheme(topic: str, lab: str | None, reason: str) -> None:
    p = parse({"a": 1}, topic=topic)
    assert p.readings == []
    assert p.rejection.lab == lab
    assert reason in p.rejection.reason


# -- SenML ----------------------------------------------------------------------------------


def test_senml_base_fields_and_units() -> None:
    t0 = 1780311600.0  # 2026-06-01T11:00:00Z
    p = parse(
        [
            {"bn": "urn:dev:aq01:", "bt": t0, "bu": "ug/m3", "n": "no2", "v": 17.4},
            {"n": "pm25", "v": 8.1, "t": 60},
            {"n": "temp", "u": "Cel", "v": 21.5},
            {"n": "door", "vb": True},
        ],
        topic=SENML,
    )
    assert p.rejection is None
    t = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    assert values(p) == [
        ("urn:dev:aq01:no2", t, 17.4),
        ("urn:dev:aq01:pm25", t + timedelta(seconds=60), 8.1),
        ("urn:dev:aq01:temp", t, 21.5),
        ("urn:dev:aq01:door", t, 1.0),
    ]
    assert p.units[("oceanhamnen", "aq-01", "urn:dev:aq01:no2")] == "ug/m3"
    assert p.units[("oceanhamnen", "aq-01", "urn:dev:aq01:temp")] == "Cel"


def test_senml_relative_times_and_base_value() -> None:
    p = parse([{"bn": "x", "bv": 100, "n": "", "v": 1.5, "t": -30}], topic=SENML)
    assert values(p) == [("x", NOW - timedelta(seconds=30), 101.5)]


def test_senml_string_and_data_values_are_rejected_numbers_kept() -> None:
    p = parse(
        [
            {"bn": "d:", "n": "label", "vs": "hello"},
            {"n": "blob", "vd": "aGk="},
            {"n": "t", "v": 3},
        ],
        topic=SENML,
    )
    assert values(p) == [("d:t", NOW, 3.0)]
    assert p.rejection.rejected_count == 2
    assert "string (vs) value" in p.rejection.reason
    assert "data (vd) value" in p.rejection.reason


@pytest.mark.parametrize(
    ("pack", "reason"),
    [
        ({"n": "x", "v": 1}, "must be a JSON array"),
        ([], "empty"),
    ],
)
def test_senml_malformed_packs(pack: object, reason: str) -> None:
    p = parse(pack, topic=SENML)
    assert p.readings == []
    assert reason in p.rejection.reason


def test_senml_must_understand_labels_reject_the_pack() -> None:
    p = parse([{"n": "a", "v": 1}, {"n": "b", "v": 2, "lat_": 56.04}], topic=SENML)
    assert p.readings == []
    assert "must-understand labels ['lat_']" in p.rejection.reason


def test_senml_record_problems_keep_the_rest() -> None:
    p = parse(
        [
            {"n": "a", "v": "1"},
            {"n": "b", "vb": 1},
            {"n": "c", "v": 2, "t": "x"},
            {"n": "d", "v": 4},
        ],
        topic=SENML,
    )
    assert values(p) == [("d", NOW, 4.0)]
    assert p.rejection.rejected_count == 3
    assert "record 0: value of sensor 'a' is a string" in p.rejection.reason
    assert "record 1: vb of sensor 'b' is int, not a boolean" in p.rejection.reason
    assert "record 2: t is a string" in p.rejection.reason


# -- Input that once escaped the rules (issue 7) ----------------------------------------------


def test_integer_beyond_python_digit_limit_is_a_rejection_not_a_crash() -> None:
    # More than sys.get_int_max_str_digits() (4300) digits: int() raises ValueError, which is
    # not a JSONDecodeError.
    p = parse(b'{"x": ' + b"9" * 5000 + b', "y": 2}')
    assert values(p) == [("y", NOW, 2.0)]
    assert p.rejection is not None
    assert p.rejection.rejected_count == 1
    assert "value of sensor 'x' is a number too large" in p.rejection.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"ts": -' + b"1" * 5000 + b', "values": {"a": 1}}', "ts is a number too large"),
        (
            b'[{"n": "a", "v": 1, "t": ' + b"1" * 5000 + b"}]",
            "record 0: t is a number too large",
        ),
        (b'[{"bt": ' + b"1" * 5000 + b', "n": "a", "v": 1}]', "record 0: bt is a number too"),
        (b"1" * 5000, "payload is a number too large"),
    ],
)
def test_huge_integers_anywhere(raw: bytes, reason: str) -> None:
    p = parse(raw, topic=SENML if raw.startswith(b"[") else TOPIC)
    assert p.readings == []
    assert reason in p.rejection.reason


@pytest.mark.parametrize(
    ("raw", "reason", "kept"),
    [
        (b'{"a": 1, "b": 2, "a": 3}', "key 'a' appears more than once", []),
        (b'{"values": {"a": 1, "a": 2}}', "'values': key 'a' appears more than once", []),
        (
            b'{"ts": 1780311600000, "values": {"a": 1}, "ts": 1780311660000}',
            "key 'ts' appears more than once",
            [],
        ),
        (
            b'[{"b": 1}, {"a": 1, "a": 2}, {"values": {"c": 1, "c": 1}}]',
            "element 1: key 'a' appears more than once",
            [("b", NOW, 1.0)],
        ),
    ],
)
def test_repeated_keys_are_rejected_naming_the_key(
    raw: bytes, reason: str, kept: list[tuple[str, datetime, float]]
) -> None:
    p = parse(raw)
    assert values(p) == kept
    assert reason in p.rejection.reason


def test_repeated_keys_count_the_readings_not_stored() -> None:
    p = parse(b'[{"b": 1}, {"a": 1, "a": 2, "c": 3}, {"values": {"d": 1, "d": 1, "e": 0}}]')
    assert values(p) == [("b", NOW, 1.0)]
    assert p.rejection.rejected_count == 4
    assert "element 2: 'values': key 'd' appears more than once" in p.rejection.reason


def test_repeated_key_in_a_senml_record() -> None:
    p = parse(b'[{"n": "a", "v": 1, "v": 2}, {"n": "b", "v": 3}]', topic=SENML)
    assert values(p) == [("b", NOW, 3.0)]
    assert p.rejection.rejected_count == 1
    assert "record 0: key 'v' appears more than once" in p.rejection.reason


def test_repeated_base_field_leaves_later_records_without_a_base() -> None:
    # Which bn is meant is unknown, so the records after it cannot be named: rejected too.
    raw = b'[{"bn": "x:", "bn": "y:"}, {"n": "a", "v": 1}, {"bn": "z:", "n": "b", "v": 2}]'
    p = parse(raw, topic=SENML)
    assert values(p) == [("z:b", NOW, 2.0)]
    assert p.rejection.rejected_count == 1
    assert "record 0: key 'bn' appears more than once" in p.rejection.reason
    assert "record 1: not stored: it depends on bn of record 0, which is invalid" in (
        p.rejection.reason
    )


@pytest.mark.parametrize(
    ("base", "reason"),
    [
        ({"bv": "10"}, "record 0: bv is a string, not a number"),
        ({"bv": True}, "record 0: bv is a boolean, not a number"),
        ({"bv": None}, "record 0: bv is null, not a number"),
        ({"bu": 5}, "record 0: bu is int, not a string"),
        ({"bu": "\u0000"}, "record 0: bu '\\x00' is not valid"),
        ({"bn": 5}, "record 0: bn is int, not a string"),
        ({"bt": "1780311600"}, "record 0: bt is a string, not a number"),
        ({"bt": False}, "record 0: bt is a boolean, not a number"),
    ],
)
def test_invalid_base_field_rejects_every_record_that_uses_it(base: dict, reason: str) -> None:
    pack = [
        {**base, "n": "a", "v": 1},
        {"n": "b", "v": 2},
        {"n": "c", "v": 3, "u": "Cel", "t": -1},
    ]
    p = parse(pack, topic=SENML)
    # Only a bu that the record itself overrides with u leaves a record usable.
    expected = [("c", NOW - timedelta(seconds=1), 3.0)] if "bu" in base else []
    assert values(p) == expected
    assert reason in p.rejection.reason
    field = next(iter(base))
    assert f"record 1: not stored: it depends on {field} of record 0, which is invalid" in (
        p.rejection.reason
    )
    assert p.rejection.rejected_count == 3 - len(expected)


def test_bv_does_not_reach_boolean_records_and_a_fixed_base_counts_again() -> None:
    pack = [
        {"bv": "x"},
        {"n": "door", "vb": True},
        {"n": "a", "v": 1},
        {"bv": 10, "n": "b", "v": 1},
    ]
    p = parse(pack, topic=SENML)
    assert values(p) == [("door", NOW, 1.0), ("b", NOW, 11.0)]
    assert p.rejection.rejected_count == 1
    assert "record 0: bv is a string, not a number" in p.rejection.reason


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        (5, "u is int, not a string"),
        ("\ud800", "u '\\ud800' is not valid"),
        ("dB\u0000", "u 'dB\\x00' is not valid"),
        ("x" * 65, f"u {'x' * 65!r} is not valid: a unit is at most 64 printable characters"),
    ],
)
def test_invalid_unit_rejects_the_record(unit: object, reason: str) -> None:
    raw = json.dumps([{"n": "a", "u": unit, "v": 1}, {"n": "b", "u": "x" * 64, "v": 2}])
    p = parse(raw.encode(), topic=SENML)
    assert values(p) == [("b", NOW, 2.0)]
    assert p.units == {("oceanhamnen", "aq-01", "b"): "x" * 64}
    assert f"record 0: {reason}" in p.rejection.reason


def test_senml_record_with_two_values_is_rejected() -> None:
    p = parse([{"n": "a", "v": 1, "vb": True}, {"n": "b", "v": 2}], topic=SENML)
    assert values(p) == [("b", NOW, 2.0)]
    assert "record 0: sensor 'a' has more than one value (v, vb)" in p.rejection.reason


@pytest.mark.parametrize(
    "ts",
    [
        "\uff12\uff10\uff12\uff16-06-01T11:00:00Z",  # fullwidth digits
        "2026-06-01T11:00:00.\u0661\u0662\u0663Z",  # Arabic-Indic digits in the fraction
        "2026-06-01T11:00:00+0\u0662:00",
    ],
)
def test_non_ascii_digits_in_ts_are_rejected(ts: str) -> None:
    p = parse({"ts": ts, "values": {"a": 1}})
    assert p.readings == []
    assert "not an RFC 3339 timestamp" in p.rejection.reason


def test_leap_second_at_the_end_of_time_is_a_rejection() -> None:
    p = parse({"ts": "9999-12-31T23:59:60Z", "values": {"a": 1}})
    assert p.readings == []
    assert "ts '9999-12-31T23:59:60Z' is not a valid date and time" in p.rejection.reason


def test_long_key_lists_in_reasons_are_bounded() -> None:
    extra = {f"k{i:04}" + "x" * 100: 1 for i in range(500)}
    p = parse({"values": {"a": 1}, **extra})
    assert "unexpected keys ['k0000" in p.rejection.reason
    assert "and 495 more" in p.rejection.reason
    assert len(p.rejection.reason) < 1000
    labels = {f"x{i}_": 1 for i in range(500)}
    p = parse([{"n": "a", "v": 1, **labels}], topic=SENML)
    assert "and 495 more" in p.rejection.reason
    assert len(p.rejection.reason) < 1000


@pytest.mark.parametrize("pack", [[{}], [{"bn": "x:", "bt": 1780311600}], [{"bver": 10}, {}]])
def test_senml_pack_without_a_value_is_rejected(pack: list) -> None:
    # Nothing stored and nothing rejected would be a message dropped in silence.
    p = parse(pack, topic=SENML)
    assert p.readings == []
    assert "SenML pack carries no readings" in p.rejection.reason


@pytest.mark.parametrize(
    ("topic_format", "payload", "relative"),
    [
        ("telemetry", {"no2": 1}, True),  # form 1: the receive time
        ("telemetry", {"ts": "2026-06-01T11:59:00Z", "values": {"no2": 1}}, False),
        ("telemetry", [{"ts": 1780315140000, "values": {"a": 1}}, {"b": 2}], True),
        ("senml", [{"n": "t", "v": 1}], True),  # relative time (bt + t below 2**28)
        ("senml", [{"n": "t", "v": 1, "t": 1780315140}], False),
    ],
)
def test_parsed_says_when_the_receive_time_was_used(topic_format, payload, relative):
    # ingest.receipts relies on this: a redelivery of such a message reuses its first time.
    topic = f"livelab/lab-1/dev-1/{topic_format}"
    parsed = parse_message(topic, json.dumps(payload).encode(), NOW)
    assert parsed.readings and parsed.rejection is None
    assert parsed.relative is relative
