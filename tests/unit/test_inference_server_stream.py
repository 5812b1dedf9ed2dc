"""How the server turns a choice's streamed text into OpenAI deltas when tools are enabled."""
import json

import pytest

from services.inference.sequence import ChoiceDelta
from services.inference.server import ChatHandler
from services.inference.tool_calls import ToolCallParser

TEXT = ('Let me look that up.\n<tool_call>\n{"name": "get_delivery_date", "arguments": {"order_id": "1"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n')


def _run(text: str, size: int, *, tools: bool = True) -> list[dict]:
    parser = ToolCallParser() if tools else None
    held = {0: ""}
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    out = []
    for k, piece in enumerate(pieces):
        last = k == len(pieces) - 1
        delta = ChoiceDelta(index=0, text=piece, finished=last, finish_reason="stop" if last else None)
        out += ChatHandler._pieces(delta, parser, held)
    return out


@pytest.mark.parametrize("size", [1, 4, 9, 1000])
def test_tool_calls_stream_as_openai_deltas(size):
    deltas = _run(TEXT, size)
    content = "".join(d.get("content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert content == "Let me look that up."       # as parse_tool_calls gives it unstreamed
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"]["name"] for c in calls] == ["get_delivery_date", "get_weather"]
    assert json.loads(calls[1]["function"]["arguments"]) == {"city": "Paris"}
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    # the newlines around and between the calls never go out as content of their own
    assert all(d.get("content", "x").strip() for d in deltas)


def test_whitespace_is_kept_when_no_call_follows():
    for size in (1, 3, 100):
        deltas = _run("Hello\n\n world  \n", size)
        assert "".join(d["content"] for d in deltas) == "Hello\n\n world  \n"


def test_a_malformed_call_streams_as_content():
    text = '<tool_call>\n{"name": "f", "arguments": {oops}\n</tool_call>'
    assert "".join(d.get("content", "") for d in _run(text, 5)) == text


def test_without_tools_text_passes_through():
    assert _run("<tool_call>{}</tool_call>", 4, tools=False) == [
        {"content": "<too"}, {"content": "l_ca"}, {"content": "ll>{"}, {"content": "}</t"},
        {"content": "ool_"}, {"content": "call"}, {"content": ">"}]
