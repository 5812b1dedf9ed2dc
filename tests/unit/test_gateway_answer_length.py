"""How long an answer may be when the caller names no max_tokens: /v1 keeps table 11-1's default of 16
(as OpenAI and vLLM do), the playground (a person chatting) asks for an interactive length, at most
half of the service's context."""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from types import SimpleNamespace

import pytest

from contracts.openai import API_DEFAULT_MAX_TOKENS, INTERACTIVE_MAX_TOKENS, ChatCompletionRequest
from services.gateway.inference.chat import ChatGateway
from services.gateway.keys.models import Caller
from services.lib.readmodels.serving_refs import ServiceRef

SERVICE = ServiceRef(id="svc", tenant_id="t", name="chat", status="running", desired="running", preset=False,
                     qps_limit=100, max_model_len=4096, content_moderation=False, instance_count=1, template_id="x",
                     version_id="v", generation=1)
CALLER = Caller(user_id="u", tenant_id="t", username="alice", role="user", key_id="playground")
MESSAGES = [{"role": "user", "content": "hi"}]


async def _sent(body: dict, *, service: ServiceRef = SERVICE, interactive: bool) -> dict:
    """The payload the gateway would send to the service's instance."""
    gateway = ChatGateway(platform=SimpleNamespace(mongo=defaultdict(object)))
    sent = {}

    async def resolve(caller, *, service_id, model):
        return service

    async def complete(caller, service, payload, reservation, call, endpoint):
        sent.update(payload)
        return "answered"
    class Unlimited:   # the shared QPS limit lives in MongoDB (tests/integration/test_qps_limiter.py)
        async def acquire(self, key, qps):
            return None
    gateway.resolve, gateway._complete, gateway.limiter = resolve, complete, Unlimited()
    assert await gateway.chat(CALLER, body, service_id="svc", interactive=interactive) == "answered"
    return sent


async def test_the_api_sends_no_max_tokens_of_its_own():
    sent = await _sent({"messages": MESSAGES}, interactive=False)
    assert "max_tokens" not in sent   # the instance applies table 11-1's default
    assert ChatCompletionRequest(model="m", messages=MESSAGES).resolved_max_tokens() == API_DEFAULT_MAX_TOKENS == 16


async def test_the_playground_asks_for_an_interactive_length_within_half_the_context():
    assert (await _sent({"messages": MESSAGES}, interactive=True))["max_tokens"] == INTERACTIVE_MAX_TOKENS == 512
    small = dataclasses.replace(SERVICE, max_model_len=256)
    assert (await _sent({"messages": MESSAGES}, service=small, interactive=True))["max_tokens"] == 128


@pytest.mark.parametrize("named", [{"max_tokens": 7}, {"max_completion_tokens": 7}])
async def test_a_length_the_caller_names_is_kept(named):
    sent = await _sent({"messages": MESSAGES, **named}, interactive=True)
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 7 and len(
        {k for k in sent if k in ("max_tokens", "max_completion_tokens")}) == 1
