"""The official ``openai`` client against the SmolLM2 preset service (real weights; slow).

The preset starts lazily: the first call wakes it (a cold start), later calls are answered at once.
"""
from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.integration.conftest import wait_for
from tests.integration.test_openai_api import DELIVERY_TOOL, _expect
from tests.integration.test_serving_api import api_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRESET = "smollm2-135m-instruct"
GUIDE_MESSAGES = [
    {"role": "system", "content": "You are a helpful customer support assistant. Use the supplied tools to assist "
                                  "the user."},
    {"role": "user", "content": "Hi, can you tell me the delivery date for my order?"},
    {"role": "assistant", "content": "Hi there! I can help with that. Can you please provide your order ID?"},
    {"role": "user", "content": "i think it is 1"},
]
FORCED = {"type": "function", "function": {"name": "get_delivery_date"}}


@pytest.fixture(scope="module")
async def preset(api) -> dict:
    async def listed():
        items = (await api.get("/api/v1/preset-services")).json()["items"]
        return next((p for p in items if p["name"] == PRESET and p["available"]), None)   # imported
    found = await wait_for(listed, timeout=600)
    if not found["quota"]["claimed"]:
        assert (await api.post(f"/api/v1/preset-services/{found['id']}/claim")).status_code == 201
    return found


@pytest.fixture(scope="module")
async def client(running_platform, preset, api):
    async with openai.AsyncOpenAI(api_key=await api_key(api), base_url=running_platform["url"] + "/v1",
                                  max_retries=0, timeout=900) as c:
        yield c


async def _remaining(api, preset_id: str) -> int:
    items = (await api.get("/api/v1/preset-services")).json()["items"]
    return next(p for p in items if p["id"] == preset_id)["quota"]["remaining"]


async def test_first_call_starts_the_preset_and_tokens_come_off_the_free_quota(api, client, preset):
    before = await _remaining(api, preset["id"])
    response = await client.chat.completions.create(
        model=PRESET, messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=10, temperature=0)
    assert "paris" in response.choices[0].message.content.lower()
    await asyncio.sleep(1.5)   # usage is written once a second
    assert await _remaining(api, preset["id"]) == before - response.usage.total_tokens
    listed = next(p for p in (await api.get("/api/v1/preset-services")).json()["items"] if p["id"] == preset["id"])
    assert listed["status"] == "running"


async def test_streaming_with_usage_n_and_stop(client):
    count = [{"role": "user", "content": "Count from 1 to 10."}]
    stream = await client.chat.completions.create(model=PRESET, messages=count, max_tokens=40, temperature=0,
                                                  stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens > 0 and "3" in text

    cut = await client.chat.completions.create(model=PRESET, messages=count, max_tokens=40, temperature=0, stop=["4"])
    answer = cut.choices[0].message.content
    assert "3" in answer and "4" not in answer and cut.choices[0].finish_reason == "stop"
    assert text.startswith(answer)

    several = await client.chat.completions.create(
        model=PRESET, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8, n=3, temperature=1.0,
        extra_body={"top_k": 50})
    assert sorted(c.index for c in several.choices) == [0, 1, 2]


def _assembled(chunks) -> dict:
    """The message a stream adds up to (content, tool calls, finish reason)."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"content": content, "tool_calls": [calls[i] for i in sorted(calls)], "finish_reason": finish}


def _without_ids(message) -> dict:
    data = message.model_dump()
    for call in data.get("tool_calls") or []:
        call.pop("id")
    return data


async def test_the_guides_delivery_date_example_with_tools_as_the_engine_answers_it(client, running_platform,
                                                                                   preset):
    """The gateway passes tools, tool_choice and tool results through and relays the answer unchanged.

    With the call forced, constrained decoding makes it a valid get_delivery_date call (before, this
    model echoed the tool's schema into the arguments); with "auto" it answers in words.
    """
    platform = running_platform["platform"]
    instance = await platform.mongo["service_instances"].find_one({"service_id": preset["id"], "status": "ready"})
    # Straight to the instance, with the secret only the gateway is meant to hold.
    async with openai.AsyncOpenAI(api_key=instance["secret"], base_url=instance["url"] + "/v1", max_retries=0,
                                  timeout=600) as direct:
        for tool_choice in (FORCED, "auto"):
            kwargs = dict(model=PRESET, messages=GUIDE_MESSAGES, tools=[DELIVERY_TOOL], tool_choice=tool_choice,
                          max_tokens=48, temperature=0)
            via_gateway = (await client.chat.completions.create(**kwargs)).choices[0]
            if tool_choice is FORCED:
                assert [c.function.name for c in via_gateway.message.tool_calls] == ["get_delivery_date"]
                assert "order_id" in json.loads(via_gateway.message.tool_calls[0].function.arguments)
            reference = (await direct.chat.completions.create(**kwargs)).choices[0]
            assert _without_ids(via_gateway.message) == _without_ids(reference.message)   # ids are per call
            assert via_gateway.finish_reason == reference.finish_reason
            streamed = _assembled([c async for c in await client.chat.completions.create(**kwargs, stream=True)])
            expected = _assembled([c async for c in await direct.chat.completions.create(**kwargs, stream=True)])
            assert streamed == expected
        assert via_gateway.message.content or via_gateway.message.tool_calls

    # A tool result in the history is accepted and answered in words.
    messages = GUIDE_MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_delivery_date", "arguments": "{\"order_id\": \"1\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "2024-09-01 18:30"},
    ]
    answer = await client.chat.completions.create(model=PRESET, messages=messages, tools=[DELIVERY_TOOL],
                                                  max_tokens=40, temperature=0)
    assert answer.choices[0].message.content


async def test_too_long_input_is_400(client):
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    error = await _expect(client.chat.completions.create(model=PRESET, messages=long_prompt, max_tokens=8),
                          openai.BadRequestError, 400)
    assert error.body["code"] in ("context_length_exceeded", "invalid_parameter")
