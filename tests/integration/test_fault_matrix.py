"""Fault × workload (issue 18, item 1): ``kill -9`` of MongoDB and of the object store (the Kafka broker:
below), each in the middle of a LoRA tuning job, a compression job, a weight validation and a stream of
chat calls to a running service, on real embedded servers of this module's own. The killed server is
started again on its data and port (what `maas up`'s supervisor does: ``EmbeddedServers.restart_dead``).

Afterwards every API write that answered 2xx is there, every job reached a terminal state (completed, or
failed saying why) and the validation finished, the outbox is empty and each state change of the tuning
job reached a confirmed webhook exactly once, and the chat calls either succeeded or failed fast with an
OpenAI-shaped 503 — never a 500, never a hang — and succeed again after the restart.

Per (fault, workload) the test measures what was lost and how long after the restart the workload made
progress again, and prints the table (run with ``-s`` to see it). The faults run one after the other on
one platform (all services, workers included): one platform start instead of three.

What it found: a few seconds of S3 outage failed tuning jobs (checkpoint upload), compression jobs and
validations; their storage steps now wait outages out (services/lib/jobs/outages.py).

Not in this matrix yet: the Kafka broker. Restarted after a kill -9, Tansu 0.6.0 writes a partition's
first new record at offset 0, over stored ones, unless the partition was fetched first; the supervisor
reads every partition back, but a producer that reconnects the moment the port opens gets in before it
(a producer writing in a loop across the kill lost every earlier record, each time). The consumer
groups, whose offsets are past them, then never see the new records (a model stays "creating"): about
one run in four here. Reading back on another port and stopping cleanly does not keep the ends (tried);
the fix needs the broker unreachable to clients until the read-back is done (a forwarder on its port).
Issue 18 stays open for it; the Kafka outage itself (health, 503s, the outbox's warning and delivery
once it is back) is tested in test_dependency_outages.py.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from contracts import new_id
from services.lib.common.outbox import OUTBOX, PROCESSED
from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import kill_server, private_platform, restart_server, wait_for
from tests.integration.test_compression_api import job_body as compression_body
from tests.integration.test_compression_api import upload_folder
from tests.integration.test_notifier_webhooks import Receiver, _confirmed, _topic, served
from tests.integration.test_serving_api import deploy
from tests.integration.test_tuning_jobs import alpaca_rows, job_body, jsonl, put

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTS = ["mongo", "s3"]   # "kafka": see the module docstring
WORKLOADS = ["tuning", "compression", "validation", "chat", "api writes"]
HEALTH_NAMES = {"kafka": "kafka", "mongo": "mongodb", "s3": "object_store"}
CHAT_BOUND_S = 30.0      # a chat call that takes longer than this hangs
OUTAGE_S = 4.0           # how long the server stays dead once /healthz has noticed
TUNING_EVENTS = {"TuneStarted", "TuneHangSuspected", "TuneStopped", "TuneCompleted", "TuneFailed"}
TERMINAL = {"completed", "failed"}
MAX_TOPIC_WRITES = 40    # per fault (a tenant may have 100 topics; they are deleted after each fault)


@dataclass
class Outcome:
    lost: dict[str, list[str]] = field(default_factory=lambda: {w: [] for w in WORKLOADS})
    recovery: dict[str, float | None] = field(default_factory=lambda: {w: None for w in WORKLOADS})
    end: dict[str, str] = field(default_factory=dict)   # how each workload ended (a failure names its reason)
    healthy_s: float | None = None


def _table(results: dict[str, Outcome]) -> str:
    head = f"{'fault':<7}| {'workload':<12}| {'lost':<5}| {'recovery s':<11}| {'end':<22}| what was lost"
    rows = [head, "-" * len(head)]
    for fault, outcome in results.items():
        for w in WORKLOADS:
            rec = outcome.recovery[w]
            lost = outcome.lost[w]
            rows.append(f"{fault:<7}| {w:<12}| {len(lost):<5}| {'-' if rec is None else f'{rec:.1f}':<11}| "
                        f"{outcome.end.get(w, '')[:22]:<22}| "
                        + ("; ".join(lost)[:300] or "nothing"))
        rows.append(f"{fault:<7}| {'/healthz ok':<12}| {'':<5}| "
                    f"{'-' if outcome.healthy_s is None else f'{outcome.healthy_s:.1f}':<11}|")
    return "\n".join(rows)


@pytest.fixture(scope="module")
async def matrix(tmp_path_factory):
    """The private platform (all services), a confirmed webhook receiver, a created tiny model, a running
    service on it with an API key, and the table the tests fill."""
    began = time.monotonic()
    folder = tmp_path_factory.mktemp("faults")
    async with served(Receiver()) as receiver:
        async with private_platform(folder, services="all", topic_prefix="maas-faults", import_presets=False,
                                    # room for both jobs and the service's instance at once on any machine
                                    local_pool_cpus=16.0, webhook_allow_private=True) as stack:
            admin = stack["admin"]
            bucket = (await admin.get("/api/v1/auth/me")).json()["default_bucket"]
            tiny = build_tiny_model(folder / "tiny")
            weights = await upload_folder(admin, tiny, f"{bucket}/faults/base")
            r = await admin.post("/api/v1/models", json={"name": "fault-base", "template_id": "qwen2-custom",
                                                         "weights_path": weights})
            assert r.status_code == 201, r.text
            base = await _model_settled(admin, r.json()["id"])
            assert base["status"] == "created", base
            dataset = await put(admin, f"{bucket}/faults/alpaca32.jsonl", jsonl(alpaca_rows(32)))
            service = await deploy(admin, name="fault-svc", model_id=base["id"])
            r = await admin.post("/api/v1/api-keys", json={"description": "fault matrix"})
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            topic = await _topic(admin, "faults")
            async with httpx.AsyncClient(base_url=stack["url"], timeout=60) as anonymous:
                sub = await _confirmed(admin, anonymous, receiver, topic, "/faults")
            print(f"\nfault matrix platform ready in {time.monotonic() - began:.0f} s")
            yield {**stack, "bucket": bucket, "tiny": tiny, "base": base, "dataset": dataset, "service": service,
                   "key": key, "topic": topic, "subscription": sub, "receiver": receiver, "results": {}}


async def _model_settled(api, model_id: str, *, timeout: float = 180) -> dict:
    async def done():
        r = await api.get(f"/api/v1/models/{model_id}")
        return r.json() if r.status_code == 200 and r.json()["status"] != "creating" else None
    return await wait_for(done, timeout=timeout, interval=0.5)


async def _get(api, url: str) -> dict | None:
    """The resource, or None while the platform cannot answer (a 503 during the outage)."""
    try:
        r = await api.get(url)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


# ---- the background workloads ---------------------------------------------------------------------

@dataclass
class Call:
    started: float
    ended: float
    status: int | str
    problem: str | None = None   # why this answer is not acceptable


def _judge_chat(r: httpx.Response) -> str | None:
    if r.status_code == 200:
        body = r.json()
        return None if body.get("choices") else f"200 without choices: {r.text[:200]}"
    if r.status_code == 503:
        try:
            error = r.json()["error"]
        except Exception:
            return f"503 without an OpenAI error body: {r.text[:200]}"
        if set(error) != {"message", "type", "param", "code"} or not error["message"]:
            return f"503 not OpenAI-shaped: {r.text[:200]}"
        if not r.headers.get("Retry-After"):
            return "503 without Retry-After"
        return None
    return f"{r.status_code}: {r.text[:200]}"


async def _chat_stream(url: str, key: str, model: str, calls: list[Call], stop: asyncio.Event) -> None:
    """One chat call after another until ``stop``; each one judged."""
    async with httpx.AsyncClient(base_url=url, timeout=CHAT_BOUND_S, headers={"Authorization": f"Bearer {key}"}) as c:
        while not stop.is_set():
            started = time.monotonic()
            try:
                r = await c.post("/v1/chat/completions", json={
                    "model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
                call = Call(started, time.monotonic(), r.status_code, _judge_chat(r))
            except httpx.TimeoutException:
                call = Call(started, time.monotonic(), "timeout", f"no answer within {CHAT_BOUND_S:.0f} s")
            except httpx.HTTPError as exc:
                call = Call(started, time.monotonic(), "error", f"{type(exc).__name__}: {exc}")
            calls.append(call)
            await asyncio.sleep(0.5)


async def _writes(api, bucket: str, fault: str, acked: list[tuple[str, str, bytes]], refused: list[str],
                  stop: asyncio.Event) -> None:
    """Alternately a notification topic (a MongoDB write) and an object (an S3 write) until ``stop``;
    ``acked`` gets each one that answered 201, ``refused`` each other answer that is not a 503."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if i % 2 and sum(kind == "topic" for kind, _, _ in acked) < MAX_TOPIC_WRITES:
                r = await api.post("/api/v1/notification-topics", json={"name": f"w-{fault}-{i}-{new_id()[:4]}"})
                if r.status_code == 201:
                    acked.append(("topic", r.json()["id"], b""))
            else:
                path, data = f"{bucket}/faults/writes/{fault}/{i}.txt", f"write {i} {new_id()}".encode()
                r = await api.put(f"/api/v1/storage/objects/{path}", content=data)
                if r.status_code == 201:
                    acked.append(("object", path, data))
            if r.status_code not in (201, 503):
                refused.append(f"{r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as exc:
            refused.append(f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(0.8)


def _stored(servers, path: str) -> bytes | None:
    """An object's bytes read straight from the object store (the API has no download)."""
    from minio.error import S3Error

    bucket, key = path.split("/", 1)
    try:
        response = servers.minio_client().get_object(bucket, key)
    except S3Error:
        return None
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


async def _missing_writes(api, servers, acked: list[tuple[str, str, bytes]]) -> list[str]:
    missing = []
    for kind, ident, data in acked:
        if kind == "topic":
            r = await api.get(f"/api/v1/notification-topics/{ident}")
            if r.status_code != 200:
                missing.append(f"topic {ident}: {r.status_code}")
        elif (stored := await asyncio.to_thread(_stored, servers, ident)) != data:
            missing.append(f"object {ident}: {'missing' if stored is None else 'other bytes'}")
    return missing


# ---- the matrix -----------------------------------------------------------------------------------

def _progress_of(job: dict | None):
    return None if job is None else (job["status"], repr(job.get("progress")))


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_killed_server_loses_nothing_and_every_workload_recovers(matrix, fault, tmp_path):
    admin, servers, platform = matrix["admin"], matrix["servers"], matrix["platform"]
    receiver, bucket = matrix["receiver"], matrix["bucket"]
    outcome = matrix["results"].setdefault(fault, Outcome())
    # The weights of the model validated during the fault: uploaded while all is well.
    weights = await upload_folder(admin, build_tiny_model(tmp_path / "v", seed=3), f"{bucket}/faults/{fault}")

    stop = asyncio.Event()
    calls: list[Call] = []
    acked: list[tuple[str, str, bytes]] = []
    refused: list[str] = []
    background = [
        asyncio.create_task(_chat_stream(matrix["url"], matrix["key"], matrix["service"]["name"], calls, stop)),
        asyncio.create_task(_writes(admin, bucket, fault, acked, refused, stop)),
    ]
    began = time.monotonic()
    phases: dict[str, float] = {}
    try:
        # (a) and (b): both jobs running when the server dies.
        r = await admin.post("/api/v1/tuning-jobs", json=job_body(
            matrix["base"]["id"], matrix["dataset"], name=f"fault-tune-{fault}", output_model_name=f"fault-tuned-{fault}",
            hyperparameters={"epochs": 3, "checkpoint_count": 1, "global_batch_size": 8},
            notification={"enabled": True, "topic_name": matrix["topic"]["name"],
                          "events": ["running", "suspected_hang", "stopped", "completed", "failed"]}))
        assert r.status_code == 201, r.text
        tune = r.json()
        r = await admin.post("/api/v1/compression-jobs", json=compression_body(
            name=f"fault-compress-{fault}", strategy="awq-w4a16", source={"model_id": matrix["base"]["id"]},
            output_model_name=f"fault-awq-{fault}"))
        assert r.status_code == 201, r.text
        compression = r.json()
        tune_url, compression_url = f"/api/v1/tuning-jobs/{tune['id']}", f"/api/v1/compression-jobs/{compression['id']}"

        async def both_working():
            """Both jobs past their start: a training iteration done, a compression step reported."""
            t, c = await _get(admin, tune_url), await _get(admin, compression_url)
            return t and c and (t["status"] in TERMINAL or (t.get("progress") or {}).get("iteration", 0) >= 1) \
                and (c["status"] in TERMINAL or (c.get("progress") or {}).get("fraction", 0) > 0)
        await wait_for(both_working, timeout=300, interval=0.5)
        phases["jobs mid-work"] = time.monotonic() - began
        # (c): the validation is requested a moment before the kill.
        r = await admin.post("/api/v1/models", json={"name": f"fault-validated-{fault}", "template_id": "qwen2-custom",
                                                     "weights_path": weights, "validate_weights": True})
        assert r.status_code == 201, r.text
        validated = r.json()

        urls = {"tuning": tune_url, "compression": compression_url}
        before_kill = {}
        for name, url in urls.items():
            job = await _get(admin, url)
            before_kill[name] = _progress_of(job)
            if job and job["status"] in TERMINAL:
                outcome.end[name] = "ended before the kill"
        await kill_server(servers, fault)
        killed_at = time.monotonic()

        async def noticed():
            r = await admin.get("/healthz")
            return r.json()["dependencies"][HEALTH_NAMES[fault]]["status"] == "down"
        await wait_for(noticed, timeout=60)
        await asyncio.sleep(OUTAGE_S)    # the workloads run on into the outage
        await restart_server(servers, fault)
        restarted = time.monotonic()
        phases["restarted"] = restarted - began

        # Recovery: from the restart to each workload's next sign of progress (compared with the state
        # read right after the restart or, while the API cannot answer yet, the last one before the kill).
        at_restart = {name: _progress_of(await _get(admin, url)) or before_kill[name] for name, url in urls.items()}
        acked_at_restart = len(acked)
        deadline = restarted + 180
        while time.monotonic() < deadline:
            now = time.monotonic() - restarted
            if outcome.healthy_s is None and (await admin.get("/healthz")).status_code == 200:
                outcome.healthy_s = now
            for name, url in urls.items():
                job = await _get(admin, url)
                if outcome.recovery[name] is None and job is not None and (
                        job["status"] in TERMINAL or _progress_of(job) != at_restart[name]):
                    outcome.recovery[name] = now
            model = await _get(admin, f"/api/v1/models/{validated['id']}")
            if outcome.recovery["validation"] is None and model is not None and model["status"] != "creating":
                outcome.recovery["validation"] = now
            if outcome.recovery["chat"] is None and any(c.status == 200 and c.started >= restarted for c in calls):
                outcome.recovery["chat"] = min(c.ended for c in calls if c.status == 200 and c.started >= restarted) \
                    - restarted
            if outcome.recovery["api writes"] is None and len(acked) > acked_at_restart:
                outcome.recovery["api writes"] = now
            if all(v is not None for v in outcome.recovery.values()) and outcome.healthy_s is not None:
                break
            await asyncio.sleep(0.5)

        phases["recovered"] = time.monotonic() - began
        # Every job to its end (or the reason it is stuck).
        async def terminal(url):
            job = await _get(admin, url)
            return job if job and job["status"] in TERMINAL else None
        finals = {}
        for name, url in urls.items():
            try:
                finals[name] = await wait_for(lambda url=url: terminal(url), timeout=300, interval=1)
            except AssertionError:
                job = await _get(admin, url)
                outcome.lost[name].append(f"stuck in {job and job['status']!r}")
                continue
            outcome.end[name] = f"{finals[name]['status']} {outcome.end.get(name, '')}".strip()
            if finals[name]["status"] == "failed":
                reason = finals[name].get("status_message")
                outcome.end[name] = f"failed: {reason}"
                print(f"[{fault}] {name} failed: {reason}")
                if not reason:
                    outcome.lost[name].append("failed without a reason")
        try:
            model = await _model_settled(admin, validated["id"], timeout=120)
            outcome.end["validation"] = model["status"]
            if model["status"] != "created":
                version = await _get(admin, f"/api/v1/models/{validated['id']}/versions/V1")
                outcome.lost["validation"].append(f"model {model['status']}: {version and version['message']}")
        except AssertionError:
            trail = [f"{doc['envelope']['type']} (published {doc['published']}, consumed by "
                     f"{sorted([p['consumer'] async for p in platform.mongo[PROCESSED].find({'event_id': doc['_id']})])})"
                     async for doc in platform.mongo[OUTBOX].find({"envelope.subject": f"models/{validated['id']}"})]
            outcome.lost["validation"].append(f"the validation never finished (model stays creating); its events: {trail}")
        phases["all ended"] = time.monotonic() - began
        # A couple more chat calls after recovery, then the stream stops.
        chats_before = len(calls)
        await wait_for(lambda: _return(len(calls) >= chats_before + 2), timeout=120)
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        missing = await _missing_writes(admin, servers, acked)
        for kind, ident, _ in acked:   # a tenant has at most 100 topics: make room for the next fault
            if kind == "topic":
                await admin.delete(f"/api/v1/notification-topics/{ident}")

    # (d) chat: every call acceptable, and calls succeed again after the restart.
    bad = Counter(c.problem for c in calls if c.problem)
    outcome.lost["chat"] += [f"{n}x {p}" for p, n in bad.items()]
    if not calls or calls[-1].status != 200:
        outcome.lost["chat"].append(f"the last chat call answered {calls[-1].status if calls else 'nothing'}")
    during = [c for c in calls if c.started >= killed_at and c.ended <= restarted]
    outcome.end["chat"] = " ".join(f"{k}x{n}" for k, n in sorted(Counter(str(c.status) for c in calls).items()))
    outcome.end["api writes"] = f"{len(acked)} acknowledged"
    # API writes: everything acknowledged is there; nothing but 201 or 503 answered.
    outcome.lost["api writes"] += missing
    outcome.lost["api writes"] += refused[:5]
    for name, job in (("tuning", tune), ("compression", compression), ("validation", validated)):
        if (await admin.get({"tuning": tune_url, "compression": compression_url,
                             "validation": f"/api/v1/models/{validated['id']}"}[name])).status_code != 200:
            outcome.lost[name].append(f"the acknowledged {name} request {job['id']} is gone")

    # Every event committed through the outbox is published, and each tuning state change reached the
    # webhook exactly once.
    async def outbox_empty():
        return await platform.mongo[OUTBOX].count_documents({"published": False}) == 0
    try:
        await wait_for(outbox_empty, timeout=120, interval=1)
    except AssertionError:
        left = await platform.mongo[OUTBOX].count_documents({"published": False})
        outcome.lost["tuning"].append(f"{left} outbox events never published")
    subject = f"tuning-jobs/{tune['id']}"
    expected = {doc["envelope"]["id"]: doc["envelope"]["type"] async for doc in platform.mongo[OUTBOX].find(
        {"envelope.subject": subject, "envelope.type": {"$in": sorted(TUNING_EVENTS)}})}

    async def all_notified():
        got = {r.payload["data"]["event_id"] for r in receiver.notifications("/faults", subject)}
        return set(expected) <= got
    try:
        await wait_for(all_notified, timeout=120, interval=1)
    except AssertionError:
        pass
    await asyncio.sleep(2)   # a duplicate, if any, would follow its first copy closely
    sent = Counter(r.payload["data"]["event_id"] for r in receiver.notifications("/faults", subject))
    outcome.lost["tuning"] += [f"notification of {t} ({i}) never sent" for i, t in expected.items() if i not in sent]
    outcome.lost["tuning"] += [f"notification {i} sent {n} times" for i, n in sent.items() if n > 1]
    outcome.lost["tuning"] += [f"notification {i} for no committed event" for i in sent if i not in expected]

    phases["checked"] = time.monotonic() - began
    print(f"\n[{fault}] phases (s): {', '.join(f'{k} {v:.0f}' for k, v in phases.items())}")
    slowest = max((c.ended - c.started for c in calls if c.started >= killed_at and c.started <= restarted),
                  default=0.0)
    print(f"[{fault}] slowest chat call started during the outage: {slowest:.1f} s")
    print(f"[{fault}] {len(calls)} chat calls ({len(during)} during the outage: "
          f"{dict(Counter(c.status for c in during))}), {len(acked)} acknowledged writes, tuning "
          f"{finals.get('tuning', {}).get('status')}, compression {finals.get('compression', {}).get('status')}, "
          f"notifications {sorted(expected.values())}")
    print(_table(matrix["results"]))

    lost = {w: items for w, items in outcome.lost.items() if items}
    assert not lost, lost
    for workload, seconds in outcome.recovery.items():
        assert seconds is not None, f"{workload} made no progress within 180 s of the restart"
    assert outcome.healthy_s is not None, "/healthz never answered 200 again"


async def _return(value):
    return value
