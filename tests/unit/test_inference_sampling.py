"""Token choice (penalties, temperature, top-k, top-p, seeds) and incremental text with stop strings."""
from pathlib import Path

import numpy as np
import pytest

from services.lib.inference.params import SamplingParams
from services.lib.inference.sampling import TokenHistory, apply_penalties, choose_token, make_rngs
from services.lib.inference.textstream import TextStream


def test_penalties_follow_vllm_semantics():
    logits = np.array([2.0, -2.0, 1.0, 0.5], dtype=np.float32)
    history = TokenHistory(4, prompt_ids=np.array([3]))
    for token in (0, 0, 1):
        history.add(token)
    p = SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    out = apply_penalties(logits, history, p)
    # token 0: 2/2 (repetition, positive) - 0.5*2 - 0.25 ; token 1: -2*2 - 0.5 - 0.25
    # token 2: untouched ; token 3: prompt only -> repetition only (0.5/2)
    assert out.tolist() == pytest.approx([2 / 2 - 1.0 - 0.25, -4 - 0.5 - 0.25, 1.0, 0.25])
    assert logits.tolist() == [2.0, -2.0, 1.0, 0.5]   # input untouched


def test_greedy_takes_the_argmax():
    logits = np.array([0.1, 3.0, 2.9], dtype=np.float32)
    assert choose_token(logits, SamplingParams(temperature=0), None)[0] == 1
    assert choose_token(logits, SamplingParams(top_k=1), np.random.default_rng(0))[0] == 1


def _draw(logits, params, count=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.bincount([choose_token(logits, params, rng)[0] for _ in range(count)], minlength=len(logits))


def test_top_k_keeps_only_the_k_best():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1], dtype=np.float32))
    counts = _draw(logits, SamplingParams(top_k=2))
    assert counts[2] == counts[3] == 0
    assert counts[0] / counts[:2].sum() == pytest.approx(0.4 / 0.7, abs=0.03)


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    counts = _draw(logits, SamplingParams(top_p=0.75))    # 0.5 + 0.3 crosses 0.75
    assert counts[2] == counts[3] == 0 and counts[1] > 0


def test_top_p_over_a_large_vocabulary_matches_a_full_sort():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=50_000).astype(np.float32) * 0.5    # flat: nucleus of thousands of tokens
    params = SamplingParams(top_p=0.3)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    nucleus = set(order[: int(np.searchsorted(np.cumsum(probs[order]), 0.3)) + 1].tolist())
    draws = {choose_token(logits, params, rng)[0] for _ in range(100)}
    assert draws <= nucleus


def test_temperature_sharpens_and_flattens():
    logits = np.log(np.array([0.6, 0.4], dtype=np.float32))
    cold = _draw(logits, SamplingParams(temperature=0.25))
    hot = _draw(logits, SamplingParams(temperature=2.0))
    assert cold[0] / cold.sum() > 0.8 and 0.5 < hot[0] / hot.sum() < 0.6


def test_seeded_generators_repeat_and_differ_per_sequence():
    a, b = make_rngs(7, 2), make_rngs(7, 2)
    assert a[0].random() == b[0].random()
    assert make_rngs(7, 2)[0].random() != make_rngs(7, 2)[1].random()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from services.lib.mlkit.tiny import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(Path(tmp_path_factory.mktemp("tok"))))


def _feed(tokenizer, text, stop=()):
    stream = TextStream(tokenizer, stop=stop)
    pieces, stopped = [], False
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        stopped = stream.push(token)
        pieces.append(stream.take())
        if stopped:
            break
    stream.flush()
    pieces.append(stream.take(final=True))
    return "".join(pieces), stream, stopped


def test_incremental_text_equals_full_decode_even_for_multibyte_characters(tokenizer):
    text = "The capital of France is Paris. 中国的首都是北京 🚀 done"
    out, _, _ = _feed(tokenizer, text)
    assert out == tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_stop_strings_are_cut_and_never_streamed(tokenizer):
    out, stream, stopped = _feed(tokenizer, "Hello world. Stop here please", stop=("Stop", "zzz"))
    assert stopped and out == "Hello world. " and stream.stop_reason == "Stop"


def test_the_earliest_stop_string_wins(tokenizer):
    out, stream, _ = _feed(tokenizer, "one two three four", stop=("four", "two"))
    assert out == "one " and stream.stop_reason == "two"


def test_a_partial_stop_string_is_held_back_then_released(tokenizer):
    stream = TextStream(tokenizer, stop=("Paris!",))
    shown = ""
    for token in tokenizer("in Paris.", add_special_tokens=False)["input_ids"]:
        stream.push(token)
        shown += stream.take()
        assert not shown.endswith("Paris")   # could still become the stop string
    stream.flush()
    assert shown + stream.take(final=True) == "in Paris."
