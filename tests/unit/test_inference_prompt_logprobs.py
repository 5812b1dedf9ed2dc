"""Prompt logprobs (issue 17 item 4, /v1/completions echo): each prompt token's log-probability under the
raw model, from the engine's full-sequence logits and from its token-by-token fallback, against an
independent transformers forward pass on the tiny model."""
from pathlib import Path

import pytest

from services.lib.inference.engine import Engine
from services.lib.inference.params import InvalidParameter, SamplingParams
from services.lib.mlkit.onnx_export import ensure_onnx
from tests.unit.test_inference_engine import build_sharp_tiny

TEXT = "The quick brown fox jumps over the lazy dog, and then it"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_sharp_tiny(tmp_path_factory.mktemp("prompt-logprobs") / "tiny")


@pytest.fixture(scope="module", params=["gqa", "concat", "stepped"])
def engine(request, model_dir):
    folder = ensure_onnx(model_dir, kind="optimum") if request.param == "concat" else model_dir
    eng = Engine(folder, max_model_len=128, max_num_seqs=4, threads=1)
    if request.param == "stepped":
        # As for a graph whose LM head is pruned to the last position: the decode-path fallback.
        eng.backend.all_logits = False
    yield eng
    eng.close()


def reference(model_dir: Path, ids: list[int]):
    """log_softmax of one transformers forward pass: row p scores token p + 1."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, dim=-1)


def test_prompt_logprobs_match_a_transformers_forward_pass(engine, model_dir):
    ids = engine.tokenizer(TEXT)["input_ids"]
    scored = engine.prompt_logprobs(ids, top=3)
    logp = reference(model_dir, ids)
    assert len(scored) == len(ids) and scored[0] is None
    for pos in range(1, len(ids)):
        entry = scored[pos]
        assert entry.token == ids[pos]
        assert entry.logprob == pytest.approx(float(logp[pos - 1, ids[pos]]), abs=1e-3)
        best = logp[pos - 1].topk(3)
        assert [t for t, _ in entry.top] == best.indices.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(best.values.tolist(), abs=1e-3)


def test_prompt_logprobs_with_generation_continue_the_same_sequence(engine, model_dir):
    ids = engine.tokenizer(TEXT)["input_ids"]
    out = engine.generate(ids, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True, logprobs=True,
                                              prompt_logprobs=0))
    choice = out.choices[0]
    logp = reference(model_dir, ids + choice.token_ids)
    assert [e.logprob for e in out.prompt_logprobs[1:]] == pytest.approx(
        [float(logp[p - 1, ids[p]]) for p in range(1, len(ids))], abs=1e-3)
    assert [e.logprob for e in choice.logprobs] == pytest.approx(
        [float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(choice.token_ids)], abs=1e-3)
    # The same greedy answer as without scoring the prompt.
    plain = engine.generate(ids, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    assert plain.choices[0].token_ids == choice.token_ids


def test_max_tokens_zero_only_scores_the_prompt(engine):
    ids = engine.tokenizer(TEXT)["input_ids"]
    out = engine.generate(ids, SamplingParams(max_tokens=0, prompt_logprobs=0, logprobs=True))
    assert out.completion_tokens == 0 and out.choices[0].text == "" and out.choices[0].finish_reason == "length"
    assert len(out.prompt_logprobs) == len(ids)
    assert engine.requests() == {"running": 0, "waiting": 0}


def test_max_tokens_zero_needs_prompt_logprobs():
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(max_tokens=0)
    assert err.value.param == "max_tokens"
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(max_tokens=1, prompt_logprobs=21)
    assert err.value.param == "prompt_logprobs"
    assert SamplingParams(max_tokens=0, prompt_logprobs=5).max_tokens == 0
