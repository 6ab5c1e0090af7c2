"""The telemetry builders and the JSON Schema agree with each other and with CONTRACT.md."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from schemas import names, times
from schemas.telemetry import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    PayloadError,
    batch,
    count_readings,
    encode,
    json_schema,
    now_values,
    timed_values,
)

T = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_valid(validator: jsonschema.Draft202012Validator, data: bytes | str) -> bool:
    """What a device developer's check does: strict JSON (RFC 8259), then the schema."""
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except ValueError:
        return False
    return bool(validator.is_valid(doc))


def test_schema_is_package_data_and_declares_2020_12() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json_schema() is not json_schema()  # callers may mutate their copy


def test_schema_sensor_pattern_is_the_contract_pattern() -> None:
    defs = json_schema()["$defs"]
    assert defs["sensorName"]["pattern"] == f"^{names.SENSOR_RE.pattern}$"


@pytest.mark.parametrize(
    "ts",
    [
        "2026-06-01T12:00:00Z",
        "2026-06-01t12:00:00z",
        "2026-06-01T14:00:00.250+02:00",
        "2026-06-01T12:00:00.123456789-05:30",
        "2026-06-01T12:00:00",
        "2026-06-01 12:00:00Z",
        "2026-06-01T12:00Z",
        "2026-6-01T12:00:00Z",
        "2026-06-01T12:00:00+0200",
        "2026-06-01T12:00:00.Z",
    ],
)
def test_schema_timestamps_follow_times_module(
    validator: jsonschema.Draft202012Validator, ts: str
) -> None:
    try:
        times.parse_rfc3339(ts)
        parses = True
    except ValueError:
        parses = False
    assert validator.is_valid({"ts": ts, "values": {"x": 1}}) == parses


@pytest.mark.parametrize(
    "payload",
    [
        now_values({"no2": 17.4, "pm25": 8.1}),
        now_values({"occupied": 31, "door_open": True, "a.b:c/d-e_f": -0.5}),
        timed_values(T, {"no2": 17.4}),
        timed_values(T, {"no2": 17.4}, ts_format="epoch_ms"),
        timed_values(T.astimezone(timezone(timedelta(hours=2))), {"level": -3.2}),
        timed_values(None, {"no2": 1}),
        timed_values(T, {"ts": 1.0, "values": 2.0}),  # reserved only as object keys
        batch([now_values({"no2": 1.0}), timed_values(T, {"no2": 2.0}, ts_format="epoch_ms")]),
        now_values({"s" * 128: 1.0}),
    ],
)
def test_built_payloads_validate(validator: jsonschema.Draft202012Validator, payload: Any) -> None:
    assert is_valid(validator, encode(payload))


def test_timestamps_in_both_spellings_mean_the_same_instant() -> None:
    text = timed_values(T, {"x": 1})["ts"]
    ms = timed_values(T, {"x": 1}, ts_format="epoch_ms")["ts"]
    assert text == "2026-06-01T12:00:00.123Z"
    assert isinstance(ms, int)
    assert times.parse_rfc3339(text) == times.from_epoch_ms(ms) == T.replace(microsecond=123000)
    local = timed_values(T.astimezone(timezone(timedelta(hours=2))), {"x": 1})["ts"]
    assert local == "2026-06-01T14:00:00.123+02:00"


def test_encode_is_compact_utf8() -> None:
    assert (
        encode(timed_values(0, {"x": 1.5})) == b'{"ts":"1970-01-01T00:00:00Z","values":{"x":1.5}}'
    )
    assert encode([now_values({"x": True})]) == b'[{"x":true}]'


@pytest.mark.parametrize(
    "text",
    [
        '{"no2": NaN}',
        '{"no2": Infinity}',
        '{"ts": 1780315200000, "values": {"no2": -Infinity}}',
        '{"no2": "17.4"}',
        '{"no2": null}',
        '{"no2": [1]}',
        '{"no2": {"v": 1}}',
        "{}",
        "[]",
        "17.4",
        '"no2"',
        '{"_no2": 1}',
        '{"no 2": 1}',
        '{"no2\u00e4": 1}',
        '{"' + "s" * 129 + '": 1}',
        '{"ts": 1780315200000, "no2": 1}',  # ts without values: not form 1 nor form 2
        '{"values": 1}',
        '{"ts": "2026-06-01T12:00:00Z", "values": {}}',
        '{"ts": "2026-06-01T12:00:00", "values": {"no2": 1}}',  # naive
        '{"ts": "2026-06-01 12:00:00Z", "values": {"no2": 1}}',
        '{"ts": "2026-06-01", "values": {"no2": 1}}',
        '{"ts": "1780315200000", "values": {"no2": 1}}',
        '{"ts": true, "values": {"no2": 1}}',
        '{"ts": 1780315200000, "values": {"no2": 1}, "device": "aq-01"}',
        '{"ts": 1780315200000, "values": {"no2": "high"}}',
        '[{"no2": 1}, [{"no2": 2}]]',
        '[{"no2": 1}, {"pm25": "x"}]',
        '[{"no2": 1}, {}]',
    ],
)
def test_bad_payloads_do_not_validate(
    validator: jsonschema.Draft202012Validator, text: str
) -> None:
    assert not is_valid(validator, text)


@pytest.mark.parametrize(
    "name", ["a", "A", "0", "no2", "temp.c", "a:b/c-d_e", "_a", "-a", ".a", "a b", "ä", "a*"]
)
def test_schema_sensor_names_follow_names_module(
    validator: jsonschema.Draft202012Validator, name: str
) -> None:
    assert validator.is_valid({name: 1}) == names.is_sensor(name)


@pytest.mark.parametrize(
    "values",
    [
        {"no2": math.nan},
        {"no2": math.inf},
        {"no2": "17.4"},
        {"no2": None},
        {"_bad": 1.0},
        {"": 1.0},
        {},
    ],
)
def test_builders_refuse_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        now_values(values)
    with pytest.raises(PayloadError):
        timed_values(T, values)


@pytest.mark.parametrize("key", ["ts", "values"])
def test_form1_refuses_reserved_keys(key: str) -> None:
    with pytest.raises(PayloadError, match="reserved"):
        now_values({key: 1.0})


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(PayloadError, match="naive"):
        timed_values(datetime(2026, 6, 1, 12), {"no2": 1.0})


def test_limits() -> None:
    many = {f"s{i}": float(i) for i in range(MAX_READINGS_PER_MESSAGE)}
    assert count_readings(timed_values(T, many)) == MAX_READINGS_PER_MESSAGE
    with pytest.raises(PayloadError, match="at most"):
        now_values({**many, "one_more": 1.0})
    with pytest.raises(PayloadError, match="at most"):
        batch([timed_values(T, many), now_values({"x": 1})])
    big = now_values({f"{'n' * 120}{i:05d}": 1.0 for i in range(MAX_PAYLOAD_BYTES // 128)})
    with pytest.raises(PayloadError, match="bytes"):
        encode(big)
    with pytest.raises(PayloadError):
        encode({"x": math.nan})  # a payload not made by the builders
