"""Signing, backoff and endpoint rules of webhook delivery (no servers)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.delivery import backoff_seconds, encode_body, signed_headers
from services.notifier.endpoints import EndpointRejected, check, check_syntax
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
                                 "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/"])
async def test_private_addresses_are_denied_unless_allowed(url):
    with pytest.raises(EndpointRejected, match="private, loopback or link-local"):
        await check(url, allow_private=False)
    assert await check(url, allow_private=True) == url


async def test_public_addresses_are_allowed():
    assert await check("https://93.184.216.34/hook", allow_private=False)


def test_rule_subjects_and_events_are_validated():
    assert RuleCreate(topic_name="ops", subject="tuning-jobs/*", events=["failed", "failed"]).events == ["failed"]
    assert RuleCreate(topic_name="ops", subject="*", events=["running"]).subject == "*"
    for subject in ("tuning-jobs", "/x", "Tuning/1", "a/b/c"):
        with pytest.raises(ValueError, match="must be '<resource>/<id>'"):
            RuleCreate(topic_name="ops", subject=subject, events=["failed"])
    with pytest.raises(ValueError):
        RuleCreate(topic_name="ops", subject="*", events=[])
