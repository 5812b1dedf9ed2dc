"""Failed logins: the free ones, the growing wait, per username and per client address, shared by
every gateway (the counters are MongoDB documents; mongomock here, the real server in
tests/integration/test_sessions.py). An unknown username costs the same scrypt as a wrong password."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from mongomock_motor import AsyncMongoMockClient

from services.lib.common.errors import ApiError
from services.gateway.accounts import passwords
from services.gateway.accounts.login_throttle import LoginThrottle, ThrottleRules

RULES = ThrottleRules(free_per_user=3, free_per_client=10, base_seconds=1, max_seconds=8, window_seconds=60)


class Clock:
    def __init__(self):
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def collection():
    return AsyncMongoMockClient(tz_aware=True)["maas"]["login_failures"]


def gateways(collection, clock, n: int = 2) -> list[LoginThrottle]:
    """Several gateway replicas: each its own LoginThrottle over the one collection."""
    return [LoginThrottle(collection, RULES, clock=clock) for _ in range(n)]


async def wait_of(throttle: LoginThrottle, *, username="alice", client="10.0.0.1") -> int:
    """0 when allowed, else the Retry-After of the 429."""
    try:
        await throttle.check(username=username, client=client)
    except ApiError as exc:
        assert exc.status == 429 and exc.code == "too_many_login_attempts"
        return int(exc.headers["Retry-After"])
    return 0


async def test_the_free_failures_cost_nothing_then_the_wait_doubles_up_to_the_maximum(collection, clock):
    one, other = gateways(collection, clock)
    for replica in (one, other, one):   # the counter is shared: replicas count together
        await replica.failed(username="alice", client="10.0.0.1")
        assert await wait_of(other) == 0
    waits = []
    for _ in range(6):
        await one.failed(username="alice", client="10.0.0.1")
        wait = await wait_of(other)
        waits.append(wait)
        clock.advance(wait)
        assert await wait_of(one) == 0   # the block is over once the wait has passed
    assert waits == [1, 2, 4, 8, 8, 8]


async def test_a_blocked_username_is_blocked_from_every_address_and_for_every_password(collection, clock):
    [throttle] = gateways(collection, clock, 1)
    for _ in range(4):
        await throttle.failed(username="alice", client="10.0.0.1")
    assert await wait_of(throttle, client="192.0.2.7") == 1
    assert await wait_of(throttle, username="bob", client="192.0.2.7") == 0


async def test_many_usernames_from_one_address_block_that_address(collection, clock):
    [throttle] = gateways(collection, clock, 1)
    for i in range(RULES.free_per_client + 1):
        await throttle.failed(username=f"user{i}", client="10.0.0.9")
    assert await wait_of(throttle, username="someone-new", client="10.0.0.9") == 1
    assert await wait_of(throttle, username="someone-new", client="10.0.0.10") == 0


async def test_a_success_clears_the_username_but_not_the_address(collection, clock):
    [throttle] = gateways(collection, clock, 1)
    for i in range(RULES.free_per_client):
        await throttle.failed(username="alice" if i < 2 else f"other{i}", client="10.0.0.1")
    await throttle.succeeded(username="alice")
    for _ in range(RULES.free_per_user):
        await throttle.failed(username="alice", client="10.0.0.2")
    assert await wait_of(throttle, client="10.0.0.2") == 0   # alice's count restarted at 0
    await throttle.failed(username="mallory", client="10.0.0.1")
    assert await wait_of(throttle, username="mallory", client="10.0.0.1") == 1   # the address kept its count


async def test_failures_are_forgotten_a_window_after_the_last_one(collection, clock):
    [throttle] = gateways(collection, clock, 1)
    for _ in range(RULES.free_per_user):
        await throttle.failed(username="alice", client=None)
    clock.advance(RULES.window.total_seconds() + 1)
    await throttle.failed(username="alice", client=None)
    assert await wait_of(throttle, client=None) == 0
    doc = await collection.find_one({"_id": "user:alice"})
    assert doc["failures"] == 1


def test_the_window_outlasts_the_longest_wait():
    rules = ThrottleRules(max_seconds=900, window_seconds=60)
    assert rules.window == timedelta(seconds=900)
    assert rules.wait_after(10_000, free=5) == 900


def test_an_unknown_username_costs_the_same_scrypt_as_a_wrong_password(monkeypatch):
    calls = []
    real = hashlib.scrypt

    def counting(password, **kwargs):
        calls.append(kwargs)
        return real(password, **kwargs)
    monkeypatch.setattr(passwords.hashlib, "scrypt", counting)
    stored = passwords.hash_password("the-right-password")
    calls.clear()
    assert not passwords.password_matches("a-wrong-password", stored)
    wrong = [(c["n"], c["r"], c["p"], len(c["salt"])) for c in calls]
    calls.clear()
    assert not passwords.password_matches("a-wrong-password", None)
    unknown = [(c["n"], c["r"], c["p"], len(c["salt"])) for c in calls]
    assert wrong == unknown and len(wrong) == 1
    assert passwords.password_matches("the-right-password", stored)


async def test_hashing_runs_off_the_event_loop(monkeypatch):
    import threading

    threads = []
    real = passwords.hash_password

    def recording(password, **kwargs):
        threads.append(threading.current_thread())
        return real(password, **kwargs)
    monkeypatch.setattr(passwords, "hash_password", recording)
    stored = await passwords.hash_password_off_loop("a-password-1")
    assert await passwords.password_matches_off_loop("a-password-1", stored)
    assert threads and all(t is not threading.main_thread() for t in threads)
