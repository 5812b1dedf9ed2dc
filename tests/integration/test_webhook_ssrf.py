"""Issue 14.5: a tenant's webhook must not reach the platform's private network, DNS rebinding included.

The attacker, an unprivileged tenant, subscribes an endpoint whose name resolves to a public
address when it is checked and to 127.0.0.1 afterwards, where a local service listens. DNS is
played by tests.fake_dns (the platform runs in this process and resolves through it as through
real DNS); everything else is the real platform on real servers.
"""
from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from contracts import new_id
from services.lib.common.settings import get_settings
from services.notifier.delivery import ADDRESS_NOT_ALLOWED, NO_RESPONSE
from tests.fake_dns import FakeDns
from tests.integration.conftest import signed_in_tenant, wait_for

pytestmark = pytest.mark.integration

# Public, so the check at subscription time passes. Delivery may try to connect to it (it is what
# was checked); the short timeout below bounds that attempt.
PUBLIC = "93.184.216.34"


class LocalService:
    """A private service on 127.0.0.1: counts every connection it is offered, answers 200."""

    def __init__(self):
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def local_service():
    service = LocalService()
    server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
    service.port = server.sockets[0].getsockname()[1]
    try:
        yield service
    finally:
        server.close()


@pytest.fixture
async def mallory(api, running_platform):
    """An unprivileged second tenant, signed in."""
    async with signed_in_tenant(api, running_platform["url"], name="mallory-hooks") as client:
        yield client


async def _settled(client: httpx.AsyncClient, subscription_id: str) -> dict:
    """The subscription's one delivery, once delivered or out of attempts."""
    async def settled():
        items = (await client.get("/api/v1/notification-deliveries",
                                  params={"subscription_id": subscription_id})).json()["items"]
        return items[0] if items and items[0]["status"] in ("succeeded", "dead") else None
    return await wait_for(settled, timeout=90)


def test_the_embedded_default_refuses_private_webhook_targets(embedded_servers, platform_env):
    assert "MAAS_WEBHOOK_ALLOW_PRIVATE" not in embedded_servers.settings_env()
    assert get_settings().webhook_allow_private is False


async def test_a_name_rebound_to_loopback_after_the_check_never_reaches_a_local_service(
        mallory, running_platform, local_service, monkeypatch):
    settings = running_platform["platform"].settings
    monkeypatch.setattr(settings, "webhook_allow_private", False)   # as the operator left it
    monkeypatch.setattr(settings, "webhook_retry_base_seconds", 0.2)
    monkeypatch.setattr(settings, "webhook_max_attempts", 3)
    monkeypatch.setattr(settings, "webhook_timeout_seconds", 2.0)
    host = f"hooks-{new_id()[:8]}.rebind.test"
    # Public for the first two lookups (the subscription's check, then the next one), loopback from then on.
    FakeDns(monkeypatch, {host: [PUBLIC, PUBLIC, "127.0.0.1"]})

    r = await mallory.post("/api/v1/notification-topics", json={"name": f"steal-{new_id()[:6]}"})
    assert r.status_code == 201, r.text
    topic = r.json()
    r = await mallory.post(f"/api/v1/notification-topics/{topic['id']}/subscriptions",
                           json={"endpoint": f"http://{host}:{local_service.port}/admin"})
    assert r.status_code == 201, r.text   # public when checked
    delivery = await _settled(mallory, r.json()["id"])
    assert local_service.connections == 0, "the webhook reached a service on 127.0.0.1"
    assert delivery["status"] == "dead"

    # The log says why in fixed words: nothing that tells an open port from a closed one.
    detail = (await mallory.get(f"/api/v1/notification-deliveries/{delivery['id']}")).json()
    errors = [a["error"] for a in detail["attempt_log"]]
    assert len(errors) == 3 and set(errors) <= {NO_RESPONSE, ADDRESS_NOT_ALLOWED}, errors
    assert errors[-1] == ADDRESS_NOT_ALLOWED and detail["last_error"] == ADDRESS_NOT_ALLOWED
    assert all(a["status_code"] is None for a in detail["attempt_log"])


async def test_a_private_target_is_refused_at_once_and_its_failures_read_alike(
        api, mallory, running_platform, local_service, monkeypatch):
    """Refused at subscription time; and where an operator allows private targets, a closed port and
    an open one that never answers HTTP leave the same words in the log."""
    settings = running_platform["platform"].settings
    monkeypatch.setattr(settings, "webhook_allow_private", False)
    r = await mallory.post("/api/v1/notification-topics", json={"name": f"scan-{new_id()[:6]}"})
    assert r.status_code == 201, r.text
    topic = r.json()
    path = f"/api/v1/notification-topics/{topic['id']}/subscriptions"
    host = f"internal-{new_id()[:8]}.rebind.test"
    FakeDns(monkeypatch, {host: ["10.0.0.7"]})
    for endpoint in (f"http://127.0.0.1:{local_service.port}/", f"http://{host}/", "http://[::ffff:7f00:1]/"):
        r = await mallory.post(path, json={"endpoint": endpoint})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["field"] == "endpoint" and "private, loopback or link-local" in error["message"]
        assert "10.0.0.7" not in error["message"]   # the answer would map the private network

    monkeypatch.setattr(settings, "webhook_allow_private", True)
    monkeypatch.setattr(settings, "webhook_max_attempts", 1)
    open_port = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)  # no HTTP
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    try:
        errors = []
        for port in (open_port.sockets[0].getsockname()[1], closed_port):
            r = await mallory.post(path, json={"endpoint": f"http://127.0.0.1:{port}/"})
            assert r.status_code == 201, r.text
            errors.append((await _settled(mallory, r.json()["id"]))["last_error"])
        assert errors == [NO_RESPONSE, NO_RESPONSE]
    finally:
        open_port.close()
