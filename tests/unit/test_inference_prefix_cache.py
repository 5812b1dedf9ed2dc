"""Prefix caching: prompts that start like an earlier prompt or answer reuse its KV cache, with greedy
output identical to a run without the cache, on both decode loops; bounded memory; hit counters."""
import threading
from dataclasses import replace

import numpy as np
import pytest

from services.lib.inference.engine import Engine
from services.lib.inference.kv_concat import ConcatBackend
from services.lib.inference.kv_gqa import GqaBackend
from services.lib.inference.params import SamplingParams
from services.lib.inference.prefix_cache import PrefixCache
from services.lib.mlkit.onnx_export import ensure_onnx
from tests.unit.test_inference_engine import build_sharp_tiny

SYSTEM = ("You are a helpful assistant for a cloud platform. Answer in one short paragraph, be polite, "
          "never invent facts, and when you do not know something say so. The platform trains, compresses, "
          "deploys and serves language models; its users are engineers who want exact answers.")
GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
BLOCK = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_sharp_tiny(tmp_path_factory.mktemp("prefix") / "tiny")


def _folder(model_dir, kind):
    return model_dir if kind == "gqa" else ensure_onnx(model_dir, kind="optimum")


@pytest.fixture(scope="module", params=["gqa", "concat"])
def engines(request, model_dir):
    """(with the cache, without it) on the same backend."""
    folder = _folder(model_dir, request.param)
    cached = Engine(folder, max_model_len=512, max_num_seqs=4, prefix_block_size=BLOCK)
    plain = Engine(folder, max_model_len=512, max_num_seqs=4, prefix_cache_bytes=0)
    yield cached, plain
    cached.close()
    plain.close()


def _ids(engine, messages):
    return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def _common(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# -- the backends ---------------------------------------------------------------------------------------

def test_a_prefill_from_cached_keys_and_values_gives_the_logits_of_a_full_prefill(model_dir):
    ids = np.arange(5, 5 + 45) % 2000
    for backend in (GqaBackend(ensure_onnx(model_dir, kind="gqa"), max_slots=2, max_len=96, prefill_chunk=20),
                    ConcatBackend(ensure_onnx(model_dir, kind="optimum"), max_slots=2, max_len=96)):
        full = backend.prefill(0, ids)
        prefix = backend.kv(0, 0, 32)
        assert prefix.shape == (2 * backend.num_layers, backend.kv_heads, 32, backend.head_dim)
        seeded = backend.prefill(1, ids, cached=prefix)
        np.testing.assert_allclose(seeded, full, atol=2e-4, err_msg=backend.name)
        np.testing.assert_allclose(backend.kv(1, 0, 45), backend.kv(0, 0, 45), atol=2e-5, err_msg=backend.name)
        a, b = backend.decode([0, 1], [7, 7])
        np.testing.assert_allclose(a, b, atol=2e-4, err_msg=backend.name)


# -- the engine -----------------------------------------------------------------------------------------

def test_a_multi_turn_conversation_is_identical_with_the_cache(engines):
    cached, plain = engines
    # Each turn resends the earlier ones, answers included, token for token (as a client of
    # /v1/completions does; re-rendered text would re-tokenize the random model's odd answers).
    ids = _ids(cached, [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": "What does the platform do?"}])
    seen: list[list[int]] = []   # what the cache was given: each prompt, and each prompt + answer
    for turn in range(3):
        before = (cached.prefix_cache.queries, cached.prefix_cache.hits)
        got, want = cached.generate(ids, GREEDY), plain.generate(ids, GREEDY)
        assert got.choices[0].token_ids == want.choices[0].token_ids and got.text == want.text
        assert cached.prefix_cache.queries - before[0] == len(ids)
        expected = max([min(_common(s, ids), len(s), len(ids) - 1) // BLOCK * BLOCK for s in seen], default=0)
        assert cached.prefix_cache.hits - before[1] == expected
        if turn:   # the earlier turns came from the cache, the previous answer included
            assert expected > len(seen[-2]) // BLOCK * BLOCK
        answer = got.choices[0].token_ids
        seen += [list(ids), list(ids) + answer[:-1]]   # the last token never ran through the model
        ids = list(ids) + answer + cached.tokenizer.encode(
            f"<|im_end|>\n<|im_start|>user\nTell me more about point {turn + 1}.<|im_end|>\n<|im_start|>assistant\n",
            add_special_tokens=False)
    assert len(set(got.choices[0].token_ids)) > 5   # the text varies: the comparison means something
    assert plain.prefix_cache.queries == plain.prefix_cache.hits == plain.prefix_cache.blocks == 0


def test_requests_sharing_a_system_prompt_reuse_it_even_while_others_decode(engines):
    cached, plain = engines
    questions = ["How do I deploy a model?", "What is quantization?", "Which models can I fine-tune?"]
    prompts = [_ids(cached, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
               for q in questions]
    want = [plain.generate(ids, GREEDY).choices[0].token_ids for ids in prompts]
    cached.prefix_cache.clear()
    before = (cached.prefix_cache.queries, cached.prefix_cache.hits)
    assert cached.generate(prompts[0], GREEDY).choices[0].token_ids == want[0]
    shared = _common(prompts[0], prompts[1])
    assert cached.prefix_cache.hits == before[1]
    # The others join while each other decodes: a seeded prefill enters a running batch.
    results: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, cached.generate(prompts[i], GREEDY).choices[0].token_ids)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[1], results[2]] == want[1:]
    assert cached.prefix_cache.queries - before[0] == sum(map(len, prompts))
    assert cached.prefix_cache.hits - before[1] == 2 * (shared // BLOCK) * BLOCK > 0


def test_the_cache_stays_within_its_budget_and_zero_turns_it_off(model_dir):
    folder = _folder(model_dir, "concat")
    probe = Engine(folder, max_model_len=512, max_num_seqs=2, prefix_cache_bytes=0)
    try:
        per_block = 2 * probe.backend.num_layers * probe.backend.kv_heads * BLOCK * probe.backend.head_dim * 4
        prompts = [_ids(probe, [{"role": "system", "content": SYSTEM + f" Case {i}."},
                                {"role": "user", "content": "Go on."}]) for i in range(4)]
        want = [probe.generate(ids, GREEDY).choices[0].token_ids for ids in prompts]
        assert probe.prefix_cache.blocks == 0 and probe.prefix_cache.queries == 0
    finally:
        probe.close()
    small = Engine(folder, max_model_len=512, max_num_seqs=2, prefix_cache_bytes=5 * per_block,
                   prefix_block_size=BLOCK)
    try:
        for ids, tokens in zip(prompts * 2, want * 2):
            assert small.generate(ids, GREEDY).choices[0].token_ids == tokens
            assert 0 < small.prefix_cache.bytes <= 5 * per_block
        assert small.prefix_cache.blocks == 5
    finally:
        small.close()


# -- the cache itself -----------------------------------------------------------------------------------

def _kv(start, end):
    """Fake keys and values whose every entry is its position: what a block holds is checkable."""
    return np.broadcast_to(np.arange(start, end, dtype=np.float32)[None, None, :, None], (2, 1, end - start, 2)).copy()


def test_lookup_is_block_aligned_leaves_a_token_to_run_and_counts_tokens():
    cache = PrefixCache(capacity_bytes=1 << 20, block_size=4)
    tokens = list(range(100, 112))
    cache.insert(tokens, 11, _kv)            # 11 positions known: blocks [0, 4) and [4, 8)
    assert cache.blocks == 2
    n, kv = cache.match(tokens)
    assert n == 8 and kv[0, 0, :, 0].tolist() == list(range(8))
    assert cache.match(tokens[:8])[0] == 4   # never the whole prompt: its last position must run
    assert cache.match([1, *tokens[1:]]) == (0, None)   # a block matches only after the same prefix
    assert (cache.queries, cache.hits) == (12 + 8 + 12, 8 + 4)
    read = []
    cache.insert(tokens, 12, lambda s, e: read.append((s, e)) or _kv(s, e))
    assert read == [(8, 12)]                 # only what is not cached yet is read


def test_requests_of_different_accounts_never_share_entries():
    cache = PrefixCache(capacity_bytes=1 << 20, block_size=4)
    tokens = list(range(100, 112))
    cache.insert(tokens, 12, _kv, salt="account-a")
    assert cache.match(tokens, salt="account-b") == (0, None)
    assert cache.match(tokens) == (0, None)          # nor with a caller of the instance itself
    assert cache.match(tokens, salt="account-a")[0] == 8


def test_the_engine_keeps_each_accounts_cache_apart(engines):
    cached, _ = engines
    prompt = _ids(cached, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}])
    cached.prefix_cache.clear()
    first = cached.generate(prompt, replace(GREEDY, cache_salt="account-a"))
    other = cached.generate(prompt, replace(GREEDY, cache_salt="account-b"))
    again = cached.generate(prompt, replace(GREEDY, cache_salt="account-a"))
    assert (first.cached_tokens, other.cached_tokens) == (0, 0) and again.cached_tokens > 0
    assert first.choices[0].token_ids == other.choices[0].token_ids == again.choices[0].token_ids


def test_eviction_drops_least_recently_used_leaves_and_keeps_within_capacity():
    one = _kv(0, 4).nbytes
    cache = PrefixCache(capacity_bytes=3 * one, block_size=4)
    a, b = list(range(8)), list(range(50, 58))
    cache.insert(a, 8, _kv)
    cache.insert(b, 8, _kv)                  # a's leaf goes first: a stays reachable from its root
    assert cache.bytes == 3 * one and cache.match(a + [0])[0] == 4 and cache.match(b + [0])[0] == 8
    cache.insert(list(range(90, 110)), 20, _kv)   # longer than the whole cache: what fits of it
    assert cache.bytes <= 3 * one
    assert cache.match(list(range(90, 110)))[0] > 0


def test_a_cache_of_zero_bytes_is_off_and_bad_sizes_are_refused():
    cache = PrefixCache(capacity_bytes=0)
    cache.insert(list(range(40)), 40, _kv)
    assert cache.match(list(range(40))) == (0, None) and cache.queries == 0 and cache.blocks == 0
    with pytest.raises(ValueError, match="capacity"):
        PrefixCache(capacity_bytes=-1)
    with pytest.raises(ValueError, match="block size"):
        PrefixCache(capacity_bytes=10, block_size=0)


# -- the instance server --------------------------------------------------------------------------------

def test_usage_reports_cached_tokens_and_metrics_count_them(model_dir):
    from tests.unit.test_inference_grammar import instance_server

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello!"}]
    body = {"model": "tiny", "messages": messages, "max_tokens": 3, "temperature": 0}
    with instance_server(model_dir, max_model_len=512) as client:
        first = client.post("/v1/chat/completions", json=body).json()["usage"]
        second = client.post("/v1/chat/completions", json=body).json()["usage"]
        assert first["prompt_tokens_details"] == {"cached_tokens": 0}
        cached = second["prompt_tokens_details"]["cached_tokens"]
        assert cached == (second["prompt_tokens"] - 1) // 16 * 16 > 0
        text = client.get("/metrics").text
    assert f'maas_prefix_cache_queries_total{{model="tiny"}} {2 * first["prompt_tokens"]}' in text
    assert f'maas_prefix_cache_hits_total{{model="tiny"}} {cached}' in text
    assert "# TYPE maas_prefix_cache_hits_total counter" in text and 'maas_requests_running{model="tiny"} 0' in text
