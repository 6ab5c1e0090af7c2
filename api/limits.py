"""Per-key limits: a request rate (token bucket) and a cap on concurrent heavy requests.

Both live in the process's memory, per API key id: with several API processes behind a load
balancer each one enforces them on its own (the limits multiply by the process count). A key
over either limit gets 429 with ``Retry-After`` (seconds), as the contract (v1.1) states.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from fastapi import HTTPException


def too_many(detail: str, retry_after: float) -> HTTPException:
    seconds = max(1, math.ceil(retry_after))
    return HTTPException(status_code=429, detail=detail, headers={"Retry-After": str(seconds)})


@dataclass
class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `rate` per second."""

    rate: float
    burst: int
    _buckets: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (tokens, t)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"rate must be positive, burst at least 1: {self.rate}, {self.burst}")

    def take(self, key_id: int, now: float | None = None) -> float:
        """0 when the request may go now (a token is taken), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate


@dataclass
class ConcurrencyCap:
    """At most `limit` requests of one key at a time."""

    limit: int
    _active: dict[int, int] = field(default_factory=dict)

    def acquire(self, key_id: int) -> bool:
        if self._active.get(key_id, 0) >= self.limit:
            return False
        self._active[key_id] = self._active.get(key_id, 0) + 1
        return True

    def release(self, key_id: int) -> None:
        left = self._active.get(key_id, 0) - 1
        if left > 0:
            self._active[key_id] = left
        else:
            self._active.pop(key_id, None)
