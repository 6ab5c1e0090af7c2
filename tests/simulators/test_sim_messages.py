"""Readings packed into telemetry messages, checked against the JSON Schema and the limits."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from schemas.telemetry import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_MESSAGE, TsFormat, json_schema
from simulators.models import Reading
from simulators.scenario import Form
from simulators.stream import Batch, Outgoing, Stream
from tests.simulators.reference import OCEANHAMNEN, generate

START = datetime(2026, 6, 1, tzinfo=UTC)
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def _messages(
    form: Form,
    *,
    hours: float = 1,
    interval: float = 600,
    devices: list[str] | None = None,
    batch: int | None = None,
    ts_format: TsFormat = "rfc3339",
) -> list[Outgoing]:
    spec = (
        OCEANHAMNEN.renamed("lab")
        .select(devices)
        .with_devices(interval=timedelta(seconds=interval), form=form, batch=batch)
    )
    end = START + timedelta(hours=hours)
    stream = Stream([spec], seed=22, start=START, end=end, ts_format=ts_format, stagger=False)
    return list(stream)


def _readings(hours: float = 1, interval: float = 600) -> list[Reading]:
    return list(generate("lab", START, START + timedelta(hours=hours), interval))


@pytest.mark.parametrize("ts_format", ["rfc3339", "epoch_ms"])
def test_form2_one_message_per_device_and_instant(
    ts_format: TsFormat, decode: Callable[[str, bytes], list]
) -> None:
    messages = _messages(2, ts_format=ts_format)
    assert len(messages) == 6 * 9  # 6 instants x 9 devices
    rows: list[Reading] = []
    for m in messages:
        assert VALIDATOR.is_valid(json.loads(m.payload))
        assert m.topic == f"livelab/lab/{m.readings[0].device}/telemetry"
        assert decode(m.topic, m.payload) == [
            (r.lab, r.device, r.sensor, r.time, float(r.value)) for r in m.readings
        ]
        rows.extend(m.readings)
    assert rows == _readings()


def test_form1_has_no_time(decode: Callable[[str, bytes], list]) -> None:
    messages = _messages(1)
    assert all(VALIDATOR.is_valid(json.loads(m.payload)) for m in messages)
    assert all("ts" not in json.loads(m.payload) for m in messages)
    assert all(row[3] is None for m in messages for row in decode(m.topic, m.payload))


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_form3_batches_per_device(size: int, decode: Callable[[str, bytes], list]) -> None:
    messages = _messages(3, hours=6, interval=300, batch=size)
    per_device: dict[str, list] = {}
    for m in messages:
        doc = json.loads(m.payload)
        assert isinstance(doc, list) and VALIDATOR.is_valid(doc)
        assert 1 <= len(doc) <= size  # instants per message
        assert {r.device for r in m.readings} == {m.topic.split("/")[2]}
        assert [row[2:] for row in decode(m.topic, m.payload)] == [
            (r.sensor, r.time, float(r.value)) for r in m.readings
        ]
        per_device.setdefault(m.topic, []).extend(m.readings)
    # every reading exactly once, in time order per device
    readings = _readings(hours=6, interval=300)
    assert sorted(r for rs in per_device.values() for r in rs) == sorted(readings)
    for rs in per_device.values():
        assert [r.time for r in rs] == sorted(r.time for r in rs)


def test_form3_respects_the_size_limit() -> None:
    # 20 000 single-reading objects of ~60 bytes would be ~1.2 MB in one message.
    messages = _messages(3, hours=20_000 / 3600, interval=1, devices=["energy-01"], batch=10_000)
    assert len(messages) >= 5
    assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m in messages)
    assert max(len(m.payload) for m in messages) > MAX_PAYLOAD_BYTES * 0.9
    assert sum(len(m.readings) for m in messages) == 20_000


def test_form3_respects_the_readings_limit() -> None:
    batch = Batch()
    part = b'{"ts":0,"values":{}}'  # small: only the reading count can stop it
    readings = [Reading("lab", "d", "s", START, 1.0)] * 3000
    for _ in range(3):
        assert batch.fits(part, len(readings))
        batch.add(part, readings)
    assert not batch.fits(part, MAX_READINGS_PER_MESSAGE - 9000 + 1)
    assert batch.fits(part, MAX_READINGS_PER_MESSAGE - 9000)
    payload, _ = batch.take()
    assert payload == b"[" + b",".join([part] * 3) + b"]"
    assert not batch and batch.fits(b"x" * (MAX_PAYLOAD_BYTES * 2), 1)  # an empty batch takes any
    # Through the stream: 4 readings per instant, 10 000 instants asked per message.
    messages = _messages(3, hours=3, interval=1, devices=["aq-01"], batch=10_000)
    assert max(len(m.readings) for m in messages) <= MAX_READINGS_PER_MESSAGE
    assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m in messages)
    assert sum(len(m.readings) for m in messages) == 3 * 3600 * 4
