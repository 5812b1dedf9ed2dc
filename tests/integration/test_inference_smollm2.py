"""A real model behind the real server: SmolLM2-135M-Instruct answers, streams and takes tools."""
from __future__ import annotations

import json
import shutil

import httpx
import jsonschema
import pytest

from contracts.openai import ChatCompletion
from tests.integration.test_openai_api import DELIVERY_TOOL
from tests.integration.test_openai_smollm2 import FORCED, GUIDE_MESSAGES
from tests.integration.test_inference_server import AUTH, start_server, stop, wait_ready

pytestmark = pytest.mark.slow
NAME = "smollm2"


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory, smollm2_hf):
    root = tmp_path_factory.mktemp("smollm2-server")
    model_dir = shutil.copytree(smollm2_hf, root / "SmolLM2-135M-Instruct")
    # The HF folder as the deployer hands it over: the server exports it on first load (into it: a copy).
    proc, url = start_server(model_dir, name=NAME, max_model_len=2048, log=root / "server.log")
    try:
        wait_ready(proc, url, timeout=600)
        yield url
    finally:
        stop(proc)


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_a_chat_question_gets_a_coherent_answer(smol_server):
    r = httpx.post(f"{smol_server}/v1/chat/completions", timeout=120, headers=AUTH, json={
        "model": NAME, "messages": QUESTION, "temperature": 0, "max_tokens": 30})
    completion = ChatCompletion.model_validate(r.json())
    assert "Paris" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"       # it ended on <|im_end|>, not the limit
    assert completion.usage.completion_tokens < 30


def test_the_streamed_answer_is_the_same(smol_server):
    full = httpx.post(f"{smol_server}/v1/chat/completions", timeout=120, headers=AUTH, json={
        "model": NAME, "messages": QUESTION, "temperature": 0, "max_tokens": 30}).json()
    text = ""
    with httpx.stream("POST", f"{smol_server}/v1/chat/completions", timeout=120, headers=AUTH, json={
            "model": NAME, "messages": QUESTION, "temperature": 0, "max_tokens": 30, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    assert text == full["choices"][0]["message"]["content"] and "Paris" in text


def test_sampling_with_a_seed_stays_on_topic(smol_server):
    r = httpx.post(f"{smol_server}/v1/chat/completions", timeout=120, headers=AUTH, json={
        "model": NAME, "messages": QUESTION, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "n": 3,
        "seed": 1, "max_tokens": 40})
    answers = [c["message"]["content"] for c in r.json()["choices"]]
    assert len(answers) == 3 and sum("Paris" in a for a in answers) >= 2


def _answer(url: str, body: dict) -> tuple[list[dict], str]:
    """(tool calls, finish reason) of a call, streamed or not."""
    if not body.get("stream"):
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120, headers=AUTH, json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        return choice["message"]["tool_calls"], choice["finish_reason"]
    calls, finish = [], None
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=120, headers=AUTH, json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    calls += choice["delta"].get("tool_calls") or []
                    finish = choice["finish_reason"] or finish
    return calls, finish


@pytest.mark.parametrize("stream", [False, True], ids=["full", "streamed"])
@pytest.mark.parametrize("tool_choice, parallel", [(FORCED, None), ("required", False), ("required", None)],
                         ids=["named", "required-one-call", "required"])
def test_the_guides_delivery_date_example_returns_a_valid_call(smol_server, tool_choice, parallel, stream):
    """The guide's example (chapter 12) with the call forced: constrained decoding makes the 135M
    model's call valid (without it, it echoed the tool's schema as the arguments). Valid is not
    right: its order_id may well be empty."""
    body = {"model": NAME, "messages": GUIDE_MESSAGES, "tools": [DELIVERY_TOOL], "tool_choice": tool_choice,
            "temperature": 0, "max_tokens": 80, "stream": stream}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    calls, finish = _answer(smol_server, body)
    assert calls and calls[0]["function"]["name"] == "get_delivery_date"
    arguments = json.loads(calls[0]["function"]["arguments"])
    jsonschema.validate(arguments, DELIVERY_TOOL["function"]["parameters"])
    assert "order_id" in arguments
    if parallel is None and tool_choice == "required":
        # Several calls are allowed: this model goes on calling until max_tokens cuts one off.
        assert finish in ("tool_calls", "length")
    else:
        assert len(calls) == 1 and finish == "tool_calls"
