"""The per-instance OpenAI-compatible server as the deployer runs it: a real process, real HTTP."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from contracts.openai import ChatCompletion, ChatCompletionChunk, ErrorResponse, ModelList
from tests.unit.test_inference_engine import build_sharp_tiny

NAME = "tiny-chat"
MAX_LEN = 1024
SECRET = "test-instance-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, *, name: str, max_model_len: int | None = None, log: Path,
                 secret: str | None = SECRET):
    port = _free_port()
    cmd = [sys.executable, "-m", "services.lib.inference.server", "--model-dir", str(model_dir),
           "--port", str(port), "--served-model-name", name]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    env = {k: v for k, v in os.environ.items() if k != "MAAS_INSTANCE_SECRET"}
    if secret:
        env["MAAS_INSTANCE_SECRET"] = secret   # as the deployer passes it
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc, url: str, *, timeout: float = 300) -> list[dict]:
    """Poll /health until 200; returns the non-ready answers seen on the way."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{url}/health", timeout=5)
            if r.status_code == 200:
                return seen
            seen.append({"status_code": r.status_code, **r.json()})
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server not ready in time")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference-server")
    model_dir = build_sharp_tiny(root / "tiny")
    proc, url = start_server(model_dir, name=NAME, max_model_len=MAX_LEN, log=root / "server.log")
    try:
        seen = wait_ready(proc, url)
        yield {"url": url, "seen": seen, "proc": proc, "model_dir": model_dir}
    finally:
        stop(proc)


def chat(server, **body) -> httpx.Response:
    payload = {"model": NAME, "messages": [{"role": "user", "content": "What is the capital of France?"}], **body}
    return httpx.post(f"{server['url']}/v1/chat/completions", json=payload, timeout=60, headers=AUTH)


def sse(server, **body) -> list[dict | str]:
    payload = {"model": NAME, "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "stream": True, **body}
    events = []
    with httpx.stream("POST", f"{server['url']}/v1/chat/completions", json=payload, timeout=60, headers=AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_reports_loading_then_ready(server):
    assert all(s["status_code"] == 503 and s["status"] == "loading" for s in server["seen"])
    health = httpx.get(f"{server['url']}/health", headers=AUTH).json()
    assert health["status"] == "ready" and health["backend"] == "gqa-shared-buffer"
    assert health["providers"] == ["CPUExecutionProvider"] and health["max_model_len"] == MAX_LEN
    assert health["requests_running"] == 0 and health["requests_waiting"] == 0


def test_models_lists_the_served_name_and_no_local_path(server):
    r = httpx.get(f"{server['url']}/v1/models", headers=AUTH)
    models = ModelList.model_validate(r.json())
    assert [m.id for m in models.data] == [NAME] and models.data[0].max_model_len == MAX_LEN
    assert models.data[0].root is None and str(server["model_dir"]) not in r.text


def test_tokenize_and_detokenize_with_the_secret(server):
    r = httpx.post(f"{server['url']}/tokenize", json={"model": NAME, "prompt": "Hello world"}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] == MAX_LEN
    r = httpx.post(f"{server['url']}/detokenize", json={"tokens": body["tokens"]}, headers=AUTH)
    assert r.json() == {"prompt": "Hello world"}


def test_every_call_without_the_instance_secret_is_refused(server):
    """Keys, quotas, QPS limits and moderation live in the gateway: a direct caller must not get in."""
    body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}):
        for method, path in (("POST", "/v1/chat/completions"), ("POST", "/tokenize"), ("POST", "/detokenize"),
                             ("GET", "/v1/models"), ("GET", "/docs"),
                             ("GET", "/openapi.json"), ("GET", "/v1/nothing")):
            r = httpx.request(method, f"{server['url']}{path}", json=body if method == "POST" else None,
                              headers=headers, timeout=30)
            assert r.status_code == 401, (headers, path, r.text)
            error = r.json()["error"]
            assert error["type"] == "authentication_error" and "gateway" in error["message"]
    # The open health probe tells a stranger the status and nothing more.
    r = httpx.get(f"{server['url']}/health")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_the_server_will_not_start_open_by_accident(tmp_path):
    proc, _ = start_server(tmp_path / "missing", name="x", log=tmp_path / "log", secret=None)
    try:
        assert proc.wait(120) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "MAAS_INSTANCE_SECRET is not set" in (tmp_path / "log").read_text()


def test_non_streaming_completion_has_the_openai_shape_and_usage(server):
    r = chat(server, temperature=0, max_tokens=12, ignore_eos=True)
    assert r.status_code == 200
    body = r.json()
    completion = ChatCompletion.model_validate(body)
    assert completion.id.startswith("chatcmpl-") and completion.model == NAME
    assert body["object"] == "chat.completion" and set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "length"
    assert body["choices"][0]["logprobs"] is None and "stop_reason" in body["choices"][0]
    usage = completion.usage
    assert usage.completion_tokens == 12 and usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_default_max_tokens_is_16(server):
    r = chat(server, temperature=0, ignore_eos=True)
    assert r.json()["usage"]["completion_tokens"] == 16


def test_streaming_chunks_concatenate_to_the_completion_and_end_with_usage(server):
    full = chat(server, temperature=0, max_tokens=20, ignore_eos=True).json()
    events = sse(server, temperature=0, max_tokens=20, ignore_eos=True, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert all(e["object"] == "chat.completion.chunk" and "usage" in e for e in events[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full["choices"][0]["message"]["content"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3   # really streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    last = chunks[-1]
    # Equal but for the prompt tokens the prefix cache saved (the first call of this prompt may have filled it).
    details = "prompt_tokens_details"
    assert last.choices == [] and last.usage.model_dump(exclude={details}) == {
        k: v for k, v in full["usage"].items() if k != details}
    assert last.usage.prompt_tokens_details.cached_tokens >= full["usage"][details]["cached_tokens"]
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_sends_no_usage(server):
    events = sse(server, temperature=0, max_tokens=4)
    assert events[-1] == "[DONE]" and all("usage" not in e for e in events[:-1])


def test_streaming_n_choices(server):
    events = sse(server, n=2, temperature=1.0, seed=11, max_tokens=10, ignore_eos=True)
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    finished = [c.choices[0].index for c in chunks if c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1]
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == i) for i in (0, 1)}
    full = chat(server, n=2, temperature=1.0, seed=11, max_tokens=10, ignore_eos=True).json()
    assert [texts[0], texts[1]] == [c["message"]["content"] for c in full["choices"]]


def test_beam_search_and_stop_strings(server):
    r = chat(server, n=2, use_beam_search=True, temperature=0, best_of=3, max_tokens=8, length_penalty=0.8)
    assert r.status_code == 200 and [c["index"] for c in r.json()["choices"]] == [0, 1]
    full = chat(server, temperature=0, max_tokens=20, ignore_eos=True).json()["choices"][0]["message"]["content"]
    stop = full[8:11]
    body = chat(server, temperature=0, max_tokens=20, ignore_eos=True, stop=stop).json()
    assert body["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["stop_reason"] == stop


async def test_concurrent_streams_are_batched_and_correct(server):
    async with httpx.AsyncClient(base_url=server["url"], timeout=60, headers=AUTH) as client:
        async def one(i):
            r = await client.post("/v1/chat/completions", json={
                "model": NAME, "messages": [{"role": "user", "content": f"Count to {i}"}],
                "temperature": 0, "max_tokens": 10 + i, "ignore_eos": True})
            return r.json()["choices"][0]["message"]["content"]
        solo = [await one(i) for i in range(6)]
        together = await asyncio.gather(*(one(i) for i in range(6)))
    assert list(together) == solo


@pytest.mark.parametrize("body, status, param", [
    (dict(temperature=5), 400, "temperature"),
    (dict(top_p=0), 400, "top_p"),
    (dict(top_k=0), 400, "top_k"),
    (dict(presence_penalty=3), 400, "presence_penalty"),
    (dict(max_tokens=0), 400, "max_tokens"),
    (dict(use_beam_search=True, n=2), 400, "temperature"),        # beam search needs temperature 0
    (dict(use_beam_search=True, n=1, temperature=0), 400, "n"),
    (dict(n=3, best_of=2), 400, "best_of"),
    (dict(n=2, temperature=0), 400, "temperature"),
    (dict(length_penalty=0.5), 400, "length_penalty"),
    (dict(temperature="hot"), 400, "temperature"),
    (dict(max_tokens=MAX_LEN), 400, "max_tokens"),
    (dict(messages=[{"role": "user", "content": "word " * 1500}]), 400, "messages"),
    (dict(messages=[]), 400, "messages"),
    (dict(messages=[{"role": "robot", "content": "x"}]), 400, "messages.0.role"),
    (dict(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    (dict(logprobs=True, use_beam_search=True, n=2, temperature=0), 400, "logprobs"),
    (dict(tool_choice="required"), 400, "tool_choice"),
    (dict(model="other-model"), 404, "model"),
])
def test_errors_have_the_openai_shape_and_name_the_parameter(server, body, status, param):
    r = chat(server, **body)
    assert r.status_code == status, r.text
    error = ErrorResponse.model_validate(r.json()).error
    assert error.param == param and error.message
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    if param == "messages" and body.get("messages"):
        assert error.code == "context_length_exceeded" and str(MAX_LEN) in error.message


def test_malformed_json_and_unknown_paths(server):
    r = httpx.post(f"{server['url']}/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json", **AUTH})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{server['url']}/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_tool_requests_render_and_force_the_named_call(server):
    tools = [{"type": "function", "function": {"name": "get_delivery_date", "description": "Get a delivery date",
              "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}]
    r = chat(server, tools=tools, temperature=0, max_tokens=6,
             tool_choice={"type": "function", "function": {"name": "get_delivery_date"}})
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    # The random tiny model cannot finish the JSON: the forced call start comes back as content.
    assert message["tool_calls"] == [] and message["content"].startswith('<tool_call>\n{"name": "get_delivery_date"')
    history = [{"role": "user", "content": "Where is order 1?"},
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_delivery_date", "arguments": "{\"order_id\": \"1\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "2024-09-01"}]
    r = chat(server, messages=history, tools=tools, max_tokens=4)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 60   # tools + history in the prompt


def test_a_model_that_cannot_load_exits_with_status_1(tmp_path):
    proc, url = start_server(tmp_path / "missing", name="x", log=tmp_path / "log")
    try:
        assert proc.wait(120) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "neither model.onnx nor an HF config.json" in (tmp_path / "log").read_text()
