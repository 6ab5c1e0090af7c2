"""Readings packed into telemetry messages, checked against the JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from schemas.telemetry import MAX_PAYLOAD_BYTES, TsFormat, json_schema
from simulators import Reading, generate, pack

START = datetime(2026, 6, 1, tzinfo=UTC)
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def _readings(
    hours: float = 1, interval: float = 600, devices: list[str] | None = None
) -> list[Reading]:
    return list(generate("lab", START, START + timedelta(hours=hours), interval, devices=devices))


@pytest.mark.parametrize("ts_format", ["rfc3339", "epoch_ms"])
def test_form2_one_message_per_device_and_instant(
    ts_format: TsFormat, decode: Callable[[str, bytes], list]
) -> None:
    readings = _readings()
    messages = list(pack(readings, form=2, ts_format=ts_format))
    assert len(messages) == 6 * 9  # 6 instants x 9 devices
    rows: list[Reading] = []
    for m in messages:
        assert VALIDATOR.is_valid(json.loads(m.payload))
        assert m.topic == f"livelab/lab/{m.readings[0].device}/telemetry"
        assert decode(m.topic, m.payload) == [
            (r.lab, r.device, r.sensor, r.time, float(r.value)) for r in m.readings
        ]
        rows.extend(m.readings)
    assert rows == readings


def test_form1_has_no_time(decode: Callable[[str, bytes], list]) -> None:
    messages = list(pack(_readings(), form=1))
    assert all(VALIDATOR.is_valid(json.loads(m.payload)) for m in messages)
    assert all("ts" not in json.loads(m.payload) for m in messages)
    assert all(row[3] is None for m in messages for row in decode(m.topic, m.payload))


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_form3_batches_per_device(size: int, decode: Callable[[str, bytes], list]) -> None:
    readings = _readings(hours=6, interval=300)
    messages = list(pack(readings, form=3, batch=size))
    per_device: dict[str, list] = {}
    for m in messages:
        doc = json.loads(m.payload)
        assert isinstance(doc, list) and VALIDATOR.is_valid(doc)
        assert 1 <= len(m.readings) <= size
        assert {r.device for r in m.readings} == {m.topic.split("/")[2]}
        assert [row[2:] for row in decode(m.topic, m.payload)] == [
            (r.sensor, r.time, float(r.value)) for r in m.readings
        ]
        per_device.setdefault(m.topic, []).extend(m.readings)
    # every reading exactly once, in time order per device
    assert sorted(r for rs in per_device.values() for r in rs) == sorted(readings)
    for rs in per_device.values():
        assert [r.time for r in rs] == sorted(r.time for r in rs)


def test_form3_respects_the_size_limit() -> None:
    # 20 000 single-reading objects of ~60 bytes would be ~1.2 MB in one message.
    readings = _readings(hours=20_000 / 3600, interval=1, devices=["energy-01"])
    messages = list(pack(readings, form=3, batch=10_000))
    assert len(messages) >= 5
    assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m in messages)
    assert max(len(m.payload) for m in messages) > MAX_PAYLOAD_BYTES * 0.9
    assert sum(len(m.readings) for m in messages) == len(readings) == 20_000


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="form"):
        list(pack(_readings(), form=4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch"):
        list(pack(_readings(), form=3, batch=10_001))
