"""/v1/completions on an instance (issue 17 item 4): prompts as text or token ids, echo, the legacy logprobs
shape with the prompt's tokens, max_tokens 0 (loglikelihood scoring), stop, n, streaming with usage, and
the refused suffix. The instance server runs in this process with the tiny model."""
import json
from pathlib import Path

import pytest

from services.lib.inference.completions import LegacyLogprobs, parse_prompts
from services.lib.inference.logprobs import TokenLogprob, TokenText
from services.lib.inference.params import InvalidParameter, SamplingParams
from tests.unit.test_inference_engine import build_sharp_tiny
from tests.unit.test_inference_grammar import instance_server
from tests.unit.test_inference_prompt_logprobs import reference

TEXT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_sharp_tiny(tmp_path_factory.mktemp("completions") / "tiny")


@pytest.fixture(scope="module")
def client(model_dir):
    with instance_server(model_dir, max_model_len=256) as c:
        yield c


def _body(**kw) -> dict:
    return {"model": "tiny", "prompt": TEXT, "max_tokens": 6, "temperature": 0, "ignore_eos": True, **kw}


def _stream(client, body) -> list[dict]:
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# -- prompt parsing and the legacy shape ------------------------------------------------------------

def test_prompts_as_text_token_ids_and_lists_of_either(client):
    tok = client.engine.tokenizer
    ids = tok(TEXT)["input_ids"]
    assert [p.ids for p in parse_prompts(TEXT, tok)] == [ids]
    assert [(p.text, p.ids) for p in parse_prompts(["a b", TEXT], tok)] == [("a b", tok("a b")["input_ids"]),
                                                                          (TEXT, ids)]
    assert [(p.text, p.ids) for p in parse_prompts(ids, tok)] == [(tok.decode(ids), ids)]
    assert [p.ids for p in parse_prompts([ids, ids[:2]], tok)] == [ids, ids[:2]]
    for bad in ([], "", [[]], [len(tok) + 5]):
        with pytest.raises(InvalidParameter) as err:
            parse_prompts(bad, tok)
        assert err.value.param == "prompt"


def test_legacy_logprobs_offsets_continue_across_pieces(client):
    tok = client.engine.tokenizer
    ids = tok("Hello world again")["input_ids"]
    legacy = LegacyLogprobs(TokenText(tok), 1)
    first = legacy.piece([None, TokenLogprob(ids[1], -1.5, ((7, -0.5),))], ids[:2])
    assert first["token_logprobs"] == [None, -1.5] and first["top_logprobs"][0] is None
    assert set(first["top_logprobs"][1].values()) == {-0.5, -1.5}   # the best and the chosen token
    assert first["text_offset"] == [0, len(first["tokens"][0])]
    second = legacy.piece([TokenLogprob(ids[2], -2.0, ())])
    assert second["text_offset"] == [len("".join(first["tokens"]))]


# -- the instance's endpoint ------------------------------------------------------------------------

def test_echo_with_logprobs_scores_prompt_and_answer_like_a_forward_pass(client, model_dir):
    ids = client.engine.tokenizer(TEXT)["input_ids"]
    r = client.post("/v1/completions", json=_body(echo=True, logprobs=2))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert choice["text"].startswith(TEXT) and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 6 and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    # Scoring the prompt computes all of it: nothing from the prefix cache.
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 6, "total_tokens": len(ids) + 6,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    # The greedy answer's ids (its text need not encode back to them).
    answer = client.engine.generate(ids, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    all_ids = ids + answer.choices[0].token_ids
    token_text = TokenText(client.engine.tokenizer)
    assert lp["tokens"] == [token_text(t)[0] for t in all_ids]
    logp = reference(model_dir, all_ids)
    expected = [float(logp[p - 1, all_ids[p]]) for p in range(1, len(all_ids))]
    assert lp["token_logprobs"][1:] == pytest.approx(expected, abs=1e-3)
    assert all(len(top) in (2, 3) for top in lp["top_logprobs"][1:])
    # Offsets into the token texts (a token holding part of a character shows U+FFFD, as OpenAI's do).
    assert lp["text_offset"] == [len("".join(lp["tokens"][:i])) for i in range(len(lp["tokens"]))]


def test_max_tokens_zero_with_echo_scores_the_prompt_only(client):
    ids = client.engine.tokenizer(TEXT)["input_ids"]
    full = client.post("/v1/completions", json=_body(echo=True, logprobs=1)).json()["choices"][0]["logprobs"]
    r = client.post("/v1/completions", json=_body(prompt=ids, echo=True, logprobs=1, max_tokens=0))
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["text"] == client.engine.tokenizer.decode(ids) and choice["finish_reason"] == "length"
    assert choice["logprobs"]["token_logprobs"] == pytest.approx(full["token_logprobs"][:len(ids)], abs=1e-6)
    assert body["usage"]["completion_tokens"] == 0
    r = client.post("/v1/completions", json=_body(max_tokens=0))
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_answer_logprobs_equal_the_chat_paths_for_the_same_tokens(client):
    """Completions without echo on the chat template's prompt: the same greedy tokens, the same numbers."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = client.post("/tokenize", json={"messages": messages}).json()["tokens"]
    chat = client.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 6,
                                                     "temperature": 0, "ignore_eos": True, "logprobs": True})
    content = chat.json()["choices"][0]["logprobs"]["content"]
    completion = client.post("/v1/completions", json=_body(prompt=ids, logprobs=0)).json()["choices"][0]
    assert completion["logprobs"]["token_logprobs"] == pytest.approx([c["logprob"] for c in content], abs=1e-6)
    assert completion["logprobs"]["tokens"] == [c["token"] for c in content]


def test_several_prompts_and_n_number_their_choices(client):
    r = client.post("/v1/completions", json=_body(prompt=["Hello", TEXT], n=2, temperature=0.8, seed=3))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["completion_tokens"] == 24


def test_stop_ends_with_finish_reason_stop(client):
    text = client.post("/v1/completions", json=_body()).json()["choices"][0]["text"]
    stop = text.strip()[:2] or text[:1]
    choice = client.post("/v1/completions", json=_body(stop=[stop])).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and stop not in choice["text"]


def test_stream_echo_logprobs_and_usage_match_the_plain_answer(client):
    plain = client.post("/v1/completions", json=_body(echo=True, logprobs=1)).json()
    chunks = _stream(client, _body(echo=True, logprobs=1, stream_options={"include_usage": True}))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    parts = [c["choices"][0] for c in chunks[:-1]]
    assert "".join(p["text"] for p in parts) == plain["choices"][0]["text"]
    assert parts[-1]["finish_reason"] == "length"
    merged = {k: sum((p["logprobs"][k] for p in parts), []) for k in ("tokens", "token_logprobs", "text_offset")}
    expected = plain["choices"][0]["logprobs"]
    assert merged["tokens"] == expected["tokens"] and merged["text_offset"] == expected["text_offset"]
    assert merged["token_logprobs"] == pytest.approx(expected["token_logprobs"], abs=1e-6)


@pytest.mark.parametrize("extra, param", [({"suffix": "x"}, "suffix"), ({"logprobs": 6}, "logprobs"),
                                          ({"prompt": []}, "prompt"), ({"prompt": [[1], []]}, "prompt"),
                                          ({"max_tokens": 10 ** 6}, "max_tokens"), ({"top_p": 0}, "top_p")])
def test_bad_fields_are_400s_naming_them(client, extra, param):
    r = client.post("/v1/completions", json=_body(**extra))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_the_loglikelihood_request_lm_evaluation_harness_sends(client, model_dir):
    """lm-evaluation-harness's ``local-completions`` scores (context, continuation) pairs with this exact
    payload (token-id prompts, max_tokens 1, echo, logprobs 1) and reads ``token_logprobs[ctxlen:-1]`` and
    whether each is the best of ``top_logprobs`` (lm_eval 0.4.9's LocalCompletionsAPI.parse_logprobs)."""
    tok = client.engine.tokenizer
    pairs = [("The capital of France is", " Paris"), ("One plus one is", " two")]
    contexts = [tok(c)["input_ids"] for c, _ in pairs]
    wholes = [tok(c + x)["input_ids"] for c, x in pairs]
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": wholes, "temperature": 0, "max_tokens": 1,
                                             "logprobs": 1, "seed": 1234, "echo": True})
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    for choice, ctx, whole in zip(choices, contexts, wholes):
        numbers = choice["logprobs"]["token_logprobs"][len(ctx):-1]
        tops = choice["logprobs"]["top_logprobs"][len(ctx):-1]
        logp = reference(model_dir, whole)
        assert sum(numbers) == pytest.approx(sum(float(logp[p - 1, whole[p]]) for p in range(len(ctx), len(whole))),
                                             abs=1e-3)
        greedy = all(whole[p] == int(logp[p - 1].argmax()) for p in range(len(ctx), len(whole)))
        assert all(n == max(top.values()) for n, top in zip(numbers, tops)) == greedy
