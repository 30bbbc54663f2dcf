"""Per-caller token buckets: a caller may send ``burst`` requests at once, then one per 60/rate seconds."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Idle callers' full buckets are dropped beyond this many, so anonymous callers (one bucket per address) cannot grow it forever.
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, requests_per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if requests_per_minute <= 0 or burst < 1:
            raise ValueError("the rate limit needs requests_per_minute > 0 and burst >= 1")
        self.requests_per_minute = requests_per_minute
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, caller: str, requests_per_minute: float | None = None) -> float:
        """Take one request from ``caller``'s bucket: 0.0 if allowed, else the seconds until one is."""
        rate = (requests_per_minute or self.requests_per_minute) / 60.0
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now, rate)
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _forget_idle(self, now: float, rate: float) -> None:
        full = [caller for caller, b in self._buckets.items() if b.tokens + (now - b.updated) * rate >= self.burst]
        for caller in full:
            del self._buckets[caller]
