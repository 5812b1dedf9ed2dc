"""response_format: grammar-constrained decoding on a tiny random model.

The model's text is noise, so whatever JSON comes out is the grammar's doing: the same prompts give
text that does not parse without one.
"""
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from contracts.openai import REFUSED_FIELDS, ChatCompletionRequest

from services.lib.inference.engine import Engine
from services.lib.inference.grammar import JsonGrammar, check_schema
from services.lib.inference.params import InvalidParameter, SamplingParams
from tests.unit.test_inference_engine import build_sharp_tiny

PROMPT = [{"role": "user", "content": 'Reply in JSON, e.g. {"a": "b", "c": 1}'}]

SCHEMAS = {
    "flat": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"}}, "required": ["name", "age", "member"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "order": {"type": "object", "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
            "total": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000}},
            "required": ["id", "total"]},
        "status": {"enum": ["pending", "shipped", "delivered"]}}, "required": ["order", "status"]},
    "array": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]},
                 "minItems": 1, "maxItems": 4},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "maxItems": 3}},
        "required": ["tags", "scores"]},
    "refs_and_unions": {"$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "maximum": 99, "minimum": -99}, "y": {"type": "integer", "maximum": 99, "minimum": -99}},
        "required": ["x", "y"]}},
        "type": "object", "properties": {
            "start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"},
            "label": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
            "kind": {"const": "segment"}},
        "required": ["start", "end", "label", "kind"]},
    "top_level_array": {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}],
                        "items": False},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_sharp_tiny(tmp_path_factory.mktemp("grammar") / "tiny")


@pytest.fixture(scope="module")
def engine(model_dir):
    eng = Engine(model_dir, max_model_len=512, max_num_seqs=8, threads=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompt(engine):
    return engine.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


# -- schemas constrained decoding cannot enforce are refused by name --------------------------------

@pytest.mark.parametrize("schema, named", [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems' at the root"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "'not' at /properties/a"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "'oneOf' at the root (use anyOf)"),
    ({"type": "string", "format": "credit-card"}, "format 'credit-card'"),
    ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "'pattern' with 'minLength'/'maxLength'"),
    ({"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n", "minimum": 3}}},
     "'minimum' beside '$ref' at /properties/a"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}, "names 'b'"),
    ({"$ref": "https://example.com/schema.json"}, "only local references"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "'dependentRequired'"),
])
def test_unenforceable_schema_features_are_refused_by_name(schema, named):
    with pytest.raises(InvalidParameter) as err:
        check_schema(schema)
    assert err.value.param == "response_format" and named in err.value.message


def test_supported_schemas_pass_the_check():
    for schema in SCHEMAS.values():
        check_schema(schema)
    check_schema({"title": "Anything", "description": "annotations are fine", "examples": [1]})


def test_a_schema_the_compiler_rejects_is_a_response_format_error(engine):
    with pytest.raises(InvalidParameter) as err:
        engine.compile_grammar(SamplingParams(grammar=JsonGrammar.from_schema({"$ref": "#/$defs/missing"})))
    assert err.value.param == "response_format" and "cannot be used" in err.value.message


def test_stop_strings_and_beam_search_are_refused_with_a_grammar():
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(grammar=JsonGrammar(None), stop=["}"])
    assert err.value.param == "stop"
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(grammar=JsonGrammar(None), use_beam_search=True, n=2, temperature=0)
    assert err.value.param == "use_beam_search"


# -- the engine's output follows the grammar ---------------------------------------------------------

def test_without_a_grammar_the_tiny_model_writes_no_json(engine, prompt):
    for seed in range(3):
        text = engine.generate(prompt, SamplingParams(max_tokens=60, temperature=1.0, seed=seed)).text
        assert not _parses(text), text


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_output_validates(engine, prompt, name, temperature):
    params = SamplingParams(max_tokens=200, temperature=temperature, seed=7,
                            grammar=JsonGrammar.from_schema(SCHEMAS[name]))
    choice = engine.generate(prompt, params).choices[0]
    assert choice.finish_reason == "stop", choice.text
    jsonschema.validate(json.loads(choice.text), SCHEMAS[name])


def test_json_object_output_is_an_object_whenever_it_ends(engine, prompt):
    # Free-form strings on a random model rarely close; a repetition "bonus" (penalty < 1) on the
    # prompt's tokens, quotes among them, lets most samples finish within the budget.
    params = SamplingParams(max_tokens=150, temperature=1.0, repetition_penalty=0.2, n=8, seed=3,
                            grammar=JsonGrammar(None))
    choices = engine.generate(prompt, params).choices
    ended = [c for c in choices if c.finish_reason == "stop"]
    assert ended, [c.text for c in choices]
    for choice in ended:
        assert isinstance(json.loads(choice.text), dict), choice.text
    assert all(c.finish_reason in ("stop", "length") for c in choices)


def test_a_value_cut_by_max_tokens_ends_with_length(engine, prompt):
    params = SamplingParams(max_tokens=4, temperature=0, grammar=JsonGrammar.from_schema(SCHEMAS["nested"]))
    choice = engine.generate(prompt, params).choices[0]
    assert choice.finish_reason == "length" and choice.completion_tokens == 4
    assert '{"order": {"id": "'.startswith(choice.text) and not _parses(choice.text)   # the schema's own start


def test_batched_sequences_each_follow_their_own_grammar(engine, prompt):
    """Requests decoded in the same steps, with different schemas (and one with none), n > 1."""
    jobs = {name: SamplingParams(max_tokens=200, temperature=1.0, n=2, seed=i,
                                 grammar=JsonGrammar.from_schema(SCHEMAS[name]))
            for i, name in enumerate(["flat", "array", "refs_and_unions"])}
    jobs["free"] = SamplingParams(max_tokens=40, temperature=1.0, seed=1)
    results = {}

    def run(name):
        results[name] = engine.generate(prompt, jobs[name])

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for name in ("flat", "array", "refs_and_unions"):
        for choice in results[name].choices:
            assert choice.finish_reason == "stop"
            jsonschema.validate(json.loads(choice.text), SCHEMAS[name])
    assert not _parses(results["free"].text)


def test_the_mask_keeps_exactly_the_allowed_logits(engine):
    """Both ways of masking: few tokens allowed (JSON structure), most allowed (inside a string).
    The time per mask is printed for the record (pytest -s); it is not asserted."""
    import numpy as np

    matcher = engine.grammars.matcher(engine.grammars.compile(JsonGrammar.from_schema(SCHEMAS["flat"])))
    logits = np.random.default_rng(0).normal(size=engine.vocab_size).astype(np.float32)
    for opening in ("", '{"name": "'):
        for token in engine.tokenizer.encode(opening, add_special_tokens=False):
            assert matcher.accept(token)
        allowed = matcher.allowed()
        start = time.perf_counter()
        for _ in range(100):
            masked = matcher.mask(logits)
        per_call = (time.perf_counter() - start) / 100
        assert np.array_equal(np.isfinite(masked), allowed)
        assert np.array_equal(masked[allowed], logits[allowed]) and np.isneginf(masked[~allowed]).all()
        print(f"mask after {opening!r}: {allowed.sum()} of {len(allowed)} allowed, {per_call * 1e6:.1f} us")


# -- the instance server: response_format in, JSON out; refusals are OpenAI 400s ---------------------

@contextmanager
def instance_server(model_dir: Path, *, max_model_len: int):
    """The instance server in this process (TestClient), once its model answers /health."""
    from services.lib.inference.server import create_app

    app = create_app(model_dir=model_dir, served_model_name="tiny", max_model_len=max_model_len, max_num_seqs=4,
                     threads=1, secret=None)
    with TestClient(app) as c:
        deadline = time.monotonic() + 120
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "model not loaded"
            time.sleep(0.05)
        c.engine = app.state.model.engine
        yield c


@pytest.fixture(scope="module")
def client(model_dir):
    with instance_server(model_dir, max_model_len=512) as c:
        yield c


def _body(**kw) -> dict:
    return {"model": "tiny", "messages": PROMPT, "max_tokens": 200, **kw}


def _schema_format(name: str) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}


def test_server_answers_json_that_validates(client):
    r = client.post("/v1/chat/completions", json=_body(response_format=_schema_format("nested"), seed=1))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMAS["nested"])


def test_a_pydantic_model_sent_as_the_openai_sdk_sends_it_comes_back_parsed(client):
    """``client.chat.completions.parse(response_format=Order)``: the SDK's strict schema of a model
    (nested model via $defs, enums, bounds, an optional field) is enforced, and the answer parses."""
    from typing import Literal

    from openai.lib._parsing._completions import type_to_response_format_param
    from pydantic import BaseModel, Field

    class Item(BaseModel):
        sku: Literal["A1", "B2"]
        qty: int = Field(ge=1, le=9)

    class Order(BaseModel):
        status: Literal["pending", "shipped", "delivered"]
        urgent: bool
        items: list[Item] = Field(max_length=3)
        note: str | None = Field(description="a note", max_length=10)

    for seed in range(3):
        r = client.post("/v1/chat/completions", json=_body(response_format=type_to_response_format_param(Order),
                                                           temperature=1.0, seed=seed))
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop"
        Order.model_validate_json(choice["message"]["content"])


def test_server_streams_json_that_validates(client):
    body = _body(response_format=_schema_format("array"), stream=True, temperature=1.0, seed=2)
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(e) for e in events]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(text), SCHEMAS["array"])


def test_server_text_format_is_free_text(client):
    r = client.post("/v1/chat/completions", json=_body(response_format={"type": "text"}, max_tokens=30,
                                                       temperature=1.0, seed=0))
    assert r.status_code == 200 and not _parses(r.json()["choices"][0]["message"]["content"])


@pytest.mark.parametrize("extra, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "uniqueItems": True}}}}, "response_format", "'uniqueItems'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "$ref": "#/$defs/nope"}}}}, "response_format", "cannot be used"),
    ({"response_format": {"type": "xml"}}, "response_format", "does not match"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.json_schema", "required"),
    ({"response_format": {"type": "json_object"}, "stop": ["}"]}, "stop", "stop string"),
    ({"response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "response_format", "tools"),
    ({"logit_bias": {"42": 5}}, "logit_bias", "not supported"),
    ({"functions": [{"name": "f"}]}, "functions", "use tools"),
    ({"min_p": 0.1}, "min_p", "not supported"),
    ({"guided_json": {"type": "object"}}, "guided_json", "use response_format"),
    ({"add_generation_prompt": False}, "add_generation_prompt", "not supported"),
])
def test_server_refuses_what_it_cannot_honour_naming_the_field(client, extra, param, words):
    r = client.post("/v1/chat/completions", json=_body(**extra))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


@pytest.mark.parametrize("field", sorted(REFUSED_FIELDS))
def test_every_known_field_that_would_change_the_answer_is_refused_by_name(field):
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate({"model": "m", "messages": PROMPT, field: "on"})
    assert err.value.errors()[0]["loc"] == (field,)


def test_fields_that_change_nothing_are_accepted(client):
    r = client.post("/v1/chat/completions", json=_body(
        max_tokens=3, logit_bias={}, top_logprobs=0, parallel_tool_calls=False, modalities=["text"],
        metadata={"k": "v"}, store=False, service_tier="auto", user="u1", skip_special_tokens=True,
        min_p=0.0, echo=False))
    assert r.status_code == 200, r.text
