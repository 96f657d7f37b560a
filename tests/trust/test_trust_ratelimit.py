"""Token-bucket limiter: burst, refill, retry-after, per-key isolation, bounded memory, and the
rate bound as a property over arbitrary request timings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from scribe.trust.ratelimit import RateLimiter, TokenBucket


def test_burst_then_refill_with_retry_after() -> None:
    rl = RateLimiter(rate=2.0, burst=3, clock=lambda: 0.0)
    assert [rl.allow("dr-a", now=0.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = rl.allow("dr-a", now=0.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert not rl.allow("dr-a", now=0.49).allowed
    assert rl.allow("dr-a", now=0.5).allowed
    # Never more than the burst, however long the pause.
    assert sum(rl.allow("dr-a", now=1000.0).allowed for _ in range(10)) == 3


def test_keys_are_isolated() -> None:
    rl = RateLimiter(rate=1.0, burst=1)
    assert rl.allow("10.0.0.1", now=0).allowed and not rl.allow("10.0.0.1", now=0).allowed
    assert rl.allow("10.0.0.2", now=0).allowed


def test_cost_larger_than_burst_is_never_allowed() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0)
    d = bucket.take(0, cost=6)
    assert not d.allowed and math.isinf(d.retry_after)
    assert bucket.take(0, cost=5).allowed


def test_clock_going_backwards_adds_nothing() -> None:
    rl = RateLimiter(rate=1.0, burst=1)
    assert rl.allow("k", now=100.0).allowed
    assert not rl.allow("k", now=50.0).allowed
    assert not rl.allow("k", now=100.5).allowed
    assert rl.allow("k", now=101.0).allowed


def test_memory_is_bounded_and_prune_drops_full_buckets() -> None:
    rl = RateLimiter(rate=1.0, burst=2, max_keys=100)
    for i in range(1000):
        rl.allow(f"ip-{i}", now=0.0)
    assert len(rl) == 100
    assert rl.prune(now=0.0) == 0  # all just used one unit
    assert rl.prune(now=10.0) == 100 and len(rl) == 0


@pytest.mark.parametrize("kwargs", [{"rate": 0, "burst": 1}, {"rate": -1, "burst": 1}, {"rate": 1, "burst": 0},
                                    {"rate": math.inf, "burst": 1}, {"rate": 1, "burst": 1, "max_keys": 0}])
def test_bad_configuration_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_negative_cost_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(1, 1).allow("k", cost=-1, now=0)


@hsettings(max_examples=300, deadline=None)
@given(rate=st.floats(min_value=0.1, max_value=50), burst=st.integers(min_value=1, max_value=20),
       gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=300))
def test_never_more_than_burst_plus_rate_times_window(rate: float, burst: int, gaps: list[float]) -> None:
    rl = RateLimiter(rate=rate, burst=burst)
    t, allowed_at = 0.0, []
    for gap in gaps:
        t += gap
        if rl.allow("k", now=t).allowed:
            allowed_at.append(t)
    # Over every window [a, b] of allowed requests: count <= burst + rate * (b - a).
    for i in range(len(allowed_at)):
        for j in range(i, len(allowed_at)):
            assert j - i + 1 <= burst + rate * (allowed_at[j] - allowed_at[i]) + 1e-6


@hsettings(max_examples=200, deadline=None)
@given(rate=st.floats(min_value=0.5, max_value=20), burst=st.integers(min_value=1, max_value=10),
       n=st.integers(min_value=1, max_value=200))
def test_a_client_that_waits_retry_after_is_served(rate: float, burst: int, n: int) -> None:
    rl = RateLimiter(rate=rate, burst=burst)
    t = 0.0
    for _ in range(n):
        d = rl.allow("k", now=t)
        if not d.allowed:
            t += d.retry_after
            assert rl.allow("k", now=t + 1e-9).allowed
