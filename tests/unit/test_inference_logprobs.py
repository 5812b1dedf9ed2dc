"""logprobs/top_logprobs (issue 17 item 3) and the small OpenAI fields apps use (item 6: max_completion_tokens,
seed, /tokenize, /detokenize) on the engine and the instance server, with a tiny random model."""
import json
from pathlib import Path

import numpy as np
import pytest

from services.lib.inference.engine import Engine
from services.lib.inference.logprobs import TokenText, token_logprob
from services.lib.inference.params import InvalidParameter, SamplingParams
from tests.unit.test_inference_engine import build_sharp_tiny
from tests.unit.test_inference_grammar import instance_server

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_sharp_tiny(tmp_path_factory.mktemp("logprobs") / "tiny")


@pytest.fixture(scope="module")
def engine(model_dir):
    eng = Engine(model_dir, max_model_len=256, max_num_seqs=4, threads=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompt(engine):
    return engine.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)


def sequence_loglikelihood(model_dir: Path, prompt: list[int], answer: list[int]) -> float:
    """log P(answer | prompt) by one transformers forward pass: independent of the engine's decode loop."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(answer)))


# -- the numbers ------------------------------------------------------------------------------------

def test_greedy_logprobs_sum_to_the_sequence_loglikelihood(engine, model_dir, prompt):
    out = engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=True,
                                                 top_logprobs=5))
    choice = out.choices[0]
    assert [e.token for e in choice.logprobs] == choice.token_ids and len(choice.token_ids) == 12
    total = sum(e.logprob for e in choice.logprobs)
    assert total == pytest.approx(sequence_loglikelihood(model_dir, prompt, choice.token_ids), abs=1e-3)
    for entry in choice.logprobs:
        values = [lp for _, lp in entry.top]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert entry.top[0] == (entry.token, entry.logprob)   # greedy: the chosen token is the best one


def test_logprobs_are_of_the_raw_distribution_whatever_the_temperature(engine, model_dir, prompt):
    """As vLLM by default: temperature, top-k and penalties shape the draw, not the reported numbers."""
    params = SamplingParams(max_tokens=8, temperature=1.7, top_k=20, repetition_penalty=1.3, seed=4,
                            ignore_eos=True, logprobs=True)
    choice = engine.generate(prompt, params).choices[0]
    total = sum(e.logprob for e in choice.logprobs)
    assert total == pytest.approx(sequence_loglikelihood(model_dir, prompt, choice.token_ids), abs=1e-3)
    assert all(e.top == () for e in choice.logprobs)


def test_streamed_logprobs_are_the_same_and_each_goes_out_once(engine, prompt):
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True, logprobs=True, top_logprobs=2)
    whole = engine.generate(prompt, params).choices[0].logprobs
    streamed = [e for u in engine.stream(prompt, params) for d in u.choices for e in d.logprobs or []]
    assert streamed == whole


def test_best_of_and_n_each_choice_has_its_own(engine, prompt):
    out = engine.generate(prompt, SamplingParams(n=2, best_of=3, temperature=1.0, seed=1, max_tokens=6,
                                                 ignore_eos=True, logprobs=True))
    for choice in out.choices:
        assert [e.token for e in choice.logprobs] == choice.token_ids


def test_token_logprob_floors_impossible_tokens():
    row = np.array([0.0, -np.inf, 1.0], dtype=np.float32)
    entry = token_logprob(row, 1, 3)
    assert entry.logprob == -9999.0 and [t for t, _ in entry.top] == [2, 0, 1]


@pytest.mark.parametrize("kwargs, param", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "use_beam_search": True, "n": 2, "temperature": 0}, "logprobs"),
])
def test_logprobs_ranges_name_the_field(kwargs, param):
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param


def test_token_bytes_rebuild_the_text_also_inside_a_character(engine):
    text = "Paris 是法国的首都 ✓"
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    texts = TokenText(engine.tokenizer)
    assert b"".join(bytes(texts(i)[1]) for i in ids) == text.encode()
    special = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert texts(special) == ("<|im_end|>", list(b"<|im_end|>"))


# -- the instance server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(model_dir):
    with instance_server(model_dir, max_model_len=512) as c:
        yield c


def _body(**kw) -> dict:
    return {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, **kw}


def _stream(client, body) -> list[dict]:
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def test_server_logprobs_in_openais_shape_streamed_and_not(client):
    body = _body(temperature=0, logprobs=True, top_logprobs=3, ignore_eos=True)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["logprobs"]["refusal"] is None
    content = choice["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"] == 8
    text = b"".join(bytes(e["bytes"]) for e in content).decode(errors="replace")
    assert text == choice["message"]["content"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(entry["bytes"]).decode(errors="replace") == entry["token"]
        top = entry["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0] == {k: entry[k] for k in ("token", "logprob", "bytes")}
    chunks = _stream(client, body)
    streamed = [e for c in chunks for ch in c["choices"] for e in (ch["logprobs"] or {}).get("content") or []]
    assert streamed == content
    plain = client.post("/v1/chat/completions", json=_body()).json()["choices"][0]
    assert plain["logprobs"] is None


@pytest.mark.parametrize("extra, param, words", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "[0, 20]"),
    ({"top_logprobs": 2}, "top_logprobs", "requires logprobs"),
    ({"logprobs": True, "top_logprobs": "many"}, "top_logprobs", "integer"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens", "differ"),
])
def test_server_range_errors_name_the_field(client, extra, param, words):
    r = client.post("/v1/chat/completions", json=_body(**extra))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_max_completion_tokens_is_max_tokens(client):
    for lengths in ({"max_completion_tokens": 5}, {"max_completion_tokens": 5, "max_tokens": 5}):
        body = {"model": "tiny", "messages": MESSAGES, "ignore_eos": True, **lengths}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 5 and r.json()["choices"][0]["finish_reason"] == "length"


def test_the_same_seed_gives_the_same_sample_across_calls(client):
    def sample(seed):
        body = _body(max_tokens=16, temperature=1.0, seed=seed, ignore_eos=True)
        return client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]

    first = sample(7)
    np.random.seed(123)   # the process-wide generator plays no part
    assert sample(7) == first
    assert len({sample(s) for s in range(4)}) > 1


def test_tokenize_and_detokenize_as_vllm_offers(client):
    engine = client.engine
    r = client.post("/tokenize", json={"model": "tiny", "prompt": "Hello world"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {"count": len(body["tokens"]), "max_model_len": 512,
                    "tokens": engine.tokenizer("Hello world")["input_ids"]}
    assert client.post("/detokenize", json={"tokens": body["tokens"]}).json() == {"prompt": "Hello world"}

    chat = client.post("/tokenize", json={"messages": MESSAGES}).json()
    usage = client.post("/v1/chat/completions", json=_body(max_tokens=1)).json()["usage"]
    assert chat["count"] == usage["prompt_tokens"] == len(chat["tokens"])

    for body, status, param in [({}, 400, "prompt"), ({"prompt": "a", "messages": MESSAGES}, 400, "messages"),
                                ({"prompt": "a", "model": "other"}, 404, "model")]:
        r = client.post("/tokenize", json=body)
        assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    r = client.post("/detokenize", json={"tokens": [1, 10 ** 9]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"


def test_fields_openai_servers_accept_and_ignore(client):
    r = client.post("/v1/chat/completions", json=_body(service_tier="default", metadata={"app": "x"}, store=True,
                                                       user="someone"))
    assert r.status_code == 200, r.text


def _streamed_logprobs(chunks: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            out.setdefault(choice["index"], []).extend((choice["logprobs"] or {}).get("content") or [])
    return out


def test_every_streamed_token_has_its_logprob_also_with_tool_calls_and_n(client):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}}}
    body = _body(max_tokens=40, temperature=0, logprobs=True, tools=[tool],
                 tool_choice={"type": "function", "function": {"name": "lookup"}},
                 stream_options={"include_usage": True})
    chunks = _stream(client, body)
    calls = [t for c in chunks for ch in c["choices"] for t in ch["delta"].get("tool_calls") or []]
    assert [c["function"]["name"] for c in calls] == ["lookup"]
    assert len(_streamed_logprobs(chunks)[0]) == chunks[-1]["usage"]["completion_tokens"]

    chunks = _stream(client, _body(n=2, temperature=1.0, seed=3, max_tokens=6, ignore_eos=True, logprobs=True,
                                   top_logprobs=1, stream_options={"include_usage": True}))
    by_choice = _streamed_logprobs(chunks)
    assert sorted(by_choice) == [0, 1] and [len(v) for v in by_choice.values()] == [6, 6]
    assert all(len(e["top_logprobs"]) == 1 for v in by_choice.values() for e in v)
