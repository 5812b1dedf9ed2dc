"""Issue 17: LangChain's ``ChatOpenAI`` against a deployed (tiny) service through the gateway.
``with_structured_output`` (json_schema, LangChain's default, and function calling) and ``bind_tools`` give
parsed, validated objects: the tiny model's text is noise, but its JSON is grammar-constrained."""
from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.integration.test_openai_api import HI, key, service  # noqa: F401
from tests.integration.test_serving_api import serving_tmp  # noqa: F401

pytestmark = pytest.mark.integration


class Ticket(BaseModel):
    """A support ticket's triage."""
    priority: Literal["low", "high"]
    escalate: bool
    team: Literal["billing", "shipping", "returns"]
    tags: list[Literal["urgent", "refund", "late"]] = Field(max_length=3)


class GetDeliveryDate(BaseModel):
    """Get the delivery date for a customer's order."""
    order_id: str = Field(description="The customer's order ID.", max_length=12)


@tool
def get_weather(city: Literal["Paris", "Rome"]) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def chat(running_platform, service, key) -> ChatOpenAI:
    """Per-service base URL, as the guide's call page shows it; greedy. The tiny model's small vocabulary
    spends many tokens on a call's JSON: room for it."""
    return ChatOpenAI(model=service["name"], base_url=running_platform["url"] + service["api_base"], api_key=key,
                      temperature=0, max_tokens=300, max_retries=0)


async def test_with_structured_output_json_schema_and_function_calling(chat):
    for method in ("json_schema", "function_calling"):
        structured = chat.with_structured_output(Ticket, method=method, strict=True, include_raw=True)
        result = await structured.ainvoke(HI)
        assert result["parsing_error"] is None, (method, result["raw"])
        assert isinstance(result["parsed"], Ticket), (method, result["raw"])
        Ticket.model_validate(result["parsed"].model_dump())
    # LangChain's default method (json_schema in this version) needs no argument.
    assert isinstance(await chat.with_structured_output(Ticket).ainvoke(HI), Ticket)


async def test_bind_tools_yields_a_parsed_tool_call(chat):
    messages = [("system", "You are a helpful customer support assistant. Use the supplied tools."),
                ("user", "Hi, can you tell me the delivery date for my order?")]
    for choice in ("GetDeliveryDate", "any"):   # a named function, and LangChain's "any" (OpenAI's "required")
        answer = await chat.bind_tools([GetDeliveryDate, get_weather], tool_choice=choice,
                                       strict=True).ainvoke(messages)
        assert isinstance(answer, AIMessage) and answer.invalid_tool_calls == []
        assert len(answer.tool_calls) >= 1, answer
        call = answer.tool_calls[0]
        assert call["id"] and call["name"] in ("GetDeliveryDate", "get_weather")
        if call["name"] == "GetDeliveryDate":
            GetDeliveryDate.model_validate(call["args"])
        else:
            assert call["args"]["city"] in ("Paris", "Rome")
            assert get_weather.invoke(call["args"]) == "sunny"
        if choice == "GetDeliveryDate":
            assert call["name"] == "GetDeliveryDate"

    # Streamed: the chunks add up to the same parsed call.
    chunks = [c async for c in chat.bind_tools([GetDeliveryDate], tool_choice="GetDeliveryDate",
                                               strict=True).astream(messages)]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert [c["name"] for c in merged.tool_calls] == ["GetDeliveryDate"]
    GetDeliveryDate.model_validate(merged.tool_calls[0]["args"])
