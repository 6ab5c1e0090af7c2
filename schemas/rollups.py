"""The rollup tiers (migration ``0003_rollups.sql``): exact partials per series and UTC bucket.

Each tier's table has ``(series_id, bucket, n, total, lo, hi)``: the count, sum, min and max of
the readings in ``[bucket, bucket + step)``. Buckets are aligned to the Unix epoch in UTC, so a
tier's boundaries are the multiples of its step. Ingest keeps them (`ingest.rollups`), the API
reads them (`api.compose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Tier:
    table: str
    step: timedelta
    interval: str  # the step as a PostgreSQL interval literal


# Finest first; each tier is filled from the one before it.
TIERS: tuple[Tier, ...] = (
    Tier("rollup_15m", timedelta(minutes=15), "15 minutes"),
    Tier("rollup_1h", timedelta(hours=1), "1 hour"),
    Tier("rollup_1d", timedelta(days=1), "1 day"),
)
