"""Response models: they document the answers on the OpenAPI page (`/docs`).

Large answers (aggregates, readings) are serialised directly for speed; these models still
describe their shape. Times are RFC 3339 strings with an offset.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class ErrorDetail(BaseModel):
    detail: str = Field(examples=["bucket '2h' is not one of 1m, 5m, 15m, 1h, 6h, 1d, 1w, 1mo"])


class LabPublic(BaseModel):
    lab: str = Field(examples=["malmo-air"])
    device_count: int = Field(description="Devices that have sent at least one series.")
    sensor_count: int = Field(description="Series (device, sensor) of the lab.")
    reading_count: int = Field(description="Readings stored for the lab.")
    first_reading: str | None = Field(description="Time of the oldest reading (RFC 3339).")
    last_reading: str | None = Field(description="Time of the newest reading (RFC 3339).")


class LabPage(BaseModel):
    data: list[LabPublic]
    next: str | None = Field(default=None, description="Always null: every lab is listed.")


class AggregateRow(BaseModel):
    """One series and bucket. Only the requested stats appear, in the requested order."""

    device: str = Field(examples=["station-1"])
    sensor: str = Field(examples=["no2"])
    bucket: str = Field(
        description="The bucket's start, RFC 3339 with the offset of `tz` at that instant.",
        examples=["2026-03-29T00:00:00+01:00"],
    )
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    sum: float | None = None
    count: int | None = None


class WideAggregateRow(BaseModel):
    """`layout=wide`: one bucket, then one field per series and stat, named
    `{device}/{sensor}/{stat}` (numbers; counts are integers; null where a stat is empty)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "additionalProperties": {"type": ["number", "null"]},
            "examples": [
                {
                    "bucket": "2026-03-29T00:00:00+01:00",
                    "station-1/no2/avg": 17.4,
                    "station-1/no2/count": 60,
                }
            ],
        },
    )

    bucket: str = Field(
        description="The bucket's start, RFC 3339 with the offset of `tz` at that instant.",
        examples=["2026-03-29T00:00:00+01:00"],
    )


class AggregatePage(BaseModel):
    data: list[AggregateRow | WideAggregateRow] = Field(
        description="`layout=long` (default): AggregateRow; `layout=wide`: WideAggregateRow."
    )
    next: str | None = Field(default=None, description="Always null: the answer is complete.")


class SensorPublic(BaseModel):
    device: str = Field(examples=["station-1"])
    sensor: str = Field(examples=["no2"])
    unit: str | None = Field(examples=["ug/m3"])
    first_reading: str | None
    last_reading: str | None
    reading_count: int


class SensorPage(BaseModel):
    data: list[SensorPublic]
    next: str | None = None


class ReadingPublic(BaseModel):
    device: str = Field(examples=["station-1"])
    sensor: str = Field(examples=["no2"])
    time: str = Field(examples=["2026-06-01T12:00:00.123Z"])
    value: float = Field(examples=[17.4])


class ReadingPage(BaseModel):
    data: list[ReadingPublic]
    next: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page."
    )


class RejectionPublic(BaseModel):
    id: int
    received_at: str
    topic: str = Field(examples=["livelab/malmo-air/station-1/telemetry"])
    device: str | None
    reason: str = Field(examples=["value of 'no2' is not a number: 'high'"])
    rejected_count: int = Field(description="Readings (or whole messages) this row covers.")
    count: int = Field(
        description="Messages this row stands for: repeats of the same reason on the same "
        "topic within the worker's merge interval (LIVELAB_INGEST_REJECTION_MERGE_SECONDS) are "
        "one row. `received_at` and `payload` are the first message's."
    )
    last_received_at: str = Field(description="When the newest of those messages arrived.")
    payload: str = Field(
        description="The payload's first bytes as UTF-8 (undecodable bytes become U+FFFD)."
    )
    payload_size: int = Field(description="The payload's full size in bytes.")


class RejectionPage(BaseModel):
    data: list[RejectionPublic]
    next: str | None = Field(
        default=None, description="Pass as `cursor` to get older rejections; null at the end."
    )
