"""The gateway's stream relay, load balancing and moderation, on canned upstream streams."""
from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest

from opentelemetry.trace import NoOpTracer

from contracts.openai import PROMPT_TOKENS_HEADER, ChatCompletionRequest
from services.lib.readmodels.serving_refs import InstanceRef, ServiceRef
from services.gateway.inference.chat import ChatGateway
from services.gateway.inference.genai_telemetry import ChatTelemetry
from services.gateway.inference.moderation import BlocklistChecker, message_text
from services.gateway.inference.routing import Router
from services.gateway.inference.upstream import UpstreamBroken
from services.gateway.keys.models import Caller
from services.gateway.quotas.ledger import NO_RESERVATION

SERVICE = ServiceRef(id="svc", tenant_id="t", name="chat", status="running", desired="running", preset=False,
                     qps_limit=10, max_model_len=256, content_moderation=True, instance_count=1, template_id="x",
                     version_id="v", generation=1)
CALLER = Caller(user_id="u", tenant_id="t", username="alice", role="user", key_id="k1")
INSTANCE = InstanceRef(id="i1", service_id="svc", url="http://instance", status="ready")


def _chunk(content: str | None = None, *, finish: str | None = None, index: int = 0, usage=None, choices=True):
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "chat",
            "choices": [{"index": index, "delta": {} if content is None else {"content": content},
                         "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return "data: " + json.dumps(body) + "\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
STREAM = (_chunk("Hel", usage=None) + _chunk("lo") + _chunk("!", finish="stop") +
          _chunk(choices=False, usage=USAGE) + "data: [DONE]\n\n")


class _CannedResponse:
    """What the gateway relays from: an instance's answer arriving in one read (then maybe a break)."""
    status = 200
    headers = {PROMPT_TOKENS_HEADER: "7"}   # the prompt's tokens, sent before the first chunk

    def __init__(self, text: str, *, break_after: bool):
        self.text, self.break_after, self.released = text, break_after, False

    async def blocks(self):
        yield self.text.encode()
        if self.break_after:
            raise UpstreamBroken("connection reset")

    def release(self):
        self.released = True


def chat_telemetry(*, tracer=None, capture_content: bool = False, **request) -> ChatTelemetry:
    """The GenAI span and metrics of one call (not recorded without a tracer)."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "stream": True, **request}
    return ChatTelemetry(request=ChatCompletionRequest.model_validate(body), model=SERVICE.name,
                         messages=body["messages"], capture_content=capture_content,
                         tracer=tracer or NoOpTracer())


async def _relay(stream_text: str, *, wants_usage: bool, checker=None, break_after: bool = False, call=None):
    response = _CannedResponse(stream_text, break_after=break_after)
    gateway = ChatGateway(platform=SimpleNamespace(mongo=defaultdict(object)))
    gateway.router.acquire(INSTANCE)
    relayed = gateway._relayed(caller=CALLER, service=SERVICE, instance=INSTANCE, response=response, started=0.0,
                               wants_usage=wants_usage, checker=checker, reservation=NO_RESERVATION,
                               call=call or chat_telemetry())
    out = [part async for part in relayed.body_iterator]
    assert response.released
    events = [line[6:] for line in b"".join(out).decode().split("\n\n") if line.startswith("data: ")]
    return gateway, events


async def test_the_usage_chunk_is_dropped_when_the_client_did_not_ask_but_usage_is_metered():
    gateway, events = await _relay(STREAM, wants_usage=False)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello!"
    assert all("usage" not in c and c["choices"] for c in chunks)
    (usage,) = gateway.meter._usage.values()
    assert usage["inc"]["prompt_tokens"] == 7 and usage["inc"]["completion_tokens"] == 3
    assert gateway.router.outstanding == {}   # the instance slot was released


async def test_the_usage_chunk_reaches_a_client_that_asked_for_it():
    _, events = await _relay(STREAM, wants_usage=True)
    assert json.loads(events[-2])["usage"] == USAGE and json.loads(events[-2])["choices"] == []


async def test_a_blocked_answer_ends_the_stream_with_content_filter():
    stream = _chunk("The secret ") + _chunk("plan is") + _chunk(" here") + "data: [DONE]\n\n"
    _, events = await _relay(stream, wants_usage=False, checker=BlocklistChecker(["secret plan"]))
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["The secret ", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


async def test_a_broken_upstream_stream_ends_with_an_error_event_and_is_metered_by_what_was_sent():
    gateway, events = await _relay(_chunk("a") + _chunk("b"), wants_usage=False, break_after=True)
    error = json.loads(events[-1])
    assert error["error"]["code"] == "upstream_error"
    (usage,) = gateway.meter._usage.values()
    # No usage chunk came: the prompt as the instance announced it, and the tokens streamed.
    assert usage["inc"]["prompt_tokens"] == 7 and usage["inc"]["completion_tokens"] == 2


def test_least_outstanding_requests_wins_and_ties_rotate():
    router = Router(platform=object())
    a, b, c = (InstanceRef(id=x, service_id="s", url=x, status="ready") for x in "abc")
    router.acquire(a)
    router.acquire(a)
    router.acquire(b)
    assert router.pick([a, b, c]) is c
    router.acquire(c)
    assert router.pick([a, b, c]) in (b, c)
    picks = {router.pick([b, c]).id for _ in range(4)}
    assert picks == {"b", "c"}
    assert router.pick([a, b, c], exclude={"b", "c"}) is a
    assert router.pick([a], exclude={"a"}) is None
    router.release(a)
    router.release(a)
    assert "a" not in router.outstanding


def test_instance_utilisation_follows_requests_in_flight():
    from services.lib.common import metrics
    from services.gateway.inference.routing import INSTANCE_SLOTS
    from services.lib.inference.engine import DEFAULT_MAX_NUM_SEQS

    assert INSTANCE_SLOTS == DEFAULT_MAX_NUM_SEQS
    router = Router(platform=object())
    inst = InstanceRef(id="util-1", service_id="svc-util", url="u", status="ready")

    def value():
        return metrics.REGISTRY.get_sample_value("maas_instance_utilisation_ratio",
                                                 {"service": "svc-util", "instance": "util-1"})
    for _ in range(4):
        router.acquire(inst)
    assert value() == 4 / INSTANCE_SLOTS
    for _ in range(4):
        router.release(inst)
    assert value() == 0.0


@pytest.mark.parametrize("text,blocked", [
    ("How To  MAKE a bomb at home", True),   # case and spacing do not matter
    ("请告诉我如何制造炸弹", True),
    ("a recipe for bread", False),
])
def test_the_blocklist_checker(text, blocked):
    checker = BlocklistChecker(["how to make a bomb", "制造炸弹"])
    assert checker.check(text).blocked is blocked
    assert checker.window == len("how to make a bomb")


def test_message_text_reads_strings_and_text_parts():
    messages = [{"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url"}]},
                {"role": "assistant", "content": None, "tool_calls": []}]
    assert message_text(messages) == "sys\npart"


async def test_tool_call_deltas_pass_through_unchanged():
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_delivery_date", "arguments": "{\"order_id\": \"1\"}"}}
    tool_chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "chat",
                  "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    stream = ("data: " + json.dumps(tool_chunk) + "\n\n" + _chunk(finish="tool_calls") +
              _chunk(choices=False, usage=USAGE) + "data: [DONE]\n\n")
    gateway, events = await _relay(stream, wants_usage=False, checker=BlocklistChecker(["bomb"]))
    assert json.loads(events[0]) == tool_chunk
    assert json.loads(events[1])["choices"][0]["finish_reason"] == "tool_calls"
    (usage,) = gateway.meter._usage.values()
    assert usage["inc"]["completion_tokens"] == 3
