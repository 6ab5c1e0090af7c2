"""Settings of the ingest worker, read once from the environment (prefix ``LIVELAB_``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.parse import Limits
from ingest.receipts import PARSED_AHEAD, REDELIVERY_WINDOW
from schemas.migrate import DEFAULT_DATABASE_URL
from schemas.telemetry import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_MESSAGE
from schemas.times import parse_rfc3339


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVELAB_", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="PostgreSQL/TimescaleDB URL")
    migrate: bool = Field(True, description="apply schema migrations at start-up")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls_ca: str | None = Field(
        None, description="CA file to verify the broker with; set, the worker connects over TLS"
    )
    mqtt_keepalive: int = Field(30, ge=5, description="seconds")

    ingest_client_id: str = Field(
        "livelab-ingest-1",
        min_length=1,
        description="MQTT client id; it names the persistent session, so keep it stable per "
        "worker and unique across workers",
    )
    ingest_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="worker processes on this host, in one share group (livelab-ingest "
        "--processes overrides it)",
    )
    ingest_topics: str = Field(
        "livelab/#", description="comma-separated topic filters to subscribe to (QoS 1)"
    )
    ingest_share_group: str | None = Field(
        None, description="subscribe as $share/<group>/<filter> so several workers split the load"
    )
    ingest_session_expiry: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="seconds the broker keeps the session (and queues messages) while the "
        "worker is away",
    )
    ingest_receive_maximum: int = Field(
        2000,
        ge=1,
        le=8000,
        description="unacknowledged QoS 1 messages the broker may send (at most 8000: see "
        "ingest/receipts.py)",
    )
    ingest_batch_messages: int = Field(2000, ge=1, description="messages per database batch")
    ingest_batch_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="payload bytes per database batch at most (bounds the worker's memory with "
        "large messages)",
    )
    ingest_batch_linger_ms: int = Field(
        50, ge=0, description="how long a partial batch waits for more messages"
    )
    ingest_max_payload_bytes: int = Field(MAX_PAYLOAD_BYTES, ge=1)
    ingest_max_readings: int = Field(MAX_READINGS_PER_MESSAGE, ge=1)
    ingest_min_time: str = Field(
        "2000-01-01T00:00:00Z", description="readings before this time are rejected"
    )
    ingest_max_future_seconds: int = Field(
        300, ge=0, description="readings further ahead of the receive time are rejected"
    )
    ingest_rejection_payload_bytes: int = Field(
        4096, ge=0, description="bytes of a rejected payload that are kept"
    )
    ingest_rejection_merge_seconds: int = Field(
        60,
        ge=0,
        description="repeats of one reason from one topic within this interval are one "
        "rejection row with a count (0: a row per message)",
    )
    ingest_rejection_retention_days: float = Field(
        30, gt=0, description="rejections older than this are deleted"
    )
    ingest_rejection_max_per_lab: int = Field(
        10000, ge=1, description="rows kept per lab; older rejection rows beyond it are deleted"
    )
    ingest_db_statement_timeout: float = Field(
        30, gt=0, description="seconds one statement of the writer may take before it is retried"
    )
    ingest_db_lock_timeout: float = Field(
        10, gt=0, description="seconds the writer waits for a lock before it retries"
    )
    ingest_ready_max_wait: float = Field(
        60,
        gt=0,
        description="/ready turns 503 when a message has waited this long without a commit",
    )
    ingest_http_host: str = "127.0.0.1"
    ingest_http_port: int = Field(8081, ge=0, le=65535, description="0 turns /metrics off")
    ingest_shutdown_grace: float = Field(
        10.0, ge=0, description="seconds to finish queued messages on shutdown"
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check_redelivery_window(self) -> Settings:
        # What the worker holds at once (Receive Maximum in flight, the inbox of twice that,
        # parsed batches, the batch being stored) must stay within the window that tells a
        # redelivery from a reused packet id (ingest/receipts.py).
        held = 3 * self.ingest_receive_maximum + (PARSED_AHEAD + 1) * self.ingest_batch_messages
        if held >= REDELIVERY_WINDOW:
            raise ValueError(
                f"3 x LIVELAB_INGEST_RECEIVE_MAXIMUM + {PARSED_AHEAD + 1} x "
                f"LIVELAB_INGEST_BATCH_MESSAGES is {held}; it must stay below "
                f"{REDELIVERY_WINDOW} (see ingest/receipts.py)"
            )
        return self

    @field_validator("ingest_min_time")
    @classmethod
    def _check_min_time(cls, value: str) -> str:
        parse_rfc3339(value)
        return value

    @property
    def limits(self) -> Limits:
        return Limits(
            max_payload_bytes=self.ingest_max_payload_bytes,
            max_readings=self.ingest_max_readings,
            min_time=self.min_time,
            max_future=timedelta(seconds=self.ingest_max_future_seconds),
        )

    @property
    def min_time(self) -> datetime:
        return parse_rfc3339(self.ingest_min_time)

    @property
    def topic_filters(self) -> list[str]:
        filters = [t.strip() for t in self.ingest_topics.split(",") if t.strip()]
        if self.ingest_share_group:
            return [f"$share/{self.ingest_share_group}/{t}" for t in filters]
        return filters
