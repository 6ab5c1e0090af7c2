"""The streamed answers' encoders (`api.streams`) against the plain way of writing the same."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from api.streams import json_objects
from schemas.names import DEVICE_RE, SENSOR_RE

names = st.from_regex(DEVICE_RE, fullmatch=True)
sensors = st.from_regex(SENSOR_RE, fullmatch=True)
numbers = (
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
)


@given(
    width=st.integers(0, 6),
    data=st.data(),
)
def test_json_objects_equal_one_dict_per_record(width: int, data: st.DataObject) -> None:
    series = data.draw(
        st.lists(st.tuples(names, sensors), min_size=width, max_size=width, unique=True)
    )
    columns = ["device", "sensor", "bucket", *(f"{d}/{s}/avg" for d, s in series)]
    record = st.tuples(
        names, sensors, st.just("2025-03-30T00:00:00+01:00"), *([numbers] * width)
    ).map(list)
    records = data.draw(st.lists(record, max_size=20))
    keys = [orjson.dumps(c) for c in columns]
    want = orjson.dumps([dict(zip(columns, r, strict=True)) for r in records])[1:-1]
    assert json_objects(keys, records) == want
