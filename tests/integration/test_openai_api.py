"""The official ``openai`` Python client against a deployed (tiny) service, through the gateway."""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from services.lib.common.telemetry import tracer_provider

from tests.integration.conftest import signed_in_tenant, wait_for
from tests.integration.test_serving_api import (api_key, deploy, serving_tmp, tiny_model,  # noqa: F401
                                                tiny_model_folder, tiny_service)

pytestmark = pytest.mark.integration

HI = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "hello"}]
DELIVERY_TOOL = {
    "type": "function",
    "function": {
        "name": "get_delivery_date",
        "description": "Get the delivery date for a customer's order. Call this whenever you need to know the "
                       "delivery date, for example when a customer asks 'Where is my package'",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string",
                                                                      "description": "The customer's order ID."}},
                       "required": ["order_id"], "additionalProperties": False},
    },
}


@pytest.fixture(scope="module")
async def service(api, serving_tmp) -> dict:
    return await tiny_service(api, serving_tmp)


@pytest.fixture(scope="module")
async def key(api) -> str:
    return await api_key(api)


@pytest.fixture(scope="module")
async def client(running_platform, service, key):
    """Per-service base URL, as the guide's call page shows it."""
    async with openai.AsyncOpenAI(api_key=key, base_url=running_platform["url"] + service["api_base"],
                                  max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
async def unified(running_platform, key):
    async with openai.AsyncOpenAI(api_key=key, base_url=running_platform["url"] + "/v1", max_retries=0) as c:
        yield c


async def _key_usage(api, key: str) -> dict:
    keys = (await api.get("/api/v1/api-keys")).json()["items"]
    return next(k["usage"] for k in keys if k["masked_key"] == key[:7] + "..." + key[-4:])


async def _flushed() -> None:
    await asyncio.sleep(1.5)   # the gateway writes usage once a second


# ---------------------------------------------------------------------------------------------- success

async def test_chat_through_both_base_urls(client, unified, service):
    for c in (client, unified):
        response = await c.chat.completions.create(model=service["name"], messages=HI, max_tokens=8)
        assert response.object == "chat.completion" and response.model == service["name"]
        choice = response.choices[0]
        assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
        assert choice.finish_reason in ("stop", "length")
        usage = response.usage
        assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streaming_with_and_without_usage(client, service):
    stream = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=6, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    stream = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=6, stream=True)
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


async def test_a_chat_trace_carries_the_genai_attributes_with_the_calls_token_counts(running_platform, client,
                                                                                    service, monkeypatch):
    exporter = InMemorySpanExporter()
    tracer_provider(running_platform["platform"].settings, extra_processors=[SimpleSpanProcessor(exporter)])

    async def genai_span(response_id: str):
        async def found():
            return [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.response.id") == response_id]
        (span,) = await wait_for(found, timeout=10)
        return span

    answer = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=5,
                                                  temperature=0.5, top_p=0.8)
    span = await genai_span(answer.id)
    assert span.name == f"chat {service['name']}" and span.kind.name == "CLIENT"
    attrs = span.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openmaas"
    assert attrs["gen_ai.request.model"] == service["name"] and attrs["gen_ai.response.model"] == answer.model
    assert (attrs["gen_ai.request.temperature"], attrs["gen_ai.request.top_p"],
            attrs["gen_ai.request.max_tokens"]) == (0.5, 0.8, 5)
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert list(attrs["gen_ai.response.finish_reasons"]) == [answer.choices[0].finish_reason]
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    # It is a child of the HTTP server span of the same call.
    server = [s for s in exporter.get_finished_spans() if s.context.span_id == span.parent.span_id]
    assert server and server[0].kind.name == "SERVER"

    # A stream, with the operator's setting on: time to first token and the messages too.
    gateway = running_platform["app"].state.components["gateway"]
    monkeypatch.setattr(gateway.settings, "telemetry_capture_content", True)
    stream = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=4, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    span = await genai_span(chunks[0].id)
    assert span.attributes["gen_ai.usage.input_tokens"] == chunks[-1].usage.prompt_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens == 4
    assert span.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert json.loads(span.attributes["gen_ai.input.messages"])[1]["parts"][0]["content"] == "hello"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(span.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == text


async def test_n_greater_than_one(client, service):
    response = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=5, n=3,
                                                    temperature=1.0, extra_body={"top_k": 50})
    assert sorted(c.index for c in response.choices) == [0, 1, 2]
    assert 3 <= response.usage.completion_tokens <= 15
    stream = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=4, n=2,
                                                  temperature=1.0, stream=True, extra_body={"top_k": 50})
    indexes = {c.choices[0].index async for c in stream if c.choices}
    assert indexes == {0, 1}


async def test_stop_strings_end_the_answer_before_them(client, service):
    full = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    assert len(text) >= 2, text
    middle = len(text) // 2
    stop = next((c for c in text[middle:] if not c.isspace()), text[middle])
    cut = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=24, temperature=0,
                                               stop=[stop, "never-appears"])
    answer = cut.choices[0].message.content
    assert answer == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


async def test_tools_and_tool_results_are_accepted_also_streaming(client, service):
    messages = [
        {"role": "system", "content": "You are a helpful customer support assistant. Use the supplied tools."},
        {"role": "user", "content": "Hi, can you tell me the delivery date for my order? It is 1."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_delivery_date", "arguments": "{\"order_id\": \"1\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "2024-09-01 18:30"},
    ]
    response = await client.chat.completions.create(model=service["name"], messages=messages, tools=[DELIVERY_TOOL],
                                                    max_tokens=8)
    assert response.choices[0].finish_reason in ("stop", "length", "tool_calls")
    stream = await client.chat.completions.create(model=service["name"], messages=messages[:2], tools=[DELIVERY_TOOL],
                                                  tool_choice="auto", max_tokens=8, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


class Ticket(BaseModel):
    priority: Literal["low", "high"]
    escalate: bool
    team: Literal["billing", "shipping", "returns"]


SHIRT = {"type": "object", "properties": {"in_stock": {"type": "boolean"}, "size": {"enum": ["S", "M", "L"]}},
         "required": ["in_stock", "size"], "additionalProperties": False}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "strict": True, "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
    "additionalProperties": False}}}


async def test_structured_outputs_and_constrained_tool_calls(client, service):
    """Issue 17: response_format is enforced while generating (the tiny model's text is noise, its JSON
    is not), with the SDK's parse(); refusals name the field, from the instance or the gateway."""
    name = service["name"]
    parsed = await client.chat.completions.parse(model=name, messages=HI, response_format=Ticket, max_tokens=60,
                                                 temperature=0)
    assert parsed.choices[0].finish_reason == "stop"
    assert isinstance(parsed.choices[0].message.parsed, Ticket)

    stream = await client.chat.completions.create(
        model=name, messages=HI, max_tokens=60, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "shirt", "schema": SHIRT, "strict": True}})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), SHIRT)

    for stream in (False, True):
        kwargs = dict(model=name, messages=HI, tools=[WEATHER_TOOL], max_tokens=60, temperature=0,
                      tool_choice={"type": "function", "function": {"name": "get_weather"}})
        if stream:
            chunks = [c async for c in await client.chat.completions.create(**kwargs, stream=True)]
            calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        else:
            calls = (await client.chat.completions.create(**kwargs)).choices[0].message.tool_calls
        assert [c.function.name for c in calls] == ["get_weather"]
        jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_TOOL["function"]["parameters"])

    unenforceable = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array",
                                                                                     "uniqueItems": True}}}
    error = await _expect(client.chat.completions.create(model=name, messages=HI, response_format=unenforceable),
                          openai.BadRequestError, 400, "unsupported_schema")   # from the instance, passed on
    assert error.body["param"] == "response_format" and "'uniqueItems'" in error.body["message"]
    error = await _expect(client.chat.completions.create(model=name, messages=HI, logit_bias={"42": 5}),
                          openai.BadRequestError, 400)                         # refused by the gateway
    assert error.body["param"] == "logit_bias" and "not supported" in error.body["message"]


async def test_models_lists_running_services(unified, client, service):
    names = [m.id async for m in unified.models.list()]
    assert service["name"] in names
    models = [m async for m in client.models.list()]
    assert [m.id for m in models] == [service["name"]]
    assert models[0].model_extra["max_model_len"] > 0   # as vLLM lists it


def _answer_ids(tokenizer, content) -> list[int]:
    """The generated token ids, from each logprob entry's exact bytes (byte-level BPE vocabulary)."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    chars = bytes_to_unicode()
    return tokenizer.convert_tokens_to_ids(["".join(chars[b] for b in entry.bytes) for entry in content])


async def test_logprobs_sum_to_the_loglikelihood_streamed_and_not(client, unified, service, serving_tmp):
    """Issue 17 item 3, in OpenAI's shape through the gateway; the numbers against an independent forward
    pass (transformers, over prompt + answer) of the same tiny model the service was deployed from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from contracts.openai import ChatMessage
    from services.lib.inference.chat import encode, render_prompt

    kwargs = dict(model=service["name"], messages=HI, max_tokens=10, temperature=0, logprobs=True,
                  top_logprobs=4, extra_body={"ignore_eos": True})
    response = await client.chat.completions.create(**kwargs)
    choice = response.choices[0]
    content = choice.logprobs.content
    assert len(content) == response.usage.completion_tokens == 10
    for entry in content:
        values = [t.logprob for t in entry.top_logprobs]
        assert len(values) == 4 and values == sorted(values, reverse=True)
        assert (entry.token, entry.logprob) in [(t.token, t.logprob) for t in entry.top_logprobs]

    folder = tiny_model_folder(serving_tmp)   # the files the service's model was made from
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = encode(tokenizer, render_prompt(tokenizer, [ChatMessage.model_validate(m) for m in HI]).text)
    assert len(prompt) == response.usage.prompt_tokens
    answer = _answer_ids(tokenizer, content)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0].double(), -1)
    expected = float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(answer)))
    assert sum(e.logprob for e in content) == pytest.approx(expected, abs=1e-3)

    chunks = [c async for c in await unified.chat.completions.create(**kwargs, stream=True)]
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in content]
    error = await _expect(client.chat.completions.create(model=service["name"], messages=HI, logprobs=True,
                                                         top_logprobs=21), openai.BadRequestError, 400)
    assert error.body["param"] == "top_logprobs"


async def test_the_small_fields_apps_send(client, unified, service):
    """Issue 17 item 6: max_completion_tokens, seed, and fields OpenAI servers accept and ignore."""
    name = service["name"]
    response = await client.chat.completions.create(model=name, messages=HI, max_completion_tokens=5,
                                                    extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 5 and response.choices[0].finish_reason == "length"
    error = await _expect(client.chat.completions.create(model=name, messages=HI, max_tokens=4,
                                                         max_completion_tokens=5), openai.BadRequestError, 400)
    assert error.body["param"] == "max_completion_tokens"

    async def sample(seed: int, c) -> str:
        answer = await c.chat.completions.create(model=name, messages=HI, max_tokens=12, temperature=1.0, seed=seed,
                                                 extra_body={"ignore_eos": True})
        return answer.choices[0].message.content

    first = await sample(11, client)
    assert await sample(11, unified) == first
    assert len({await sample(s, client) for s in range(4)}) > 1

    response = await unified.chat.completions.create(model=name, messages=HI, max_tokens=3, user="end-user-1",
                                                     service_tier="auto", metadata={"app": "tests"}, store=False)
    assert response.choices[0].message.content is not None


async def test_usage_is_visible_per_key_and_per_service(api, client, service, key):
    await _flushed()
    before = await _key_usage(api, key)
    response = await client.chat.completions.create(model=service["name"], messages=HI, max_tokens=3)
    await _flushed()
    after = await _key_usage(api, key)
    assert after["requests"] == before["requests"] + 1
    assert after["total_tokens"] == before["total_tokens"] + response.usage.total_tokens
    by_service = (await api.get("/api/v1/usage", params={"group_by": "service"})).json()["items"]
    assert any(r["service_id"] == service["id"] and r["total_tokens"] >= response.usage.total_tokens
               for r in by_service)
    # A prompt sent again comes from the instance's prefix cache: the answer and the monitoring say so.
    long = [{"role": "system", "content": "You are a helpful assistant. " * 8}, {"role": "user", "content": "hello"}]
    await client.chat.completions.create(model=service["name"], messages=long, max_tokens=2)
    again = await client.chat.completions.create(model=service["name"], messages=long, max_tokens=2)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < again.usage.prompt_tokens
    await _flushed()
    metrics = (await api.get(f"/api/v1/services/{service['id']}/metrics")).json()
    assert metrics["totals"]["requests"] > 0 and metrics["totals"]["completion_tokens"] > 0
    assert metrics["totals"]["avg_latency_ms"] > 0 and metrics["instances"]
    assert metrics["totals"]["cached_prompt_tokens"] >= cached and 0 < metrics["totals"]["prefix_cache_hit_rate"] < 1


# ---------------------------------------------------------------------------------------------- errors

async def _expect(call, error_type, status: int, code: str | None = None):
    with pytest.raises(error_type) as caught:
        await call
    assert caught.value.status_code == status
    body = caught.value.body
    assert {"message", "type", "param", "code"} <= set(body), body
    if code:
        assert body["code"] == code, body
    return caught.value


async def test_rejected_calls_get_openai_errors_and_meter_nothing(api, running_platform, client, unified, service, key):
    url = running_platform["url"]
    await _flushed()
    before = await _key_usage(api, key)
    name = service["name"]
    await _expect(unified.chat.completions.create(model="no-such-model", messages=HI), openai.NotFoundError, 404,
                  "model_not_found")
    async with openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1/infers/nope/v1", max_retries=0) as ghost:
        await _expect(ghost.chat.completions.create(model=name, messages=HI), openai.NotFoundError, 404,
                      "service_not_found")
    await _expect(client.chat.completions.create(model=name, messages=[]), openai.BadRequestError, 400)
    error = await _expect(client.chat.completions.create(model=name, messages=HI, temperature=5),
                          openai.BadRequestError, 400)
    assert error.body["param"] == "temperature"
    await _expect(client.chat.completions.create(model=name, messages=HI, max_tokens=service["max_model_len"] + 1),
                  openai.BadRequestError, 400, "context_length_exceeded")
    long_prompt = [{"role": "user", "content": "hello world " * service["max_model_len"]}]
    error = await _expect(client.chat.completions.create(model=name, messages=long_prompt, max_tokens=4),
                          openai.BadRequestError, 400)
    assert "length" in error.body["message"] or "tokens" in error.body["message"]
    await _expect(client.chat.completions.create(model=name, messages=[{"role": "user", "content":
                  "Tell me how to make a bomb"}]), openai.BadRequestError, 400, "content_filter")
    await _flushed()
    assert await _key_usage(api, key) == before
    metrics = (await api.get(f"/api/v1/services/{service['id']}/metrics")).json()
    assert metrics["totals"]["rejected"] >= 2


async def test_missing_or_wrong_keys_are_401(running_platform, service):
    base = running_platform["url"] + service["api_base"]
    async with httpx.AsyncClient() as raw:
        r = await raw.post(base + "/chat/completions", json={"model": service["name"], "messages": HI})
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        r = await raw.get(running_platform["url"] + "/v1/models")
        assert r.status_code == 401
    async with openai.AsyncOpenAI(api_key="sk-wrong-key-1234567890", base_url=base, max_retries=0) as wrong:
        await _expect(wrong.chat.completions.create(model=service["name"], messages=HI), openai.AuthenticationError,
                      401, "invalid_api_key")


async def test_errors_before_any_route_have_the_openai_shape_too(running_platform, client, unified, service, key):
    """The body size limit (413), an unknown path (404) and a wrong method (405) answer before a /v1 route
    runs: their bodies are OpenAI's as well, so the SDK raises its typed error with the message."""
    oversize = [{"role": "user", "content": "x" * (running_platform["platform"].settings.max_body_bytes + 1)}]
    for c in (client, unified):
        error = await _expect(c.chat.completions.create(model=service["name"], messages=oversize),
                              openai.APIStatusError, 413, "payload_too_large")
        assert "request body exceeds" in error.message and error.body["param"] == "body"
    url = running_platform["url"]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as raw:
        unknown = await raw.post(f"{url}/v1/edits", json={"model": service["name"], "input": "hi"})
        wrong_method = await raw.get(f"{url}/v1/chat/completions")
    for r, status, code in ((unknown, 404, "not_found"), (wrong_method, 405, "method_not_allowed")):
        assert r.status_code == status and r.json()["error"]["code"] == code, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert wrong_method.headers["allow"] == "POST"


async def test_another_tenants_service_does_not_exist_for_its_key_and_a_deleted_key_gets_401(api, running_platform,
                                                                                              service):
    r = await api.post("/api/v1/users", json={"username": "bob-serving", "password": "bob-password-1"})
    assert r.status_code == 201, r.text
    token = (await api.post("/api/v1/auth/login", json={"username": "bob-serving",
                                                        "password": "bob-password-1"})).json()["token"]
    async with httpx.AsyncClient(base_url=running_platform["url"], headers={"Authorization": f"Bearer {token}"}) as bob:
        created = (await bob.post("/api/v1/api-keys", json={"description": "bob"})).json()
        async with openai.AsyncOpenAI(api_key=created["key"], base_url=running_platform["url"] + service["api_base"],
                                      max_retries=0) as c:   # by id: 404 too, as for an id that names nothing
            await _expect(c.chat.completions.create(model=service["name"], messages=HI), openai.NotFoundError,
                          404, "service_not_found")
            await _expect(c.models.list(), openai.NotFoundError, 404, "service_not_found")
        async with openai.AsyncOpenAI(api_key=created["key"], base_url=running_platform["url"] + "/v1",
                                      max_retries=0) as c:   # by name, another tenant's service does not exist
            await _expect(c.chat.completions.create(model=service["name"], messages=HI), openai.NotFoundError, 404)
            assert (await bob.delete(f"/api/v1/api-keys/{created['id']}")).status_code == 204
            await _expect(c.models.list(), openai.AuthenticationError, 401)


async def test_at_most_five_keys_and_the_secret_is_shown_once(api):
    r = await api.post("/api/v1/users", json={"username": "carol-keys", "password": "carol-password-1"})
    token = (await api.post("/api/v1/auth/login", json={"username": "carol-keys",
                                                        "password": "carol-password-1"})).json()["token"]
    async with httpx.AsyncClient(base_url=str(api.base_url), headers={"Authorization": f"Bearer {token}"}) as carol:
        made = await asyncio.gather(*(carol.post("/api/v1/api-keys", json={"description": f"k{i}"}) for i in range(6)))
        assert sorted(r.status_code for r in made) == [201] * 5 + [409]
        refused = next(r for r in made if r.status_code == 409)
        assert refused.json()["error"]["code"] == "api_key_limit"
        listed = (await carol.get("/api/v1/api-keys")).json()
        assert len(listed["items"]) == 5 and listed["max_keys"] == 5
        assert all("key" not in k and k["masked_key"].count("...") == 1 for k in listed["items"])
        r = await carol.post("/api/v1/api-keys", json={"description": "x" * 257})
        assert r.status_code == 400 and r.json()["error"]["field"] == "description"
        assert (await carol.delete(f"/api/v1/api-keys/{listed['items'][0]['id']}")).status_code == 204
        assert (await carol.post("/api/v1/api-keys", json={})).status_code == 201
        assert (await carol.delete("/api/v1/api-keys/nope")).status_code == 404


async def test_a_stopped_service_is_409(api, running_platform, serving_tmp, key):
    model = await tiny_model(api, serving_tmp)
    service = await deploy(api, name="tiny-stopped", model_id=model["id"], wait=False)
    assert (await api.post(f"/api/v1/services/{service['id']}/stop")).status_code == 200
    await wait_for(lambda: _status_is(api, service["id"], "stopped"), timeout=120)
    async with openai.AsyncOpenAI(api_key=key, base_url=running_platform["url"] + "/v1", max_retries=0) as c:
        await _expect(c.chat.completions.create(model="tiny-stopped", messages=HI), openai.ConflictError, 409,
                      "service_not_running")
    await api.delete(f"/api/v1/services/{service['id']}")


async def _status_is(api, service_id: str, status: str) -> bool:
    return (await api.get(f"/api/v1/services/{service_id}")).json()["status"] == status


async def test_over_the_qps_limit_is_429_with_retry_after(api, running_platform, service, key):
    assert (await api.put(f"/api/v1/services/{service['id']}/qps", json={"qps_limit": 1})).status_code == 200
    await asyncio.sleep(1)   # the gateway's view of the service refreshes every 0.5 s
    try:
        async with httpx.AsyncClient(base_url=running_platform["url"] + service["api_base"], timeout=60,
                                     headers={"Authorization": f"Bearer {key}"}) as c:
            body = {"model": service["name"], "messages": HI, "max_tokens": 1}
            answers = await asyncio.gather(*(c.post("/chat/completions", json=body) for _ in range(8)))
        limited = [r for r in answers if r.status_code == 429]
        assert limited and any(r.status_code == 200 for r in answers)
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert limited[0].json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        await api.put(f"/api/v1/services/{service['id']}/qps", json={"qps_limit": 50})
        await asyncio.sleep(1)   # let the gateway see the old limit again before the next test


# ---------------------------------------------------------------------------------------------- presets

async def _preset(api) -> dict:
    async def ready():
        items = (await api.get("/api/v1/preset-services")).json()["items"]
        # listed at once while its weights import; usable once its service exists
        return next((p for p in items if p["name"] == "smollm2-135m-instruct" and p["available"]), None)
    return await wait_for(ready, timeout=300)


async def test_preset_quota_must_be_claimed_once_and_runs_out(api, running_platform):
    # A user of its own: other tests (console, CLI) claim the admin's quota in the same session.
    r = await api.post("/api/v1/users", json={"username": "dave-quota", "password": "dave-password-1"})
    assert r.status_code == 201, r.text
    token = (await api.post("/api/v1/auth/login", json={"username": "dave-quota",
                                                        "password": "dave-password-1"})).json()["token"]
    async with httpx.AsyncClient(base_url=str(api.base_url), headers={"Authorization": f"Bearer {token}"}) as dave:
        key = (await dave.post("/api/v1/api-keys", json={"description": "quota"})).json()["key"]
        preset = await _preset(dave)
        assert preset["quota"]["claimed"] is False and preset["quota"]["granted"] == 1_000_000
        platform = running_platform["platform"]
        desired = (await platform.mongo["model_services"].find_one({"_id": preset["id"]}))["desired"]
        async with openai.AsyncOpenAI(api_key=key, base_url=running_platform["url"] + "/v1", max_retries=0) as c:
            await _expect(c.chat.completions.create(model=preset["name"], messages=HI), openai.PermissionDeniedError,
                          403, "quota_not_claimed")
            r = await dave.post(f"/api/v1/preset-services/{preset['id']}/claim")
            assert r.status_code == 201 and r.json()["remaining"] == 1_000_000
            again = await dave.post(f"/api/v1/preset-services/{preset['id']}/claim")
            assert again.status_code == 409 and again.json()["error"]["code"] == "quota_already_claimed"
            # Use the quota up (as a million tokens of calls would) and call again.
            me = (await dave.get("/api/v1/auth/me")).json()
            await platform.mongo["free_quotas"].update_one({"_id": f"{me['user_id']}:{preset['id']}"},
                                                           {"$set": {"used": 1_000_000}})
            await _expect(c.chat.completions.create(model=preset["name"], messages=HI), openai.RateLimitError, 429,
                          "insufficient_quota")
            listed = next(p for p in (await dave.get("/api/v1/preset-services")).json()["items"]
                          if p["id"] == preset["id"])
            assert listed["quota"]["remaining"] == 0
            # Neither refusal woke the preset service up.
            assert (await platform.mongo["model_services"].find_one({"_id": preset["id"]}))["desired"] == desired


@pytest.mark.slow
async def test_accounts_never_share_the_prefix_cache_of_a_preset_service(api, running_platform):
    """The attack: a preset service's one instance serves every account. Were its prefix cache shared,
    an account could tell from ``cached_tokens`` (or from the time to the first token) what another
    account's prompts begin with, by sending guesses."""
    secret = [{"role": "system", "content": "Our launch code is 4417-alpha, never tell it. " * 4},
              {"role": "user", "content": "hello"}]
    cached = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in ("cache-alice", "cache-bob"):
            user = await stack.enter_async_context(signed_in_tenant(api, str(api.base_url), name=name))
            preset = await _preset(user)
            assert (await user.post(f"/api/v1/preset-services/{preset['id']}/claim")).status_code == 201
            key = (await user.post("/api/v1/api-keys", json={"description": "cache"})).json()["key"]
            client = await stack.enter_async_context(
                openai.AsyncOpenAI(api_key=key, base_url=running_platform["url"] + "/v1", max_retries=0))
            answer = await client.chat.completions.create(model=preset["name"], messages=secret, max_tokens=1)
            cached[name] = answer.usage.prompt_tokens_details.cached_tokens
            if name == "cache-alice":   # her own second call does reuse her first one's keys and values
                again = await client.chat.completions.create(model=preset["name"], messages=secret, max_tokens=1)
                assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert cached == {"cache-alice": 0, "cache-bob": 0}


# ---------------------------------------------------------------------------------------------- playground

async def test_playground_chat_with_the_guides_parameters(api, service):
    params = (await api.get("/api/v1/playground/parameters")).json()
    assert params["top_k"] == {"min": 1, "max": 1000, "default": 20}
    r = await api.post("/api/v1/playground/chat", json={"service_id": service["id"], "max_tokens": 4,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant" and r.json()["usage"]["completion_tokens"] == 4
    for field, value in (("temperature", 2.5), ("top_p", 0.05), ("top_k", 0), ("top_k", 1001)):
        r = await api.post("/api/v1/playground/chat", json={"service_id": service["id"], field: value,
                                                            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["error"]["field"] == field, (field, r.text)
    async with api.stream("POST", "/api/v1/playground/chat", json={
            "service_id": service["id"], "stream": True, "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and '"usage"' in lines[-2]
    # No max_tokens: the playground answers at an interactive length, not /v1's 16 tokens.
    r = await api.post("/api/v1/playground/chat", json={"service_id": service["id"],
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    choice, usage = r.json()["choices"][0], r.json()["usage"]
    assert usage["completion_tokens"] <= min(512, service["max_model_len"] // 2)
    assert usage["completion_tokens"] > 16 or choice["finish_reason"] == "stop"
    r = await api.post("/api/v1/playground/chat", json={"service_id": "nope",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "service_not_found"
