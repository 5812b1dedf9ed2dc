"""SmoothQuant smoothing and AWQ scaling in torch, on the tiny models: they keep the float function,
they do what they claim to the quantization error, and the fake quantizer matches onnxruntime's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.lib.mlkit.quantize.awq import apply_awq, fake_quantize, search_clip
from services.lib.mlkit.quantize.calibration import builtin_calibration_texts, token_windows
from services.lib.mlkit.quantize.modules import UnsupportedModel, decoder_layers, scale_groups
from services.lib.mlkit.quantize.smoothquant import SmoothReport, activation_absmax, activation_outliers, smooth


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def tiny(request, tmp_path_factory) -> Path:
    from services.lib.mlkit.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp(request.param), arch=request.param)


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    # Random init gives flat activations; real models have outlier channels, so make some.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[:4] *= 20
            layer.post_attention_layernorm.weight[5:8] *= 15
    return model, AutoTokenizer.from_pretrained(folder)


def _windows(tokenizer, n_tokens=512):
    return token_windows(tokenizer, builtin_calibration_texts(), seq_len=128, max_tokens=n_tokens, equal=True)


def test_smoothing_keeps_the_function_and_flattens_activations(tiny):
    model, tok = _load(tiny)
    windows = _windows(tok)
    ids = torch.tensor(windows[:1])
    with torch.no_grad():
        before = model(ids).logits
    act_before = activation_absmax(model, windows)
    report = smooth(model, windows, alpha=0.5)
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert report.max_act_after < report.max_act_before / 2
    # Per group, the ratio of the largest to the median channel range (what per-tensor int8 suffers from) shrinks.
    act_after = activation_absmax(model, windows)
    layer = decoder_layers(model)[0]
    q_proj = scale_groups(model, layer)[0].linears[0]
    spread = lambda a: float(a.max() / a.median())  # noqa: E731
    assert spread(act_after[id(q_proj)]) < spread(act_before[id(q_proj)]) / 2
    # Every scale group of every layer reports its linears (module names) and its input range after smoothing.
    layers = len(decoder_layers(model))
    assert sorted(g for g, _, _ in report.inputs) == sorted(["attn_in", "mlp_in", "down", "o"] * layers)
    names = dict(model.named_modules())
    assert all(isinstance(names[n], torch.nn.Linear) for _, linears, _ in report.inputs for n in linears)
    assert max(m for _, _, m in report.inputs) == pytest.approx(report.max_act_after)


def test_outlier_inputs_are_judged_against_the_same_linear_in_other_layers():
    down = [("down", [f"layers.{i}.down_proj"], m) for i, m in enumerate([4.0, 5.0, 6.0, 120.0, 5.5])]
    attn = [("attn_in", [f"layers.{i}.q_proj", f"layers.{i}.k_proj"], m) for i, m in enumerate([2.0, 2.5, 9.0, 3.0, 2.2])]
    report = SmoothReport(alpha=0.5, groups=("down",), layers=5, max_act_before=0, max_act_after=0, inputs=down + attn)
    # 120 is far over the median down_proj (5.5); 9 is over 3x the median q/k input (2.5): both of its linears.
    assert activation_outliers(report) == ["layers.3.down_proj", "layers.2.q_proj", "layers.2.k_proj"]
    assert activation_outliers(report, factor=10) == ["layers.3.down_proj"]


def test_alpha_bounds():
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        smooth(None, [], alpha=1.5)


def test_migration_strength_extremes(tiny):
    """s_j = max|X_j|^α / max|W_j|^(1-α): α=1 moves all of the range into the weights (every activation
    channel's max becomes 1), α=0 none of it (every weight column's max becomes 1)."""
    model, tok = _load(tiny)
    windows = _windows(tok, 256)
    smooth(model, windows, alpha=1.0)
    stats = activation_absmax(model, windows)
    group = scale_groups(model, decoder_layers(model)[0])[2]          # post_attention_layernorm -> gate/up
    torch.testing.assert_close(stats[id(group.linears[0])], torch.ones(group.channels), atol=1e-4, rtol=1e-4)

    model, tok = _load(tiny)
    smooth(model, windows, alpha=0.0)
    group = scale_groups(model, decoder_layers(model)[0])[3]          # up_proj -> down_proj (no later fold)
    w_max = torch.stack([l.weight.abs().amax(0) for l in group.linears]).amax(0)
    torch.testing.assert_close(w_max, torch.ones_like(w_max), atol=1e-5, rtol=1e-5)


def test_awq_scaling_keeps_the_function_and_lowers_quantization_error(tiny):
    model, tok = _load(tiny)
    windows = _windows(tok)
    ids = torch.tensor(windows[:1])
    with torch.no_grad():
        reference = model(ids).logits

    def rtn_error(m) -> float:
        """Logit error of the model with every decoder linear fake-quantized to int4 (no AWQ)."""
        saved = {}
        with torch.no_grad():
            for layer in decoder_layers(m):
                for group in scale_groups(m, layer):
                    for linear in group.linears:
                        if id(linear) not in saved:
                            saved[id(linear)] = (linear, linear.weight.clone())
                            linear.weight.copy_(fake_quantize(linear.weight, bits=4, block_size=32))
            err = float((m(ids).logits - reference).pow(2).mean())
            for linear, w in saved.values():
                linear.weight.copy_(w)
        return err

    plain = rtn_error(model)
    report = apply_awq(model, windows, bits=4, block_size=32, n_grid=10, clip=False)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference, atol=1e-4, rtol=1e-4)   # scales folded exactly
    assert report.error_reduction >= 0
    assert set(report.alphas) == {"attn_in", "o", "mlp_in", "down"}
    assert all(a is None or 0 <= a < 1 for values in report.alphas.values() for a in values)
    assert any(a is not None for values in report.alphas.values() for a in values)   # some scaling won
    assert rtn_error(model) < plain


def test_clip_search_never_increases_a_blocks_output_error():
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 8, bias=False)
    with torch.no_grad():
        linear.weight[:, 3] = 4.0    # an outlier column widens one block's range
    x = torch.randn(256, 64)
    original = linear.weight.detach().clone()
    before = float((x @ fake_quantize(original, bits=4, block_size=32).T - x @ original.T).pow(2).mean())
    search_clip(linear, x, bits=4, block_size=32)
    after = float((x @ fake_quantize(linear.weight.detach(), bits=4, block_size=32).T - x @ original.T).pow(2).mean())
    assert after <= before
    assert torch.all(linear.weight.abs() <= original.abs().amax() + 1e-6)


@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quantize_matches_onnxruntime_block_quantizer(bits):
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 96)).astype(np.float32)   # [out, in]
    w[2, :32] = np.abs(w[2, :32]) + 0.5                 # a block with no negative values: zero stays in range
    packed, scales, zero_points = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=False, bits=bits)).qbits_block_quant(w.T.copy())
    # Unpack MatMulNBits' layout [N, k_blocks, blob] (low nibble first) and dequantize.
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(16, 3, 32)
        zp = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(16, -1)[:, :3]
    else:
        q, zp = packed.reshape(16, 3, 32), zero_points.reshape(16, 3)
    ort = ((q.astype(np.float32) - zp[..., None]) * scales.reshape(16, 3, 1)).reshape(16, 96)
    ours = fake_quantize(torch.from_numpy(w), bits=bits, block_size=32).numpy()
    step = scales.max()
    mismatched = np.abs(ours - ort) > 1e-5
    # Rounding ties may go either way; anything else must agree exactly.
    assert mismatched.mean() < 0.01 and np.abs(ours - ort).max() <= step + 1e-6


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedModel, match="model_type 'gpt2' is not supported"):
        smooth(model, [[1, 2, 3]], alpha=0.5)


def test_float_zero_points_pack_like_the_fake_quantizer_and_reproduce_a_grid():
    """MatMulNBits with float zero points (onnx_quant) computes what fake_quantize(float_zero=True)
    predicts; weights already on a 16-level [min, max] grid per block (a dequantized Q4_1 checkpoint,
    like the SmolLM2 used here) come back exactly, which integer zero points cannot do."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from services.lib.mlkit.quantize.onnx_quant import quantize_matmul_float_zero

    rng = np.random.default_rng(0)
    k, n = 96, 24
    levels = rng.integers(0, 16, size=(n, k // 32, 32)).astype(np.float32)
    levels[..., 0], levels[..., 1] = 0, 15                               # every block spans its grid
    lo = rng.uniform(-0.3, 0.1, size=(n, k // 32, 1)).astype(np.float32)
    step = rng.uniform(0.01, 0.04, size=(n, k // 32, 1)).astype(np.float32)
    w = (lo + levels * step).reshape(n, k)                               # [out, in]
    x = rng.normal(size=(5, k)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5, k])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [5, n])],
                              [numpy_helper.from_array(w.T.copy(), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert quantize_matmul_float_zero(model, bits=4, block_size=32) == ["mm"]
    assert [i.name for i in model.graph.initializer if i.name == "w"] == []      # the float weight is gone
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    fake = fake_quantize(torch.from_numpy(w), bits=4, block_size=32, float_zero=True).numpy()
    np.testing.assert_allclose(y, x @ fake.T, atol=1e-4)
    np.testing.assert_allclose(fake, w, atol=1e-6)                                # the grid, exactly
    integer = fake_quantize(torch.from_numpy(w), bits=4, block_size=32).numpy()
    assert np.abs(integer - w).max() > 10 * np.abs(fake - w).max() + 1e-4
