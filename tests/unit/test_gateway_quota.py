"""The gateway's view of preset quotas: no database read per call, and nothing metered missed."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest

from services.gateway.metering import QUOTAS, UsageRecorder, quota_id
from services.gateway.oai_errors import OpenAIError
from services.gateway.quota import QuotaView, check

PRESET = SimpleNamespace(id="svc-1", name="smollm2-preset", preset=True, template_id="smollm2")
CALLER = SimpleNamespace(tenant_id="t1", user_id="u1", key_id="k1")


class FakeCollection:
    """find_one by _id and bulk_write of $inc, counting the reads."""

    def __init__(self, docs=()):
        self.docs = {d["_id"]: dict(d) for d in docs}
        self.reads = 0

    async def find_one(self, query):
        self.reads += 1
        doc = self.docs.get(query["_id"])
        return dict(doc) if doc else None

    async def bulk_write(self, ops, ordered=True):
        for op in ops:
            doc = self.docs.get(op._filter.get("_id"))
            if doc is not None:
                for field, n in op._doc.get("$inc", {}).items():
                    doc[field] = doc.get(field, 0) + n


@pytest.fixture
def platform():
    return SimpleNamespace(mongo=defaultdict(FakeCollection))


def _claim(platform, *, used=0, granted=1000):
    platform.mongo[QUOTAS].docs[quota_id(CALLER.user_id, PRESET.id)] = {
        "_id": quota_id(CALLER.user_id, PRESET.id), "granted": granted, "used": used}


async def test_an_unclaimed_quota_is_refused_and_never_remembered(platform):
    quotas = QuotaView(platform)
    for _ in range(2):
        with pytest.raises(OpenAIError) as err:
            await check(quotas, user_id=CALLER.user_id, service=PRESET, pending=0)
        assert err.value.status == 403
    _claim(platform)   # claimed (by any process): the very next call may go through
    await check(quotas, user_id=CALLER.user_id, service=PRESET, pending=0)
    assert platform.mongo[QUOTAS].reads == 3


async def test_calls_in_steady_state_do_not_read_the_database(platform):
    _claim(platform)
    quotas = QuotaView(platform)
    for _ in range(5):
        await check(quotas, user_id=CALLER.user_id, service=PRESET, pending=0)
    assert platform.mongo[QUOTAS].reads == 1


async def test_usage_this_process_metered_is_counted_before_and_after_it_is_written(platform):
    _claim(platform, granted=1000)
    quotas = QuotaView(platform)
    meter = UsageRecorder(platform, on_quota_written=quotas.written)
    await check(quotas, user_id=CALLER.user_id, service=PRESET, pending=0)

    meter.usage(caller=CALLER, service=PRESET, prompt_tokens=600, completion_tokens=400)
    pending = meter.pending_quota(CALLER.user_id, PRESET.id)
    with pytest.raises(OpenAIError) as err:   # not written yet: the meter's pending counts it
        await check(quotas, user_id=CALLER.user_id, service=PRESET, pending=pending)
    assert err.value.status == 429

    await meter.flush()   # written: pending is 0 now, and the cached document must not be trusted
    assert meter.pending_quota(CALLER.user_id, PRESET.id) == 0
    with pytest.raises(OpenAIError) as err:
        await check(quotas, user_id=CALLER.user_id, service=PRESET, pending=0)
    assert err.value.status == 429 and platform.mongo[QUOTAS].reads == 2
