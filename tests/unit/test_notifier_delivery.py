"""Signing, backoff and endpoint rules of webhook delivery (no servers)."""
from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from cloudevents.core.bindings import http as http_binding
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.cloudevents_format import CLOUDEVENTS_CONTENT_TYPE, cloudevent
from services.notifier.delivery import backoff_seconds, encode_body, signed_headers
from services.notifier.endpoints import AddressNotAllowed, EndpointRejected, HostNotFound, check, check_syntax
from services.notifier.webhook_http import ConnectionFailed, WebhookHttp
from tests.fake_dns import FakeDns
from services.notifier.models import RuleCreate
from services.notifier.service import new_secret


def test_deliveries_verify_with_a_standard_webhooks_library():
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = encode_body({"type": "models.completed", "data": {"subject": "models/1", "名字": "模型"}})
    headers = signed_headers(secret=secret, msg_id="msg_1", body=body, at=datetime.now(UTC))
    assert set(headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("completed", "failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_a_delivery_as_a_cloudevent_is_the_same_for_every_attempt_and_omits_no_attribute():
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    doc = {"_id": "msg_1", "topic_name": "alerts", "subject": "models/1", "payload": {
        "type": "models.completed", "timestamp": at.isoformat(), "data": {"subject": "models/1", "kind": "completed"}}}
    event = cloudevent(doc)
    assert encode_body(event) == encode_body(cloudevent(doc))
    parsed = http_binding.from_http_event(http_binding.HTTPMessage(
        headers={"content-type": CLOUDEVENTS_CONTENT_TYPE}, body=encode_body(event).encode()))
    assert (parsed.get_id(), parsed.get_type(), parsed.get_source(), parsed.get_subject(), parsed.get_time()) == (
        "msg_1", "io.openmaas.models.completed", "/openmaas/notification-topics/alerts", "models/1", at)
    assert parsed.get_data() == doc["payload"]["data"]
    # A confirmation request is about no resource: no subject attribute at all.
    assert "subject" not in cloudevent({**doc, "subject": None})


def test_backoff_doubles_then_caps():
    delays = [backoff_seconds(n, base=5, cap=60, jitter=0.5) for n in range(1, 7)]
    assert delays == [5, 10, 20, 40, 60, 60]
    assert backoff_seconds(1, base=5, cap=60, jitter=0) == pytest.approx(4)
    assert backoff_seconds(1, base=5, cap=60, jitter=1) == pytest.approx(6)


@pytest.mark.parametrize("url, rule", [
    ("ftp://example.com/hook", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("https:///hook", "must name a host"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("https://example.com:99999/", "not a valid URL"),
    ("https://example.com/" + "a" * 3000, "at most 2048"),
])
def test_endpoint_syntax_rules(url, rule):
    with pytest.raises(EndpointRejected, match=rule):
        check_syntax(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://10.1.2.3/", "http://192.168.0.1/",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://0.0.0.0/",
                                 "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/",
                                 # Other spellings of loopback, and IPv6 forms that carry a private IPv4.
                                 "http://127.1/", "http://2130706433/", "http://[::7f00:1]/",
                                 "http://[::ffff:0:7f00:1]/", "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::a00:1]/",
                                 "http://[64:ff9b:1::a00:1]/", "http://[2002:7f00:1::]/", "http://[2002:a00:1::]/",
                                 "http://[ff02::1]/", "http://224.0.0.1/"])
async def test_private_addresses_are_denied_unless_allowed(url):
    with pytest.raises(AddressNotAllowed, match="private, loopback or link-local"):
        await check(url, allow_private=False)
    assert await check(url, allow_private=True) == url


async def test_public_addresses_are_allowed():
    assert await check("https://93.184.216.34/hook", allow_private=False)
    assert await check("http://[64:ff9b::5db8:d822]/hook", allow_private=False)  # 93.184.216.34 over NAT64


# ------------------------------------------------------------------ the connection keeps to the checked address

async def _tcp_server():
    """A plain HTTP server on 127.0.0.1 that records each request head and answers 204."""
    heads: list[bytes] = []

    async def handle(reader, writer):
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], heads


def _settings(*, allow_private: bool):
    return SimpleNamespace(webhook_allow_private=allow_private, webhook_timeout_seconds=5.0)


async def test_a_name_that_rebinds_to_loopback_is_never_connected(monkeypatch):
    server, port, heads = await _tcp_server()
    dns = FakeDns(monkeypatch, {"rebind.test": ["127.0.0.1"]})
    try:
        async with WebhookHttp(settings=_settings(allow_private=False)) as http:
            with pytest.raises(AddressNotAllowed) as caught:
                await http.post(f"http://rebind.test:{port}/hook", body=b"{}", headers={})
        assert "127.0.0.1" not in str(caught.value)
        assert heads == [] and dns.asked == ["rebind.test"]
    finally:
        server.close()


async def test_the_connection_goes_to_the_address_of_its_one_lookup_with_the_name_in_host(monkeypatch):
    """The second answer (another address) is never asked for: one lookup per connection, then that address."""
    server, port, heads = await _tcp_server()
    dns = FakeDns(monkeypatch, {"receiver.test": ["127.0.0.1", "127.0.0.2"]})
    try:
        async with WebhookHttp(settings=_settings(allow_private=True)) as http:
            status = await http.post(f"http://receiver.test:{port}/hook", body=b"{}", headers={"x-a": "1"})
        assert status == 204 and dns.asked == ["receiver.test"]
        assert f"Host: receiver.test:{port}".encode() in heads[0] and b"POST /hook HTTP/1.1" in heads[0]
    finally:
        server.close()


async def test_failures_are_told_apart_only_by_kind():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with WebhookHttp(settings=_settings(allow_private=True)) as http:
        with pytest.raises(ConnectionFailed):
            await http.post(f"http://127.0.0.1:{closed}/", body=b"{}", headers={})
        with pytest.raises(HostNotFound):
            await http.post("http://no-such-host.invalid/", body=b"{}", headers={})


def test_rule_subjects_and_events_are_validated():
    assert RuleCreate(topic_name="ops", subject="tuning-jobs/*", events=["failed", "failed"]).events == ["failed"]
    assert RuleCreate(topic_name="ops", subject="*", events=["running"]).subject == "*"
    for subject in ("tuning-jobs", "/x", "Tuning/1", "a/b/c"):
        with pytest.raises(ValueError, match="must be '<resource>/<id>'"):
            RuleCreate(topic_name="ops", subject=subject, events=["failed"])
    with pytest.raises(ValueError):
        RuleCreate(topic_name="ops", subject="*", events=[])
