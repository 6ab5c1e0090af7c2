"""The readings the dashboard tests send through the real broker and ingest worker."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
BUSY = [(NOW - timedelta(minutes=180 - 2 * k), 20 + 5 * math.sin(k / 7)) for k in range(90)]
QUIET = [(NOW - timedelta(minutes=180 - 3 * k), 30 + k % 4) for k in range(20)]  # ends 2 h ago
