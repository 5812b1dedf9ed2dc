"""Weight validation, guide table 5-4: one test per failure message, against real tiny models."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from services.lib.mlkit.tiny import build_tiny_model
from services.registry import weight_checks as wc
from services.lib.catalog.templates import CompressionStrategy, Template, TemplateTasks
from services.registry.weight_checks import is_hf_folder, validate_weights

TINY_STRUCTURE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 2048}
ALL_CHECKS = ["template", "config", "quantization", "structure", "generation_config",
              "do_sample", "tokenizer", "weights"]
# Default (materialise with transformers) and forced header verification (the >2 GB path).
BOTH_MODES = pytest.mark.parametrize("limit", [wc.MATERIALIZE_LIMIT_BYTES, 0],
                                     ids=["materialize", "headers"])


def make_template(**overrides) -> Template:
    fields = dict(id="qwen2-custom", name="Qwen2 custom", series="Qwen2", series_zh="通义千问2",
                  scenarios=["chat"], scenarios_zh=["对话"], languages=["zh", "en"],
                  hf_model_types=["qwen2"], architectures=["Qwen2ForCausalLM"],
                  tasks=TemplateTasks(), context_length=2048)
    fields.update(overrides)
    return Template(**fields)


ANY_SIZE = make_template()
PINNED = make_template(id="qwen2-tiny", structure=TINY_STRUCTURE)


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("src") / "qwen2")


@pytest.fixture
def tiny(tiny_src, tmp_path):
    """A private copy each test may break."""
    return shutil.copytree(tiny_src, tmp_path / "model")


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


def _fails_with(result, message, check):
    assert result.ok is False
    assert result.message == message
    assert result.detail
    assert result.checks[-1] == (check, False)
    assert all(passed for _, passed in result.checks[:-1])
    assert [name for name, _ in result.checks] == ALL_CHECKS[:ALL_CHECKS.index(check) + 1]


# --- passing --------------------------------------------------------------------------------

@BOTH_MODES
@pytest.mark.parametrize("template", [ANY_SIZE, PINNED], ids=["any-size", "pinned"])
def test_valid_tiny_model_passes(tiny_src, template, limit):
    result = validate_weights(tiny_src, template, materialize_limit_bytes=limit)
    assert result.ok, result.detail
    assert result.message is None
    assert result.checks == [(name, True) for name in ALL_CHECKS]


@BOTH_MODES
def test_valid_llama_passes(tmp_path, limit):
    folder = build_tiny_model(tmp_path / "llama", arch="llama")
    template = make_template(id="llama-custom", hf_model_types=["llama"],
                             architectures=["LlamaForCausalLM"])
    assert validate_weights(folder, template, materialize_limit_bytes=limit).ok


def test_sampling_config_with_do_sample_true_passes(tiny):
    _edit_json(tiny / "generation_config.json", do_sample=True, temperature=0.7, top_p=0.8,
               top_k=20)
    assert validate_weights(tiny, ANY_SIZE).ok


@pytest.mark.parametrize("params", [{"temperature": 1.0, "top_p": 1.0, "top_k": 50},
                                    {"temperature": 0.0}, {"top_k": 0}],
                         ids=["transformers-defaults", "greedy-temperature", "top-k-disabled"])
def test_neutral_sampling_values_without_do_sample_pass(tiny, params):
    _edit_json(tiny / "generation_config.json", do_sample=False, **params)
    assert validate_weights(tiny, ANY_SIZE).ok


def test_generation_config_is_optional(tiny):
    (tiny / "generation_config.json").unlink()
    assert validate_weights(tiny, ANY_SIZE).ok


# --- table 5-4 failures -----------------------------------------------------------------------

def test_template_metadata_error(tiny):
    broken = ANY_SIZE.model_copy(update={"hf_model_types": []})   # copy skips validation
    _fails_with(validate_weights(tiny, broken), wc.MSG_TEMPLATE, "template")
    bad_pin = PINNED.model_copy(update={"structure": {"hidden_size": 0}})
    _fails_with(validate_weights(tiny, bad_pin), wc.MSG_TEMPLATE, "template")
    _fails_with(validate_weights(tiny, {"id": "qwen2"}), wc.MSG_TEMPLATE, "template")


def test_missing_config_json(tiny):
    (tiny / "config.json").unlink()
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_USER_CONFIG, "config")


@pytest.mark.parametrize("text", ['{"model_type": "qwen2",', "[1, 2]", ""])
def test_broken_config_json(tiny, text):
    (tiny / "config.json").write_text(text)
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_USER_CONFIG, "config")


def test_extra_quantization_config(tiny):
    _edit_json(tiny / "config.json", quantization_config={"quant_method": "awq", "bits": 4})
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_QUANT_EXTRA, "quantization")


def test_missing_quantization_config_for_awq_template(tiny):
    awq = make_template(id="qwen2-custom-awq", quantization=CompressionStrategy.awq_w4a16)
    _fails_with(validate_weights(tiny, awq), wc.MSG_QUANT_MISSING, "quantization")
    # A quantization_config of another method is not AWQ weights either.
    _edit_json(tiny / "config.json", quantization_config={"quant_method": "gptq", "bits": 4})
    _fails_with(validate_weights(tiny, awq), wc.MSG_QUANT_MISSING, "quantization")


def test_model_type_mismatch(tiny):
    llama_template = make_template(id="llama-custom", hf_model_types=["llama"],
                                   architectures=["LlamaForCausalLM"])
    result = validate_weights(tiny, llama_template)
    _fails_with(result, wc.MSG_STRUCTURE, "structure")
    assert "model_type 'qwen2'" in result.detail


def test_pinned_value_mismatch(tiny):
    big = make_template(id="qwen2-0.5b", structure={**TINY_STRUCTURE, "hidden_size": 896})
    result = validate_weights(tiny, big)
    _fails_with(result, wc.MSG_STRUCTURE, "structure")
    assert "hidden_size=64" in result.detail


@pytest.mark.parametrize("changes", [{"num_attention_heads": None}, {"vocab_size": "2048"},
                                     {"num_key_value_heads": 3}, {"hidden_size": 66},
                                     {"architectures": ["LlamaForCausalLM"]}],
                         ids=["missing-heads", "string-vocab", "kv-heads", "indivisible",
                              "architecture"])
def test_structure_fields_missing_or_inconsistent(tiny, changes):
    _edit_json(tiny / "config.json", **changes)
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_STRUCTURE, "structure")


@pytest.mark.parametrize("text", ["{'do_sample': True}", '"text"', '{"temperature": "hot"}'])
def test_bad_generation_config(tiny, text):
    (tiny / "generation_config.json").write_text(text)
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_GENERATION_CONFIG, "generation_config")


@pytest.mark.parametrize("changes", [{"do_sample": False, "temperature": 0.7},
                                     {"do_sample": None, "top_p": 0.8},
                                     {"top_k": 20}],
                         ids=["false+temperature", "absent+top_p", "top_k"])
def test_do_sample_inconsistent_with_sampling_params(tiny, changes):
    _edit_json(tiny / "generation_config.json", **changes)
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_DO_SAMPLE, "do_sample")


def test_corrupt_tokenizer(tiny):
    data = (tiny / "tokenizer.json").read_bytes()
    (tiny / "tokenizer.json").write_bytes(data[: len(data) // 2])
    result = validate_weights(tiny, ANY_SIZE)
    _fails_with(result, wc.MSG_TOKENIZER, "tokenizer")


def test_tokenizer_larger_than_vocab(tiny):
    _edit_json(tiny / "config.json", vocab_size=1024)   # embeddings smaller than the tokenizer
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_TOKENIZER, "tokenizer")


@BOTH_MODES
def test_truncated_safetensors(tiny, limit):
    path = tiny / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4096])
    _fails_with(validate_weights(tiny, ANY_SIZE, materialize_limit_bytes=limit), wc.MSG_WEIGHTS,
                "weights")


@BOTH_MODES
def test_garbage_safetensors(tiny, limit):
    (tiny / "model.safetensors").write_bytes(b"\x00" * 1000)
    _fails_with(validate_weights(tiny, ANY_SIZE, materialize_limit_bytes=limit), wc.MSG_WEIGHTS,
                "weights")


@BOTH_MODES
def test_missing_tensor(tiny, limit):
    # transformers only warns and random-inits a missing tensor; validation must not accept it.
    path = tiny / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    result = validate_weights(tiny, ANY_SIZE, materialize_limit_bytes=limit)
    _fails_with(result, wc.MSG_WEIGHTS, "weights")
    assert "down_proj" in result.detail


@BOTH_MODES
def test_weights_shape_mismatch_with_config(tiny, limit):
    _edit_json(tiny / "config.json", intermediate_size=256)
    _fails_with(validate_weights(tiny, ANY_SIZE, materialize_limit_bytes=limit), wc.MSG_WEIGHTS,
                "weights")


def test_no_weight_files(tiny):
    (tiny / "model.safetensors").unlink()
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_WEIGHTS, "weights")


def test_non_finite_weights(tiny):
    path = tiny / "model.safetensors"
    tensors = load_file(path)
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})
    _fails_with(validate_weights(tiny, ANY_SIZE), wc.MSG_WEIGHTS, "weights")


def test_unexpected_exception_is_unknown_error(tiny, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(wc, "_check_tokenizer", boom)
    result = validate_weights(tiny, ANY_SIZE)
    _fails_with(result, wc.MSG_UNKNOWN, "tokenizer")
    assert "disk on fire" in result.detail


def test_messages_are_verbatim_from_table_5_4():
    # Spot-check the exact English the guide shows; the UI and clients match on it.
    assert wc.MSG_DO_SAMPLE == (
        "The value of do_sample is not set to true in generation_config.json, which is "
        "inconsistent with the configured sampling parameters such as temperature, top_p, "
        "top_k etc.")
    assert wc.MSG_QUANT_EXTRA.startswith("There is an extra quantization_config field")
    assert wc.MSG_UNKNOWN.endswith("check the log to locate the specific problem.")


# --- is_hf_folder -----------------------------------------------------------------------------

@pytest.mark.parametrize("names, expected", [
    (["config.json", "model.safetensors", "tokenizer.json"], True),
    (["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], True),
    (["./config.json", "pytorch_model.bin"], True),
    (["config.json", "tokenizer.json"], False),
    (["model.safetensors"], False),
    (["config.json", "training_args.bin"], False),
    (["adapter_config.json", "config.json", "adapter_model.safetensors"], False),
    (["sub/config.json", "sub/model.safetensors"], False),
    ([], False),
])
def test_is_hf_folder(names, expected):
    assert is_hf_folder(names) is expected


def test_awq_packed_weights_pass_header_check(tiny):
    """AWQ folders can't be loaded without autoawq kernels: names are checked from headers."""
    import torch

    _edit_json(tiny / "config.json", quantization_config={
        "quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm", "zero_point": True})
    path = tiny / "model.safetensors"
    tensors = load_file(path)
    for name in [k for k in tensors if ".layers." in k and k.endswith("proj.weight")]:
        out_f, in_f = tensors.pop(name).shape
        base = name.removesuffix(".weight")
        tensors[base + ".qweight"] = torch.zeros(in_f, out_f // 8, dtype=torch.int32)
        tensors[base + ".qzeros"] = torch.zeros(in_f // 32, out_f // 8, dtype=torch.int32)
        tensors[base + ".scales"] = torch.ones(in_f // 32, out_f, dtype=torch.float16)
    save_file(tensors, path, metadata={"format": "pt"})
    awq = make_template(id="qwen2-custom-awq", quantization=CompressionStrategy.awq_w4a16)
    result = validate_weights(tiny, awq)
    assert result.ok, result.detail
    # ...and a packed layer that is missing is still caught.
    del tensors["model.layers.0.mlp.up_proj.qweight"]
    save_file(tensors, path, metadata={"format": "pt"})
    _fails_with(validate_weights(tiny, awq), wc.MSG_WEIGHTS, "weights")
