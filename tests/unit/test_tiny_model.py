"""The tiny random-init model used by fast tests across the platform."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.lib.mlkit.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_layout_and_config(tiny):
    names = {p.name for p in tiny.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["model_type"] == "qwen2"
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]) == \
        (64, 2, 4, 2, 128, 2048)
    gen = json.loads((tiny / "generation_config.json").read_text())
    assert gen["eos_token_id"] == gen["pad_token_id"] == cfg["eos_token_id"]
    assert not gen.get("do_sample") and "temperature" not in gen
    assert (tiny / "model.safetensors").stat().st_size < 1_000_000


def test_tokenizer(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    assert len(tok) == 2048
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert tok.bos_token is None
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert tok.convert_tokens_to_ids(special) < 3
    text = "The capital of France is Paris. 中国的首都是北京。 emoji 🙂 unseen 龘"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids          # byte-level: no unknowns
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())        # merges were actually learned
    prompt = tok.apply_chat_template([{"role": "system", "content": "S"},
                                      {"role": "user", "content": "你好"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert tok(prompt)["input_ids"][0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_model_loads_and_generates(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert 150_000 < model.num_parameters() < 300_000
    inputs = tok.apply_chat_template([{"role": "user", "content": "hello"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 5)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == 2048 and torch.isfinite(logits).all()


def test_deterministic_per_seed_and_fast(tmp_path, tiny):
    start = time.perf_counter()
    again = build_tiny_model(tmp_path / "again", seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"tiny build took {elapsed:.2f}s"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(tiny / name), name
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert _digest(other / "model.safetensors") != _digest(tiny / "model.safetensors")
    assert _digest(other / "tokenizer.json") == _digest(tiny / "tokenizer.json")


def test_llama_arch(tmp_path):
    folder = build_tiny_model(tmp_path / "llama", arch="llama")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    out = model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, min_new_tokens=3,
                         do_sample=False)
    assert out.shape == (1, 6)


def test_unknown_arch_rejected(tmp_path):
    with pytest.raises(ValueError, match="unsupported arch"):
        build_tiny_model(tmp_path / "x", arch="gpt2")
