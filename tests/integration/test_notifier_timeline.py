"""Event timelines, /metrics and the recent-traces API on the running platform (real servers)."""
from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import new_id
from contracts.serving import ServiceStatusChanged
from services.lib.mlkit.tiny import build_tiny_model
from services.notifier.timeline import EVENTS
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def model(api, tmp_path_factory) -> dict:
    """A model created through the API, settled (creating → created)."""
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    name = f"timeline-{new_id()[:6]}"
    folder = build_tiny_model(tmp_path_factory.mktemp("timeline") / name)
    for f in sorted(folder.iterdir()):
        assert (await api.put(f"/api/v1/storage/objects/{bucket}/{name}/{f.name}", content=f.read_bytes())).status_code == 201
    r = await api.post("/api/v1/models", json={"name": name, "template_id": "qwen2-custom",
                                               "weights_path": f"{bucket}/{name}"})
    assert r.status_code == 201, r.text
    model = r.json()

    async def settled():  # the timeline has the final status change once the notifier consumed it
        events = (await api.get(f"/api/v1/models/{model['id']}/timeline")).json()["items"]
        # Not just any status change: the one to "created" (a "creating" change comes first).
        return events if any(e["type"] == "ModelVersionStatusChanged" and e["kind"] == "completed"
                             for e in events) else None
    await wait_for(settled, timeout=120)
    return model


async def test_a_models_timeline_lists_its_events_in_order(api, model):
    r = await api.get(f"/api/v1/models/{model['id']}/timeline")
    assert r.status_code == 200
    body = r.json()
    types = [e["type"] for e in body["items"]]
    # In the order the registry emitted them: the validation request goes out with the model's creation.
    assert types[-1] == "ModelVersionStatusChanged", types
    assert {"ModelCreated", "WeightValidationRequested", "WeightValidationCompleted"} <= set(types)
    assert body["total"] == len(types)
    first, last = next(e for e in body["items"] if e["kind"]), body["items"][-1]
    assert (first["kind"], first["kind_label"]) == ("creating", "创建中")
    assert (last["kind"], last["data"]["status"]) == ("completed", "created")
    times = [e["occurred_at"] for e in body["items"]]
    assert times == sorted(times)

    newest = (await api.get(f"/api/v1/models/{model['id']}/timeline", params={"order": "desc", "limit": 1})).json()
    assert [e["id"] for e in newest["items"]] == [last["id"]] and newest["total"] == len(types)
    same = (await api.get("/api/v1/events", params={"subject": f"models/{model['id']}", "kind": "completed"})).json()
    assert [e["id"] for e in same["items"]] == [last["id"]]


async def test_timelines_are_per_tenant_and_per_known_resource(api, running_platform, model):
    username = f"u{new_id()[:8]}"
    assert (await api.post("/api/v1/users", json={"username": username, "password": "password-123"})).status_code == 201
    token = (await api.post("/api/v1/auth/login", json={"username": username, "password": "password-123"})).json()["token"]
    async with httpx.AsyncClient(base_url=running_platform["url"], headers={"Authorization": f"Bearer {token}"}) as other:
        r = await other.get("/api/v1/events", params={"subject": f"models/{model['id']}"})
        assert r.status_code == 200 and r.json() == {"total": 0, "items": []}
        assert (await other.get("/api/v1/traces/recent")).status_code == 403
    r = await api.get(f"/api/v1/gadgets/{model['id']}/timeline")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.get("/api/v1/events", params={"kind": "exploded"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "kind"
    assert (await running_platform["platform"].mongo[EVENTS].index_information())["timeline_ttl"][
        "expireAfterSeconds"] == 30 * 24 * 3600


async def test_a_service_timeline_follows_its_status_events(api, running_platform):
    """Events of other domains land in their subject's timeline with no change to the notifier."""
    platform = running_platform["platform"]
    tenant_id = (await api.get("/api/v1/auth/me")).json()["tenant_id"]
    service_id = new_id()
    for status in ("deploying", "running", "alarm"):
        async with platform.uow() as uow:
            uow.emit(ServiceStatusChanged(service_id=service_id, name="svc", status=status),
                     tenant_id=tenant_id, subject=f"services/{service_id}")

    async def three():
        items = (await api.get(f"/api/v1/services/{service_id}/timeline")).json()["items"]
        return items if len(items) == 3 else None
    items = await wait_for(three, timeout=60)
    assert [e["kind"] for e in items] == ["deploying", "running", "alarm"]


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_endpoint_exposes_requests_events_and_jobs(api, model):
    r = await api.get("/metrics")   # an admin's token (tests/integration/test_metrics_access.py: who else)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)

    def value(name: str, **labels) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)
    assert value("maas_http_requests_total", method="POST", route="/api/v1/models", status_code="201") >= 1
    assert value("maas_http_request_duration_seconds_count", method="POST", route="/api/v1/models") >= 1
    assert value("maas_events_published_total", topic="maas.registry.events", type="ModelCreated") >= 1
    assert value("maas_events_consumed_total", group="notifier", type="ModelCreated", outcome="ok") >= 1
    assert value("maas_events_consumed_total", group="registry-weights", type="WeightValidationRequested",
                 outcome="ok") >= 1
    assert value("maas_jobs", resource="models", state="completed") >= 1
    assert ("maas_outbox_pending_events", ()) in samples
    assert any(name == "maas_build_info" and dict(labels)["services"].count("notifier")
               for name, labels in samples)
    assert any(name == "maas_consumer_lag_messages" and dict(labels)["group"] == "notifier"
               for name, labels in samples), "consumer lag is probed from Kafka"


async def test_recent_traces_show_the_request_and_its_consumers(api, model):
    r = await api.get("/api/v1/traces/recent", params={"limit": 500})
    assert r.status_code == 200
    creates = [t for t in r.json()["items"] if t["root"] == "POST /api/v1/models"]
    assert creates
    kinds = []
    for trace in creates:
        spans = (await api.get(f"/api/v1/traces/{trace['trace_id']}")).json()["spans"]
        assert spans[0]["kind"] == "SERVER" and spans[0]["name"] == "POST /api/v1/models"
        kinds.append({s["kind"] for s in spans})
    # The model's creation: HTTP request → outbox relay → Kafka → consumers, one trace. (The
    # request follows large uploads on the same connection: it must still be a root SERVER span.)
    assert any(k >= {"SERVER", "PRODUCER", "CONSUMER"} for k in kinds), kinds
    assert (await api.get(f"/api/v1/traces/{'0' * 32}")).status_code == 404
