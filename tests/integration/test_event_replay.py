"""Duplicate and reordered delivery, for every handler (issue 18, item 3).

A journey on the tiny model (weight validation, a tuning job with a notification rule, a compression
job, a service that answers one call and is reconfigured, stopped, started and scaled, another deleted
while it deploys, an API key made and deleted, a model and both jobs deleted) fills every topic. Then every record of every
topic of the platform is produced again, twice, each partition newest-first and the partitions of
all topics interleaved: what a consumer-group rewind plus a rebalance can deliver. Once every group
has caught up, every document of every collection is what it was after the single delivery (so no
notification twice, no usage counted twice, no job restarted, no instance started again), and every
replayed event reached every consumer group that handles it. The handlers no event of the journey
reaches are printed.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts import new_id
from services.lib.common import metrics
from services.lib.common.outbox import OUTBOX
from services.runtime import SERVICES
from services.lib.common.service_spec import envelope_handler_types
from tests.conftest import serve_platform
from tests.integration.conftest import wait_for
from tests.integration.test_compression_api import job_body as compression_body
from tests.integration.test_compression_jobs import settled_job
from tests.integration.test_serving_api import add_version, deploy, settled, tiny_model, wait_status
from tests.integration.test_tuning_jobs import alpaca_rows, job_body, job_in, jsonl, put, submit

pytestmark = pytest.mark.integration

# The only fields that change with time rather than with events while the test waits (it makes no
# request between its snapshots): everything else of every collection is compared, but for the
# documents whose TTL expires meanwhile (``_unexpired``).
VOLATILE_FIELDS = {
    "leaders": {"renewed_at", "expires_at"},   # the deployer's leader lease, renewed every few seconds
}


def _groups() -> dict[str, dict[str, set[str]]]:
    """Consumer group -> logical topic -> the event types its handlers take, from every spec."""
    groups: dict[str, dict[str, set[str]]] = {}
    for spec in SERVICES.values():
        for consumer in spec.consumers:
            types = {t for t, _ in envelope_handler_types(consumer)}
            groups.setdefault(consumer.group, {}).setdefault(consumer.topic, set()).update(types)
    return groups


async def _snapshot(platform) -> tuple[dict[str, dict], dict[str, list]]:
    """Every document of every collection, and each collection's TTL indexes (field, lifetime)."""
    db = platform.mongo.db
    state, ttls = {}, {}
    for name in sorted(await db.list_collection_names()):
        if name.startswith("system."):
            continue
        ttls[name] = [(info["key"][0][0], timedelta(seconds=info["expireAfterSeconds"]))
                      for info in (await db[name].index_information()).values() if "expireAfterSeconds" in info]
        drop = VOLATILE_FIELDS.get(name, set())
        docs = {}
        async for doc in db[name].find({}):
            docs[repr(doc["_id"])] = {k: v for k, v in doc.items() if k not in drop}
        state[name] = docs
    return state, ttls


def _unexpired(state: dict[str, dict], ttls: dict[str, list], at: datetime) -> dict[str, dict]:
    """Without the documents MongoDB's TTL monitor may remove by ``at`` (short-lived request state
    such as rate-limit buckets: time removes them, not events)."""
    def expired(name: str, doc: dict) -> bool:
        return any(isinstance(doc.get(f), datetime) and doc[f] + ttl <= at for f, ttl in ttls.get(name, []))
    return {name: {k: d for k, d in docs.items() if not expired(name, d)} for name, docs in state.items()}


def _differences(before: dict, after: dict) -> list[str]:
    found = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}), after.get(name, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                a, b = old.get(key) or {}, new.get(key) or {}
                fields = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
                found.append(f"{name} {key}: " + ", ".join(f"{f}: {a.get(f)!r} -> {b.get(f)!r}" for f in fields)
                             if a and b else f"{name} {key}: {'added' if b else 'removed'} {b or a!r:.300}")
    return found


async def _read(consumer, tps: list, *, idle_polls: int = 3) -> list:
    """The records of the assigned partitions from their positions on, until the log is exhausted.

    Not bounded by end offsets: after a producer batch of several records, Tansu's ListOffsets
    answers a wrong (too low) high watermark, so the log is read until polls come back empty."""
    records, empty = [], 0
    while empty < idle_polls:
        batch = await consumer.getmany(*tps, timeout_ms=1000)
        got = [r for items in batch.values() for r in items]
        records += got
        empty = 0 if got else empty + 1
    return records


async def _partitions(consumer, settings, logical_topics=None) -> list[TopicPartition]:
    prefix = f"{settings.topic_prefix}."
    names = await consumer.topics()
    wanted = sorted(t for t in names if t.startswith(prefix)) if logical_topics is None else \
        sorted(prefix + t for t in logical_topics if prefix + t in names)
    return [TopicPartition(t, p) for t in wanted for p in sorted(consumer.partitions_for_topic(t) or ())]


async def _records(settings) -> list:
    """Every record of every topic of this platform, from the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, settings)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return await _read(consumer, partitions)
    finally:
        await consumer.stop()


def _reordered(records: list) -> list:
    """Each partition newest-first; the partitions of every topic interleaved one record at a time."""
    by_partition: dict[tuple[str, int], list] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition), []).append(record)
    lanes = [sorted(rs, key=lambda r: r.offset, reverse=True) for _, rs in sorted(by_partition.items())]
    return [r for row in itertools.zip_longest(*lanes) for r in row if r is not None]


async def _replay(settings, records: list) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(record.topic, record.value, key=record.key, partition=record.partition,
                                         headers=list(record.headers))
    finally:
        await producer.stop()


async def _caught_up(settings) -> bool:
    """Every consumer group has committed past the last record of every partition it reads (the
    last record found by reading, not from end offsets: see ``_read``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group, topics in _groups().items():
            tps = await _partitions(consumer, settings, topics)
            offsets = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}.{group}", partitions=tps)
            committed[group] = {tp: max(offsets[tp].offset, 0) if tp in offsets else 0 for tp in tps}
        every = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = {tp: min(o[tp] for o in committed.values() if tp in o) for tp in every}
        consumer.assign(every)
        for tp, offset in ends.items():
            consumer.seek(tp, offset)
        for record in await _read(consumer, every, idle_polls=2):
            tp = TopicPartition(record.topic, record.partition)
            ends[tp] = max(ends[tp], record.offset + 1)
        return all(offset >= ends[tp] for offsets in committed.values() for tp, offset in offsets.items())
    finally:
        await consumer.stop()
        await admin.close()


async def _settled(platform) -> None:
    """Every event chain has run out: twice in a row, nothing waits in the outbox or in a group."""
    async def quiet() -> bool:
        for _ in range(2):
            if await platform.mongo[OUTBOX].count_documents({"published": False}):
                return False
            if not await _caught_up(platform.settings):
                return False
            await asyncio.sleep(1)
        return True
    await wait_for(quiet, timeout=180, interval=1)


def _consumed() -> Counter:
    counts: Counter = Counter()
    for family in metrics.REGISTRY.collect():
        if family.name == "maas_events_consumed":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts[(labels["group"], labels["type"], labels["outcome"])] += sample.value
    return counts


async def _journey(api, tmp_root) -> None:
    """Touches every consumer group: registry (validation, versions, artifacts, deletion), tuning (and a
    checkpoint's conversion), compression, serving and deployer (a service through its life, an upgrade
    included), notifier (all of it; a rule from the tuning job)."""
    model = await tiny_model(api, tmp_root, name="replay-tiny")
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    dataset = await put(api, f"{bucket}/replay/alpaca8.jsonl", jsonl(alpaca_rows(8)))
    tune = await submit(api, job_body(model["id"], dataset, name="replay-tune", output_model_name="replay-tuned",
                                      hyperparameters={"epochs": 1, "checkpoint_count": 1, "global_batch_size": 8},
                                      notification={"enabled": True, "topic_name": "replay-alerts",
                                                    "events": ["completed", "failed"]}))
    r = await api.post("/api/v1/compression-jobs", json=compression_body(
        name="replay-compress", strategy="awq-w4a16", source={"model_id": model["id"]},
        output_model_name="replay-awq"))
    assert r.status_code == 201, r.text
    compression = r.json()
    service = await deploy(api, name="replay-svc", model_id=model["id"])
    r = await api.post("/api/v1/api-keys", json={"description": "replay"})
    assert r.status_code == 201, r.text
    key = r.json()
    r = await api.post(f"/v1/infers/{service['id']}/v1/chat/completions",
                       headers={"Authorization": f"Bearer {key['key']}"},
                       json={"model": service["name"], "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert (await api.delete(f"/api/v1/api-keys/{key['id']}")).status_code == 204
    # Every request event of the service: QPS, moderation, stop, start (it runs at the end: a
    # replayed deploy or start must not start it again).
    url = f"/api/v1/services/{service['id']}"
    assert (await api.put(f"{url}/qps", json={"qps_limit": 7})).status_code == 200
    r = await api.put(f"{url}/moderation", json={"enabled": False, "confirm_moderation_off": True})
    assert r.status_code == 200, r.text
    assert (await api.post(f"{url}/stop")).status_code == 200
    await wait_status(api, service["id"], "stopped")
    assert (await api.post(f"{url}/start")).status_code == 200
    await wait_status(api, service["id"], "running")
    # A second version of the model, and the service upgraded to it.
    number = await add_version(api, tmp_root, model, seed=1)
    r = await api.post(f"{url}/upgrade", json={"version": f"V{number}"})
    assert r.status_code == 200, r.text
    await settled(api, url, lambda s: s["status"] == "running" and s["version_number"] == number
                  and s["operation"] is None)
    r = await api.put(f"{url}/instance-count", json={"instance_count": 2})
    assert r.status_code == 200, r.text
    await settled(api, url, lambda s: s["status"] == "running" and s["ready_instances"] == 2)
    # A service deleted while it deploys: a replayed deploy request must not bring it back.
    doomed = await deploy(api, name="replay-doomed", model_id=model["id"], wait=False)
    assert (await api.delete(f"/api/v1/services/{doomed['id']}")).status_code == 204

    await job_in(api, tune["id"], "completed")
    assert (await settled_job(api, compression["id"]))["status"] == "completed"
    # A checkpoint of the tuning job made a model of its own (a weight conversion).
    iteration = (await api.get(f"/api/v1/tuning-jobs/{tune['id']}/checkpoints")).json()["items"][0]["iteration"]
    r = await api.post(f"/api/v1/tuning-jobs/{tune['id']}/checkpoints/{iteration}/models",
                       json={"target": "new_model", "model_name": "replay-ckpt"})
    assert r.status_code == 202, r.text
    conversion = r.json()

    async def converted():
        items = (await api.get(f"/api/v1/tuning-jobs/{tune['id']}/conversions")).json()["items"]
        item = next(c for c in items if c["id"] == conversion["id"])
        assert item["status"] != "failed", item
        return item if item.get("version_id") else None
    await wait_for(converted, timeout=180, interval=1)

    async def outputs_created():
        jobs = [(await api.get(f"/api/v1/tuning-jobs/{tune['id']}")).json(),
                (await api.get(f"/api/v1/compression-jobs/{compression['id']}")).json()]
        ids = [j["output"].get("model_id") for j in jobs]
        if not all(ids):
            return None
        models = [(await api.get(f"/api/v1/models/{i}")).json() for i in ids]
        return ids if all(m["status"] != "creating" for m in models) else None
    _, compressed = await wait_for(outputs_created, timeout=180, interval=1)
    # Deletions: a model (its objects go), a job of each kind.
    assert (await api.delete(f"/api/v1/models/{compressed}")).status_code == 204
    assert (await api.delete(f"/api/v1/compression-jobs/{compression['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/tuning-jobs/{tune['id']}")).status_code == 204


@pytest.fixture
async def replay_platform(platform_env, tmp_path_factory):
    """A whole platform of its own (database, topics, work folder) on the session's servers: the test
    compares every collection and replays every topic, which on the shared session platform would
    include the work every other module left behind."""
    from services.lib.common.settings import get_settings

    name = f"replay{new_id()[:6]}"
    settings = get_settings().model_copy(update={
        "mongo_db": f"maas_{name}", "topic_prefix": f"maas-{name}", "import_presets": False,
        "work_dir": str(tmp_path_factory.mktemp(f"{name}-work"))})
    async with serve_platform(settings) as running:
        async with httpx.AsyncClient(base_url=running["url"], timeout=120,
                                     headers={"Authorization": f"Bearer {running['admin'].token}"}) as api:
            yield running["platform"], api


async def test_every_event_delivered_twice_and_reversed_changes_nothing(replay_platform, tmp_path_factory):
    platform, api = replay_platform
    settings = platform.settings
    await _journey(api, tmp_path_factory.mktemp("replay"))
    await _settled(platform)
    before, ttls = await _snapshot(platform)

    records = await _records(settings)
    types = Counter((r.topic.removeprefix(f"{settings.topic_prefix}."), json.loads(r.value)["type"])
                    for r in records)
    consumed = _consumed()
    await _replay(settings, _reordered(records) * 2)
    await _settled(platform)
    after, _ = await _snapshot(platform)
    at = datetime.now(UTC)
    before, after = _unexpired(before, ttls, at), _unexpired(after, ttls, at)

    assert not _differences(before, after), "\n".join(_differences(before, after))

    # Every replayed event reached every group that handles it (twice), and no handler failed on it.
    delta = _consumed() - consumed
    assert not [k for k, v in delta.items() if k[2] == "error" and v], delta
    uncovered = []
    for group, topics in sorted(_groups().items()):
        reached = False
        for topic, handled in sorted(topics.items()):
            for event_type in sorted(handled):
                sent = types.get((topic, event_type), 0)
                if sent:
                    assert delta[(group, event_type, "ok")] >= 2 * sent, (group, event_type, sent, delta)
                    reached = True
                else:
                    uncovered.append(f"{group}: {event_type}")
        assert reached, f"the journey produced no event that consumer group {group} handles"
    print("handlers the journey did not exercise:", ", ".join(uncovered) or "none")
