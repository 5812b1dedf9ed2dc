"""The QPS limit of a service on the real embedded MongoDB with a simulated clock: exact, repeatable
counts instead of wall-clock timing. Several gateway replicas share one budget per service (issue 18,
item 5): the limiter's state is one document per key, updated atomically, so N gateways do not admit
N times the limit — checked with two limiters on their own clients, and through the public API with
two gateway processes on the same services."""
from __future__ import annotations

import asyncio
import bisect
import random

import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from services.gateway.quotas.ratelimit import QPS_BUCKETS, SharedQpsLimiter
from tests.conftest import serve_platform
from tests.integration.test_serving_api import api_key, serving_tmp, tiny_service  # noqa: F401

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def collections(embedded_servers, request):
    """One collection of a database of its own, seen through two MongoDB clients (two replicas)."""
    url = embedded_servers.settings_env()["MAAS_MONGO_URL"]
    clients = [AsyncIOMotorClient(url) for _ in range(2)]
    name = f"{QPS_BUCKETS}_{request.node.name[:60]}"
    yield [c["maas_qps_limiter"][name] for c in clients]
    await clients[0]["maas_qps_limiter"].drop_collection(name)
    for c in clients:
        c.close()


@pytest.fixture
def limiter(collections, clock) -> SharedQpsLimiter:
    return SharedQpsLimiter(collections[0], clock=clock)


async def _poisson(limiter: SharedQpsLimiter, clock: Clock, *, qps: int, offered: float, seconds: float,
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


@pytest.mark.parametrize(("qps", "seed"), [(2, 1), (5, 2), (20, 3)])
async def test_the_limit_holds_within_5_percent_under_a_sustained_2x_overload(limiter, clock, qps, seed):
    await _poisson(limiter, clock, qps=qps, offered=2 * qps, seconds=3, seed=seed)   # overload sets in
    seconds = 30
    admitted = await _poisson(limiter, clock, qps=qps, offered=2 * qps, seconds=seconds, seed=seed + 10)
    assert 0.95 <= len(admitted) / (qps * seconds) <= 1.05
    # However requests bunch up, no window of w seconds admits more than qps * (w + 1 s of bucket) + 1.
    for w in (1, 5):
        assert _worst(admitted, w) <= qps * (w + 1) + 1


async def test_a_stalled_client_catches_up_within_the_bucket(limiter, clock):
    """One-second pauses (e.g. a busy event loop) cost no capacity: the bucket absorbs them."""
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


async def test_traffic_under_the_limit_is_never_rejected(limiter, clock):
    for _ in range(200):
        assert await limiter.acquire("calm", 10) is None
        clock.now += 0.1


async def test_simultaneous_requests_up_to_the_limit_are_admitted_then_retry_after(limiter, clock):
    results = [await limiter.acquire("burst", 10) for _ in range(25)]
    assert results[:11] == [None] * 11   # one second of requests (+1) from an idle service
    waits = results[11:]
    assert all(w is not None and 0 < w <= 0.1 + 1e-9 for w in waits)
    clock.now += waits[0]
    assert await limiter.acquire("burst", 10) is None
    assert await limiter.acquire("burst", 10) is not None


async def test_services_have_separate_buckets_and_a_new_limit_applies_at_once(collections, clock):
    limiter = SharedQpsLimiter(collections[0], clock=clock, burst_seconds=0)
    assert await limiter.acquire("a", 1) is None
    assert await limiter.acquire("a", 1) is not None
    assert await limiter.acquire("b", 1) is None
    clock.now += 0.25
    assert await limiter.acquire("a", 1) is not None
    assert await limiter.acquire("a", 4) is None       # the new limit: 4 per second from now on
    assert await limiter.acquire("a", 4) is not None
    clock.now += 0.25
    assert await limiter.acquire("a", 4) is None



# ------------------------------------------------------------------------------------ replicas

@pytest.mark.parametrize("qps", [5, 20])
async def test_two_replicas_hold_the_limit_within_5_percent_under_a_2x_overload(collections, clock, qps):
    a, b = (SharedQpsLimiter(c, clock=clock) for c in collections)
    rng = random.Random(qps)
    admitted: list[float] = []
    start = clock.now
    while clock.now - start < 13:             # Poisson arrivals at 2x the limit, each to a random replica
        if await rng.choice((a, b)).acquire("svc", qps) is None:
            admitted.append(clock.now - start)
        clock.now += rng.expovariate(2 * qps)
    steady = [t for t in admitted if t >= 3]  # after the burst of an idle bucket
    assert abs(len(steady) - qps * 10) <= 0.05 * qps * 10, (len(steady), qps * 10)
    # and no window of T = 1 s ever held more than qps x (T + burst) + 1
    assert max(sum(1 for u in admitted if t <= u < t + 1) for t in admitted) <= 2 * qps + 1


async def test_simultaneous_requests_at_both_replicas_never_take_more_than_the_bucket(collections, clock):
    a, b = (SharedQpsLimiter(c, clock=clock) for c in collections)
    answers = await asyncio.gather(*(limiter.acquire("burst", 10) for _ in range(30) for limiter in (a, b)))
    assert sum(1 for wait in answers if wait is None) == 11       # 10 per second x 1 s burst + 1
    assert all(0 < wait <= 0.1 + 1e-6 for wait in answers if wait is not None)


async def test_two_gateways_on_the_same_services_refuse_what_one_budget_refuses(api, running_platform, serving_tmp):
    service, key = await tiny_service(api, serving_tmp), await api_key(api)
    assert (await api.put(f"/api/v1/services/{service['id']}/qps", json={"qps_limit": 1})).status_code == 200
    try:
        async with serve_platform(running_platform["platform"].settings, services="gateway") as second:
            await asyncio.sleep(1)   # both gateways' view of the service refreshes every 0.5 s
            body = {"model": service["name"], "messages": HI, "max_tokens": 1}
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=running_platform["url"] + service["api_base"], timeout=60,
                                         headers=headers) as one, \
                    httpx.AsyncClient(base_url=second["url"] + service["api_base"], timeout=60, headers=headers) as two:
                answers = await asyncio.gather(*(c.post("/chat/completions", json=body)
                                                 for _ in range(4) for c in (one, two)))
        codes = sorted(r.status_code for r in answers)
        # One budget of QPS 1 (a bucket of 2) takes 2 of 8 simultaneous calls, 3 if they spread over a
        # second; two separate budgets would take at least 2 at each gateway.
        assert set(codes) == {200, 429} and 1 <= codes.count(200) <= 3, codes
        assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in answers if r.status_code == 429)
    finally:
        await api.put(f"/api/v1/services/{service['id']}/qps", json={"qps_limit": 50})
        await asyncio.sleep(1)
