"""Free-quota reservations: what a call reserves, and that no interleaving of calls, gateway
processes, crashes or lost write answers bills more than was granted or loses usage.

The store here keeps the quota documents in memory with the semantics of quota_store.QuotaStore's
MongoDB updates (each one atomic); tests/integration/test_quota_reservation.py runs the real one.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from contracts.openai import ChatCompletionRequest
from services.gateway.inference.chat import _RelayedStream
from services.gateway.oai_errors import OpenAIError
from services.gateway.quotas.calls import TEMPLATE_TOKENS, call_bound, reserve
from services.gateway.quotas.ledger import NoRoom, NotClaimed, QuotaLedger
from services.gateway.quotas.store import quota_id

PRESET = SimpleNamespace(id="svc-1", name="smollm2-preset", preset=True, max_model_len=2048)
QID = quota_id("u1", PRESET.id)


class MemoryStore:
    """QuotaStore over a dict; ``fail_after_next``: the next write is applied, then raises (its answer lost)."""

    def __init__(self):
        self.docs: dict[str, dict] = {}
        self.writes = 0
        self.fail_after_next = False

    def claim(self, *, granted: int, used: int = 0) -> None:
        self.docs[QID] = {"_id": QID, "granted": granted, "used": used, "reserved": 0, "leases": {}}

    def _lease_matches(self, doc, key, seq) -> bool:
        lease = doc["leases"].get(key)
        if seq is None:
            return lease is None or lease.get("tokens", 0) == 0
        return lease is not None and lease["seq"] == seq

    async def _written(self, doc):
        self.writes += 1
        await asyncio.sleep(0)   # other calls run while a write is on the wire
        if self.fail_after_next:
            self.fail_after_next = False
            raise ConnectionError("connection lost before the answer")
        return copy.deepcopy(doc)

    async def find(self, qid):
        return copy.deepcopy(self.docs.get(qid))

    async def grow(self, qid, *, key, seq, tokens, expires_at):
        doc = self.docs.get(qid)
        if doc is None or not self._lease_matches(doc, key, seq):
            return None
        if doc["used"] + doc["reserved"] + tokens > doc["granted"]:
            return None
        lease = doc["leases"].setdefault(key, {"tokens": 0, "seq": 0})
        lease["tokens"] += tokens
        lease["seq"] += 1
        lease["expires_at"] = expires_at
        doc["reserved"] += tokens
        return await self._written(doc)

    async def charge(self, qid, *, key, seq, billed, from_lease, expires_at):
        doc = self.docs.get(qid)
        if doc is None or not self._lease_matches(doc, key, seq):
            return None
        lease = doc["leases"][key]
        doc["used"] += billed
        doc["reserved"] -= from_lease
        lease["tokens"] -= from_lease
        lease["seq"] += 1
        lease["expires_at"] = expires_at
        return await self._written(doc)

    async def bill(self, qid, *, tokens):
        self.docs[qid]["used"] += tokens
        self.writes += 1

    async def reclaim_expired(self, doc, *, now):
        dropped = []
        live = self.docs[doc["_id"]]
        for key, lease in list(doc.get("leases", {}).items()):
            mine = live["leases"].get(key)
            if lease["expires_at"] < now and mine is not None and mine["seq"] == lease["seq"]:
                live["reserved"] -= mine["tokens"]
                del live["leases"][key]
                dropped.append(key)
        return dropped

    async def drop_empty(self, qid, *, key, seq):
        lease = self.docs[qid]["leases"].get(key)
        if lease is not None and lease["seq"] == seq and lease["tokens"] == 0:
            del self.docs[qid]["leases"][key]

    def check(self) -> dict:
        """The invariants of a quota document: reserved is the sum of the leases, none negative."""
        doc = self.docs[QID]
        assert doc["reserved"] == sum(lease["tokens"] for lease in doc["leases"].values())
        assert doc["reserved"] >= 0 and all(lease["tokens"] >= 0 for lease in doc["leases"].values())
        return doc


def ledger(store, *, chunk=0, lease_seconds=30.0, idle_release=0.0) -> QuotaLedger:
    return QuotaLedger(store, chunk=chunk, lease_seconds=lease_seconds, idle_release=idle_release)


# ---------------------------------------------------------------------------------------------- the bound

def _bound(body: dict, service=PRESET):
    return call_bound(body, ChatCompletionRequest.model_validate({"model": "m", **body}), service)


def test_a_call_reserves_its_prompt_bytes_plus_n_times_max_tokens():
    messages = [{"role": "user", "content": "你好, how are you?"}]
    bound = _bound({"messages": messages, "max_tokens": 100, "n": 3})
    assert bound.prompt == len(json.dumps([messages, None], ensure_ascii=False).encode()) + TEMPLATE_TOKENS
    assert bound.prompt >= len(messages[0]["content"].encode())   # a byte-level token covers a byte at least
    assert (bound.max_tokens, bound.n, bound.tokens) == (100, 3, bound.prompt + 300)
    assert _bound({"messages": messages}).max_tokens == 16   # the instance's default (table 11-1), not the context
    assert _bound({"messages": messages, "max_completion_tokens": 40}).max_tokens == 40


def test_the_prompt_part_is_at_most_the_context_left_after_max_tokens():
    huge = [{"role": "user", "content": "x" * 10_000}]
    bound = _bound({"messages": huge, "max_tokens": 48})
    assert bound.prompt == PRESET.max_model_len - 48 and bound.tokens == PRESET.max_model_len
    with_tools = _bound({"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "description": "d" * 300}}]})
    assert with_tools.prompt > 300 + TEMPLATE_TOKENS


# ---------------------------------------------------------------------------------------------- one process

async def test_concurrent_calls_never_reserve_more_than_granted():
    store = MemoryStore()
    store.claim(granted=1000)
    quotas = ledger(store, chunk=4096)
    results = await asyncio.gather(*(quotas.reserve(QID, 300) for _ in range(10)), return_exceptions=True)
    held = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, NoRoom)]
    assert len(held) == 3 and len(refused) == 7
    assert store.check()["reserved"] == 900
    assert refused[0].balance.granted == 1000 and refused[0].balance.left == 100


async def test_settling_bills_the_true_usage_and_frees_the_rest():
    store = MemoryStore()
    store.claim(granted=1000)
    quotas = ledger(store, idle_release=3600)
    first = await quotas.reserve(QID, 600)
    with pytest.raises(NoRoom):
        await quotas.reserve(QID, 600)
    first.settle(120)
    second = await quotas.reserve(QID, 600)   # 480 of the first came back at once, locally
    second.settle(700)                        # more than reserved (an estimate that fell short): billed all
    await quotas.flush()
    doc = store.check()
    assert doc["used"] == 820 and doc["used"] + doc["reserved"] <= doc["granted"] + 100
    first.settle(999)                         # settling twice changes nothing
    await quotas.flush(closing=True)
    doc = store.check()
    assert doc["used"] == 820 and doc["reserved"] == 0 and doc["leases"] == {}


async def test_calls_in_steady_state_reserve_without_a_database_write():
    store = MemoryStore()
    store.claim(granted=1_000_000)
    quotas = ledger(store, chunk=8192, idle_release=3600)
    for _ in range(20):
        (await quotas.reserve(QID, 500)).settle(100)
    assert store.writes == 1   # one grow of 500 + 8192; then the chunk covers every call
    await quotas.flush()
    assert store.check()["used"] == 2000 and store.writes == 2


async def test_an_idle_lease_goes_back_to_the_quota():
    store = MemoryStore()
    store.claim(granted=10_000)
    quotas = ledger(store, chunk=4096, idle_release=0.05)
    (await quotas.reserve(QID, 500)).settle(50)
    await quotas.flush()   # used just now: billed, the lease stays
    assert store.check()["reserved"] == 4096 + 500 - 50
    await asyncio.sleep(0.06)
    await quotas.flush()
    doc = store.check()
    assert doc["used"] == 50 and doc["reserved"] == 0


async def test_an_unclaimed_quota_is_refused_with_403_and_a_full_one_with_429_and_the_numbers():
    store = MemoryStore()
    quotas = ledger(store)
    bound = _bound({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100})
    with pytest.raises(NotClaimed):
        await quotas.reserve(QID, bound.tokens)
    with pytest.raises(OpenAIError) as err:
        await reserve(quotas, user_id="u1", service=PRESET, bound=bound)
    assert err.value.status == 403 and err.value.code == "quota_not_claimed"

    store.claim(granted=1_000_000, used=1_000_000 - bound.tokens + 1)   # one token short
    with pytest.raises(OpenAIError) as err:
        await reserve(quotas, user_id="u1", service=PRESET, bound=bound)
    assert err.value.status == 429 and err.value.code == "insufficient_quota"
    assert err.value.type == "insufficient_quota"
    assert f"up to {bound.tokens} tokens" in err.value.message and "max_tokens 100" in err.value.message
    assert f"{bound.tokens - 1} of 1000000 are left" in err.value.message

    store.docs[QID]["used"] = 1_000_000
    with pytest.raises(OpenAIError) as err:
        await reserve(quotas, user_id="u1", service=PRESET, bound=bound)
    assert err.value.status == 429 and "is used up" in err.value.message


# ---------------------------------------------------------------------------------------------- several processes

async def test_several_gateway_processes_share_one_quota():
    store = MemoryStore()
    store.claim(granted=5000)
    gateways = [ledger(store, chunk=1000, idle_release=0.0) for _ in range(3)]
    billed = 0

    async def call(quotas, i):
        nonlocal billed
        try:
            reservation = await quotas.reserve(QID, 400)
        except NoRoom:
            return
        await asyncio.sleep(0.001 * (i % 3))
        reservation.settle(150)
        billed += 150
    for _ in range(5):
        await asyncio.gather(*(call(g, i) for i, g in enumerate(gateways * 10)))
        await asyncio.gather(*(g.flush() for g in gateways))
        doc = store.check()
        assert doc["used"] + doc["reserved"] <= doc["granted"]
    await asyncio.gather(*(g.flush(closing=True) for g in gateways))
    doc = store.check()
    assert doc["used"] == billed <= 5000 and doc["reserved"] == 0 and billed > 5000 - 400


async def test_a_crashed_gateways_lease_expires_and_goes_back_to_the_quota():
    store = MemoryStore()
    store.claim(granted=1000)
    crashed = ledger(store, chunk=0, lease_seconds=30)
    await crashed.reserve(QID, 800)   # in progress when its process died: never settled, never renewed
    survivor = ledger(store)
    with pytest.raises(NoRoom):
        await survivor.reserve(QID, 500)
    for lease in store.docs[QID]["leases"].values():   # 30 s later
        lease["expires_at"] -= timedelta(seconds=31)
    reservation = await survivor.reserve(QID, 500)
    assert store.check()["reserved"] == 500
    reservation.settle(200)
    await survivor.flush(closing=True)
    assert store.check()["used"] == 200


async def test_a_gateway_whose_lease_lapsed_still_bills_its_calls():
    store = MemoryStore()
    store.claim(granted=1000)
    slow = ledger(store, lease_seconds=30)
    reservation = await slow.reserve(QID, 300)
    store.docs[QID]["leases"][slow.key]["expires_at"] = datetime.now(UTC) - timedelta(seconds=1)
    other = ledger(store)
    await other.reserve(QID, 800)   # drops the expired lease to make room
    reservation.settle(120)         # the call still ran: its tokens count
    await slow.flush()
    doc = store.check()
    assert doc["used"] == 120 and doc["reserved"] == 800


async def test_a_write_whose_answer_was_lost_is_neither_lost_nor_applied_twice():
    store = MemoryStore()
    store.claim(granted=10_000)
    quotas = ledger(store, chunk=0, idle_release=3600)
    (await quotas.reserve(QID, 1000)).settle(300)
    store.fail_after_next = True
    await quotas.flush()   # applied in the store, but the gateway saw the connection fail
    assert store.docs[QID]["used"] == 300
    await quotas.flush()   # checks the earlier write first: applied, so nothing is billed again
    (await quotas.reserve(QID, 500)).settle(100)
    await quotas.flush(closing=True)
    doc = store.check()
    assert doc["used"] == 400 and doc["reserved"] == 0

    store.fail_after_next = True
    with pytest.raises(ConnectionError):   # a grow applied whose answer was lost
        await quotas.reserve(QID, 700)
    reservation = await quotas.reserve(QID, 700)   # found applied: no second grow needed
    assert store.check()["reserved"] == 700
    reservation.settle(0)
    await quotas.flush(closing=True)
    assert store.check()["reserved"] == 0 and store.docs[QID]["used"] == 400


# ---------------------------------------------------------------------------------------------- streams

async def test_a_stream_whose_client_left_before_the_first_chunk_still_settles():
    closed = []

    async def relay():
        try:
            yield b"data: {}\n\n"
        finally:
            closed.append("relay")

    response = _RelayedStream(relay(), on_close=lambda: closed.append("on_close"), media_type="text/event-stream")

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        await asyncio.sleep(1)   # the disconnect wins before the first chunk is taken from the relay

    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    started = time.monotonic()
    await response(scope, receive, send)
    assert closed == ["on_close"] and time.monotonic() - started < 1
