"""``python -m bench.ingest_without_rollups``: ``livelab-ingest`` whose writer does not keep the
rollups (the rollup CTEs taken out of the store's move statements), for `bench.api` to measure
what keeping them costs. A bench tool only: its database's rollups are left behind."""

from __future__ import annotations

import sys

import ingest.store as store
from ingest.__main__ import main
from ingest.rollups import MAINTAIN

for _name in ("_PER_SERIES_FAST", "_PER_SERIES_EXACT"):
    _sql = getattr(store, _name)
    assert f"{MAINTAIN}, " in _sql, _name
    setattr(store, _name, _sql.replace(f"{MAINTAIN}, ", ""))

if __name__ == "__main__":
    sys.exit(main())
