"""Tool calls under a grammar: a forced or opened call always names a tool and its arguments follow
the tool's schema (a tiny random model, whose free text never contains a well-formed call)."""
import json

import jsonschema
import pytest

from contracts.openai import Tool
from services.lib.inference.grammar import ToolGrammar
from tests.unit.test_inference_engine import build_sharp_tiny
from tests.unit.test_inference_grammar import instance_server

# Bounded arguments (an enum, a pattern), so that the random model's calls end within the budget.
DELIVERY = {"type": "function", "function": {
    "name": "get_delivery_date", "description": "Get the delivery date for a customer's order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{1,4}$"}},
                   "required": ["order_id"], "additionalProperties": False}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"]}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (DELIVERY, WEATHER)}
MESSAGES = [{"role": "user", "content": "Where is my order? i think it is 1"}]
NAMED = {"type": "function", "function": {"name": "get_delivery_date"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with instance_server(build_sharp_tiny(tmp_path_factory.mktemp("tools") / "tiny"), max_model_len=1024) as c:
        yield c


def _chat(client, **kw):
    body = {"model": "tiny", "messages": MESSAGES, "tools": [DELIVERY, WEATHER], "max_tokens": 120, **kw}
    return client.post("/v1/chat/completions", json=body)


def _check_calls(calls: list[dict], names: set[str]) -> None:
    assert calls
    for call in calls:
        assert call["function"]["name"] in names
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


@pytest.mark.parametrize("temperature, seed", [(0.0, 0), (1.0, 1), (1.0, 2)])
def test_a_named_tool_choice_returns_a_valid_call_of_that_function(client, temperature, seed):
    r = _chat(client, tool_choice=NAMED, temperature=temperature, seed=seed)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert len(choice["message"]["tool_calls"]) == 1
    _check_calls(choice["message"]["tool_calls"], {"get_delivery_date"})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_required_tool_choice_returns_valid_calls_of_the_given_tools(client, seed):
    r = _chat(client, tool_choice="required", temperature=1.0, seed=seed, max_tokens=200)
    choice = r.json()["choices"][0]
    # One call or several: the random model may go on calling until max_tokens cuts the last one
    # (which then stays content, as any unfinished call does).
    assert choice["finish_reason"] in ("tool_calls", "length"), choice
    _check_calls(choice["message"]["tool_calls"], {"get_delivery_date", "get_weather"})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parallel_tool_calls_false_gives_exactly_one_call(client, seed):
    r = _chat(client, tool_choice="required", parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=200)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert len(choice["message"]["tool_calls"]) == 1 and choice["message"]["content"] is None
    _check_calls(choice["message"]["tool_calls"], {"get_delivery_date", "get_weather"})


def test_parallel_tool_calls_false_cannot_be_kept_by_beam_search(client):
    r = _chat(client, tool_choice="required", parallel_tool_calls=False, use_beam_search=True, n=2, temperature=0)
    assert r.status_code == 400 and r.json()["error"]["param"] == "parallel_tool_calls"


def test_a_named_call_streams_as_a_valid_tool_call(client):
    body = {"model": "tiny", "messages": MESSAGES, "tools": [DELIVERY, WEATHER], "max_tokens": 120,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "temperature": 1.0,
            "seed": 4, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    calls = [c for chunk in chunks for ch in chunk["choices"] for c in ch["delta"].get("tool_calls") or []]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    _check_calls(calls, {"get_weather"})


def test_without_a_grammar_the_forced_call_does_not_parse(client):
    """What the grammar changes: beam search (left unconstrained) continues the forced start with noise."""
    r = _chat(client, tool_choice=NAMED, use_beam_search=True, n=2, temperature=0, max_tokens=40)
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        assert choice["message"]["tool_calls"] == []
        assert choice["message"]["content"].startswith('<tool_call>\n{"name": "get_delivery_date"')


def test_auto_leaves_text_free_until_a_call_opens_then_constrains_it(client):
    engine = client.engine
    spec = ToolGrammar.for_request([Tool.model_validate(t) for t in (DELIVERY, WEATHER)], "auto", "")
    matcher = engine.grammars.matcher(engine.grammars.compile(spec))
    tokenizer = engine.tokenizer
    free = matcher.allowed()
    assert free.sum() > 0.9 * len(tokenizer)           # before a call: (nearly) anything, the end too
    assert all(free[t] for t in engine.eos_ids)
    for token in tokenizer.encode('Sure. <tool_call>\n{"name": "get_w', add_special_tokens=False):
        assert matcher.accept(token)
    mask = matcher.allowed()
    allowed = [tokenizer.decode([t]) for t in range(len(tokenizer)) if mask[t]]
    rest = 'eather", "arguments": {"city": "'
    assert allowed and all(rest.startswith(text) for text in allowed), allowed
    assert not any(mask[t] for t in engine.eos_ids)    # an opened call must be finished


def test_a_strict_tool_with_an_unenforceable_schema_is_refused(client):
    tool = {"type": "function", "function": {"name": "tag", "strict": True, "parameters": {
        "type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}}}
    r = _chat(client, tools=[tool], tool_choice="required")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "tools[0].function.parameters" and "'uniqueItems'" in error["message"]


def test_without_strict_an_unenforceable_schema_still_gives_a_json_object(client):
    tool = {"type": "function", "function": {"name": "pick", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7}}}}}
    r = _chat(client, tools=[tool], tool_choice={"type": "function", "function": {"name": "pick"}},
              temperature=1.0, repetition_penalty=0.2, seed=3, max_tokens=200)
    choice = r.json()["choices"][0]
    if choice["finish_reason"] == "tool_calls":   # any object is allowed: it may not end in the budget
        assert isinstance(json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]), dict)
    else:
        assert choice["finish_reason"] == "length"

