"""The rollup tiers (migrations ``0003_rollups.sql``, ``0004_local_days.sql``): exact partials
per series and bucket.

Each tier's table has ``(series_id, bucket, n, total, lo, hi)``: the count, sum, min and max of
the readings in ``[bucket, bucket + step)``. The 15-minute and hourly buckets are aligned to the
Unix epoch in UTC, so their boundaries are the multiples of their step. The daily one (`local`)
holds the local days of the deployment's zone (``rollup_settings.zone``, UTC unless set with
``livelab-rollups zone``): ``bucket`` is a local midnight and a day lasts 23 to 25 hours. Ingest
keeps them (`ingest.rollups`), the API reads them (`api.compose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Tier:
    table: str
    step: timedelta
    interval: str  # the step as a PostgreSQL interval literal
    local: bool = False  # days of the deployment's zone, added from the 15-minute partials


# Finest first; each tier is filled from the one before it, the daily one from the 15-minute one.
TIERS: tuple[Tier, ...] = (
    Tier("rollup_15m", timedelta(minutes=15), "15 minutes"),
    Tier("rollup_1h", timedelta(hours=1), "1 hour"),
    Tier("rollup_1d", timedelta(days=1), "1 day", local=True),
)
DAILY = TIERS[-1]

# The deployment's zone, read in the statement (ingest) or snapshot (API) that uses the tier.
ZONE_SQL = "(SELECT zone FROM rollup_settings)"

# The years in which the API reads the daily partials (`api.compose`), and over which
# `ingest.rollups.check_zone` proves them exact for the zone they follow.
ZONE_YEARS = (1970, 2100)
