"""Issue 14.7: /metrics (labels name every tenant's services and models) and the moderation blocklist
are the platform's, not any signed-in user's. An unprivileged second tenant is refused both; the
admin, and Prometheus with MAAS_METRICS_TOKEN, still read /metrics.
"""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.integration.conftest import signed_in_tenant

pytestmark = pytest.mark.integration

METRICS_TOKEN = "prometheus-" + "x" * 40


@pytest.fixture(scope="module")
async def mallory(api, running_platform):
    """An unprivileged second tenant, signed in."""
    async with signed_in_tenant(api, running_platform["url"], name="mallory-metrics") as client:
        yield client


async def test_a_tenant_cannot_read_the_platforms_metrics(api, anonymous, mallory):
    r = await mallory.get("/metrics")
    assert r.status_code == 403, r.text[:300]
    message = r.json()["error"]["message"]
    assert "administrators" in message and "/api/v1/services/{id}/metrics" in message
    assert "maas_" not in r.text

    r = await anonymous.get("/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await anonymous.get("/metrics", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401

    r = await api.get("/metrics")
    assert r.status_code == 200 and "maas_http_requests_total" in r.text


async def test_prometheus_reads_metrics_with_the_metrics_token(anonymous, running_platform, monkeypatch):
    settings = running_platform["platform"].settings
    r = await anonymous.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 401   # no metrics token configured: it is just an unknown token
    monkeypatch.setattr(settings, "metrics_token", SecretStr(METRICS_TOKEN))
    r = await anonymous.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200 and "maas_build_info" in r.text
    r = await anonymous.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN[:-1]}y"})
    assert r.status_code == 401


async def test_a_tenant_cannot_read_or_change_the_moderation_blocklist(api, mallory):
    for r in (await mallory.get("/api/v1/moderation/blocklist"),
              await mallory.put("/api/v1/moderation/blocklist", json={"terms": []})):
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "forbidden" and "platform administrators only" in error["message"]
        assert "terms" not in r.json()

    r = await api.get("/api/v1/moderation/blocklist")
    assert r.status_code == 200 and set(r.json()) == {"terms", "default_terms"}
    saved = r.json()["terms"]
    r = await api.put("/api/v1/moderation/blocklist", json={"terms": [*saved, "forbidden-term-xyz"]})
    assert r.status_code == 200
    try:
        assert "forbidden-term-xyz" in (await api.get("/api/v1/moderation/blocklist")).json()["terms"]
    finally:
        assert (await api.put("/api/v1/moderation/blocklist", json={"terms": saved})).status_code == 200
