"""``python -m bench.ingest_without_rollups``: ``livelab-ingest`` whose writer does not keep the
rollups (`without_rollups` applied to the store's move statements), for `bench.api` to measure
what keeping them costs. A bench tool only: its database's rollups are left behind."""

from __future__ import annotations

import sys

import ingest.store as store
from ingest.__main__ import main
from ingest.rollups import MAINTAIN, SERIES_STATS

MOVES = ("_PER_SERIES_FAST", "_PER_SERIES_EXACT")  # the store's statements that keep rollups

# The series' statistics as a writer without rollups computes them: from the inserted rows.
_STATS_FROM_ROWS = (
    "per_series AS (SELECT series_id, min(time) AS first, max(time) AS last, count(*) AS n "
    "FROM inserted GROUP BY series_id)"
)


def without_rollups(sql: str) -> str:
    """A store move statement without the rollup CTEs."""
    kept = f"{MAINTAIN}, {SERIES_STATS}"
    assert kept in sql, "the store's move statement changed"
    return sql.replace(kept, _STATS_FROM_ROWS)


if __name__ == "__main__":
    for name in MOVES:
        setattr(store, name, without_rollups(getattr(store, name)))
    sys.exit(main())
