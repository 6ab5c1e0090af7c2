"""Settings of the API process, read once at start-up from ``LIVELAB_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.migrate import DEFAULT_DATABASE_URL


class Settings(BaseSettings):
    """Every knob of `livelab-api`; each field can be set as ``LIVELAB_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LIVELAB_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Largest number of buckets one series may produce in one aggregates request.
    api_max_buckets: int = Field(default=100_000, ge=1)
    # Largest number of rows (matching series x buckets) one aggregates request may produce:
    # bounds the answer's size and the time to build it, whatever the lab's size.
    api_max_rows: int = Field(default=500_000, ge=1)
    api_pool_min_size: int = Field(default=1, ge=0)
    api_pool_max_size: int = Field(default=10, ge=1)
    # Seconds to wait for a free pooled connection before answering 503.
    api_pool_timeout: float = Field(default=10.0, gt=0)
    # A query running longer than this is cancelled (and the client gets a 503).
    api_statement_timeout: float = Field(default=30.0, gt=0)
    # Run the schema migrations at start-up.
    api_migrate: bool = True
    # Attempts (with exponential backoff) to reach the database at start-up.
    api_startup_attempts: int = Field(default=10, ge=1)
    # How long a looked-up API key is trusted before it is read again (so a revocation takes
    # effect within this many seconds). 0 disables the cache.
    api_key_cache_seconds: float = Field(default=30.0, ge=0)
