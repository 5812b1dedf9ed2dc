"""How the server turns a choice's streamed text into OpenAI deltas when tools are enabled."""
import asyncio
import contextlib
import json

import pytest

from services.lib.inference.sequence import ChoiceDelta
from services.lib.inference.server import ChatHandler
from services.lib.inference.tool_calls import ToolCallParser

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


# -- a streamed response ends its engine request, however the response ends ----------------------

@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory):
    from services.lib.inference.server import ModelState
    from tests.unit.test_inference_engine import build_sharp_tiny

    state = ModelState(model_dir=build_sharp_tiny(tmp_path_factory.mktemp("stream") / "tiny"),
                       served_model_name="tiny", max_model_len=128, max_num_seqs=4, threads=1)
    state.load()
    yield state
    state.engine.close()


def _streamed_request(state):
    from contracts.openai import ChatCompletionRequest
    from services.lib.inference.server import _EventStream

    req = ChatCompletionRequest.model_validate({
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
        "max_tokens": 100, "ignore_eos": True})
    handler = ChatHandler(state, req)
    handler.open()   # as the route does: the prefill starts before the response does
    return handler, _EventStream(handler)


async def _idle(engine):
    for _ in range(500):
        if engine.requests() == {"running": 0, "waiting": 0}:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_client_gone_before_the_first_chunk_cancels_the_engine_request(tiny_state):
    handler, response = _streamed_request(tiny_state)

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        raise OSError("the client went away")

    with contextlib.suppress(Exception):
        await response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
    assert handler.updates.cancelled
    assert await _idle(tiny_state.engine)


async def test_a_stream_read_to_the_end_sends_every_token(tiny_state):
    handler, response = _streamed_request(tiny_state)
    sent = []
    done = asyncio.Event()

    async def receive():
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
    events = b"".join(m.get("body", b"") for m in sent[1:]).decode().split("\n\n")
    chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert sent[0]["status"] == 200 and events[-2] == "data: [DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert await _idle(tiny_state.engine)
