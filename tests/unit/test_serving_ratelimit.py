"""The QPS limiter on a simulated clock: exact, repeatable counts instead of wall-clock timing."""
from __future__ import annotations

import bisect
import random

import pytest

from services.gateway.quotas.ratelimit import QpsLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _poisson(limiter: QpsLimiter, clock: Clock, *, qps: int, offered: float, seconds: float,
                   seed: int, key: str = "svc") -> list[float]:
    """Random (Poisson) arrivals at ``offered`` per second; returns the admission times."""
    rng, start, admitted = random.Random(seed), clock.now, []
    while clock.now - start < seconds:
        if await limiter.acquire(key, qps) is None:
            admitted.append(clock.now - start)
        clock.now += rng.expovariate(offered)
    return admitted


def _worst(admitted: list[float], window: float) -> int:
    return max(bisect.bisect_left(admitted, a + window) - i for i, a in enumerate(admitted))


@pytest.mark.parametrize("qps", [2, 5, 20, 100])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_limit_holds_within_5_percent_under_a_sustained_2x_overload(qps, seed):
    clock = Clock()
    limiter = QpsLimiter(clock=clock)
    await _poisson(limiter, clock, qps=qps, offered=2 * qps, seconds=3, seed=seed)   # overload sets in
    seconds = 60
    admitted = await _poisson(limiter, clock, qps=qps, offered=2 * qps, seconds=seconds, seed=seed + 10)
    assert 0.95 <= len(admitted) / (qps * seconds) <= 1.05
    # However requests bunch up, no window of w seconds admits more than qps * (w + 1 s of bucket) + 1.
    for w in (1, 5):
        assert _worst(admitted, w) <= qps * (w + 1) + 1


async def test_a_stalled_client_catches_up_within_the_bucket():
    """One-second pauses (e.g. a busy event loop) cost no capacity: the bucket absorbs them."""
    clock = Clock()
    limiter = QpsLimiter(clock=clock)
    await _poisson(limiter, clock, qps=10, offered=20, seconds=3, seed=0, key="clumpy")
    admitted, start, last = 0, clock.now, clock.now
    for second in range(10):
        arrivals = 0 if second % 2 else 40   # 20/s on average at a 10/s limit, in one-second clumps
        for _ in range(arrivals):
            admitted += await limiter.acquire("clumpy", 10) is None
            last = clock.now
            clock.now += 1 / 40
        if not arrivals:
            clock.now += 1.0
    allowed = 10 * (last - start)
    assert 0.95 * allowed <= admitted <= allowed + 11


async def test_traffic_under_the_limit_is_never_rejected():
    clock = Clock()
    limiter = QpsLimiter(clock=clock)
    for _ in range(200):
        assert await limiter.acquire("calm", 10) is None
        clock.now += 0.1


async def test_simultaneous_requests_up_to_the_limit_are_admitted_then_retry_after():
    clock = Clock()
    limiter = QpsLimiter(clock=clock)
    results = [await limiter.acquire("burst", 10) for _ in range(25)]
    assert results[:11] == [None] * 11   # one second of requests (+1) from an idle service
    waits = results[11:]
    assert all(w is not None and 0 < w <= 0.1 + 1e-9 for w in waits)
    clock.now += waits[0]
    assert await limiter.acquire("burst", 10) is None
    assert await limiter.acquire("burst", 10) is not None


async def test_services_have_separate_buckets_and_a_new_limit_applies_at_once():
    clock = Clock()
    limiter = QpsLimiter(clock=clock, burst_seconds=0)
    assert await limiter.acquire("a", 1) is None
    assert await limiter.acquire("a", 1) is not None
    assert await limiter.acquire("b", 1) is None
    clock.now += 0.25
    assert await limiter.acquire("a", 1) is not None
    assert await limiter.acquire("a", 4) is None       # the new limit: 4 per second from now on
    assert await limiter.acquire("a", 4) is not None
    clock.now += 0.25
    assert await limiter.acquire("a", 4) is None


async def test_keys_with_a_full_bucket_are_forgotten_when_there_are_many():
    clock = Clock()
    limiter = QpsLimiter(clock=clock)
    for i in range(10_001):
        await limiter.acquire(f"k{i}", 100)
    clock.now += 5
    await limiter.acquire("last", 100)
    assert len(limiter._tat) == 1
