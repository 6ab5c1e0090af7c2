"""What a run is told: `RunOptions` (one value object for backfill, live and replay) and
`SimSettings`, the ``LIVELAB_*`` environment the command line takes its defaults from."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.telemetry import TsFormat
from simulators.manifest import Manifest
from simulators.publisher import MqttVersion
from simulators.scenario import Form, Scenario


class SimSettings(BaseSettings):
    """``LIVELAB_MQTT_HOST``, ``_MQTT_PORT``, ``_API_URL``, ``_API_KEY`` (read once, at start)."""

    model_config = SettingsConfigDict(env_prefix="LIVELAB_", extra="ignore")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything a run is given; None means the scenario's (each device's) setting. `lab`
    renames a one-lab scenario or picks one lab; `record` is a CSV file to write; `stop`
    ends the run when set; `progress` off: no progress lines."""

    scenario: Scenario | str | None = None
    lab: str | None = None
    devices: Sequence[str] | None = None
    sensors: Sequence[str] | None = None
    seed: int | None = None
    interval: timedelta | float | None = None
    form: Form | None = None
    batch: int | None = None
    qos: int | None = None
    faults: Mapping[str, Any] = field(default_factory=dict)
    ts_format: TsFormat = "rfc3339"
    host: str = "127.0.0.1"
    port: int = 1883
    mqtt_version: MqttVersion = "3.1.1"
    record: str | Path | None = None
    manifest: Manifest | None = None
    stop: threading.Event | None = None
    progress: bool = True
