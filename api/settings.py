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
    # Requests per second one API key may make on average (a token bucket, per API process),
    # and how many at once above that; over it, 429 with Retry-After. 0 turns it off.
    api_rate_limit: float = Field(default=20.0, ge=0)
    api_rate_burst: int = Field(default=100, ge=1)
    # Aggregate and readings requests one key may have running at once (429 beyond); keep it
    # below api_pool_max_size so one partner cannot take every connection. 0 turns it off.
    api_key_max_concurrent: int = Field(default=4, ge=0)
    # Pooled connections that aggregate and readings requests (of all keys together) may not
    # take: they stay free for /ready, key lookups and the light routes, so a flood of heavy
    # requests cannot starve them. Heavy requests beyond the rest wait (api_pool_timeout),
    # then get 503.
    api_pool_reserved: int = Field(default=2, ge=0)
