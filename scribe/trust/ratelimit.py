"""Token-bucket rate limiting per key (a principal, a token id, or a client address).

Pure and clock-injected: the caller passes ``now`` (or a clock), so tests need no sleeps and
the limiter can be used from the event loop without locks (it is not thread-safe; keep one
per loop).

Why a token bucket: it allows a short burst (a client reconnecting and re-sending a few
requests) while capping the sustained rate; over any window of ``t`` seconds a key gets at
most ``burst + rate * t`` units.

Memory is bounded: at most ``max_keys`` buckets are kept, least recently used evicted first.
An evicted key starts again with a full bucket, so under a flood of distinct keys (spoofed
addresses) the per-key limit weakens; put a global limit (or the reverse proxy's) in front
for that case.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float
    """Seconds until the request would be allowed (0 when allowed)."""
    remaining: float
    """Units left in the bucket after this decision."""


class TokenBucket:
    """One bucket: ``capacity`` units, refilled at ``rate`` units per second."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number")
        if not (capacity >= 1 and math.isfinite(capacity)):
            raise ValueError("capacity (burst) must be at least 1")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        # A clock that goes backwards (it should not: use a monotonic one) never adds tokens.

    def take(self, now: float, cost: float = 1.0) -> Decision:
        if cost < 0 or not math.isfinite(cost):
            raise ValueError("cost must be a finite, non-negative number")
        self._refill(now)
        if cost > self.capacity:
            return Decision(False, math.inf, self.tokens)
        if self.tokens + _EPSILON >= cost:
            # The epsilon absorbs float drift in the refill, so a client that waits exactly
            # ``retry_after`` is served (it may overdraw by at most 1e-9 of a unit).
            self.tokens = max(0.0, self.tokens - cost)
            return Decision(True, 0.0, self.tokens)
        return Decision(False, (cost - self.tokens) / self.rate, self.tokens)

    def full_at(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class RateLimiter:
    """Buckets per key, all with the same ``rate`` (units/s) and ``burst`` (capacity)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        TokenBucket(rate, burst, 0.0)  # validate once, early
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str, cost: float = 1.0, now: float | None = None) -> Decision:
        now = self.clock() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            self._buckets[key] = bucket
            self._evict(now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def _evict(self, now: float) -> None:
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def prune(self, now: float | None = None) -> int:
        """Drop buckets that are full again (they hold no state a new bucket would not)."""
        now = self.clock() if now is None else now
        full = [k for k, b in self._buckets.items() if b.full_at(now)]
        for k in full:
            del self._buckets[k]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)
