"""What the gateway does differently for /v1/completions (services.gateway.inference.endpoints): the text
moderation reads, the quota bound, the relayed stream's text, and the GenAI operation name."""
from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts.openai import CompletionRequest
from services.gateway.inference.chat import ChatGateway
from services.gateway.inference.endpoints import CHAT, COMPLETIONS, completion_bound
from services.gateway.inference.genai_telemetry import ChatTelemetry
from services.gateway.inference.moderation import BlocklistChecker
from services.gateway.quotas.ledger import NO_RESERVATION
from tests.unit.test_serving_relay import CALLER, INSTANCE, SERVICE, _CannedResponse


def _request(**body) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", **body})


def test_moderation_reads_text_prompts_and_names_token_id_prompts_to_decode():
    assert COMPLETIONS.input_text({"prompt": "hello"}) == ("hello", [])
    assert COMPLETIONS.input_text({"prompt": ["a", "b"]}) == ("a\nb", [])
    assert COMPLETIONS.input_text({"prompt": [1, 2, 3]}) == ("", [[1, 2, 3]])
    assert COMPLETIONS.input_text({"prompt": [[1], [2, 3]]}) == ("", [[1], [2, 3]])
    assert CHAT.input_text({"messages": [{"role": "user", "content": "hi"}]}) == ("hi", [])
    assert COMPLETIONS.input_param == "prompt" and COMPLETIONS.path == "/v1/completions"


def test_the_quota_bound_covers_every_prompt_and_choice():
    body = {"prompt": ["hello", "hi"], "max_tokens": 10, "n": 2}
    bound = completion_bound(body, _request(**body), SERVICE)
    assert bound.prompt == len("hello") + 1 + len("hi") + 1 and bound.max_tokens == 10 and bound.n == 4
    body = {"prompt": [[1, 2, 3], [4]]}
    bound = completion_bound(body, _request(**body), SERVICE)
    assert bound.prompt == 4 and bound.max_tokens == 16 and bound.n == 2
    body = {"prompt": "x" * 1000, "max_tokens": 0, "echo": True}
    bound = completion_bound(body, _request(**body), SERVICE)   # at most the context
    assert bound.prompt == SERVICE.max_model_len and bound.max_tokens == 1 and bound.n == 1


def _chunk(text: str, finish: str | None = None) -> str:
    return "data: " + json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "chat",
                                  "choices": [{"index": 0, "text": text, "logprobs": None,
                                               "finish_reason": finish}]}) + "\n\n"


async def _relay(stream_text: str, checker, call: ChatTelemetry):
    response = _CannedResponse(stream_text, break_after=False)
    gateway = ChatGateway(platform=SimpleNamespace(mongo=defaultdict(object)))
    gateway.router.acquire(INSTANCE)
    relayed = gateway._relayed(caller=CALLER, service=SERVICE, instance=INSTANCE, response=response, started=0.0,
                               wants_usage=False, checker=checker, reservation=NO_RESERVATION, call=call,
                               endpoint=COMPLETIONS)
    out = b"".join([part async for part in relayed.body_iterator]).decode()
    return [line[6:] for line in out.split("\n\n") if line.startswith("data: ")]


async def test_a_relayed_completion_stream_is_moderated_and_traced_as_text_completion():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call = ChatTelemetry(request=_request(prompt="hi", stream=True), model=SERVICE.name, messages=[],
                         capture_content=False, tracer=provider.get_tracer("t"), operation="text_completion")
    events = await _relay(_chunk("a secret ") + _chunk("plan here") + _chunk("", "stop") + "data: [DONE]\n\n",
                          BlocklistChecker(["secret plan"]), call)
    assert json.loads(events[0])["choices"][0]["text"] == "a secret "
    assert json.loads(events[1])["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1] == "[DONE]" and "plan here" not in "".join(events)
    span = exporter.get_finished_spans()[0]
    assert span.name == f"text_completion {SERVICE.name}"
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert span.attributes["gen_ai.usage.output_tokens"] == 2   # both pieces were generated (and billed)
