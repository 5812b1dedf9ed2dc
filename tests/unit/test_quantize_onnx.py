"""The compression pipeline on the tiny model: ONNX layout, quantized ops, shared embeddings,
before/after figures, refusals; and onnxruntime's W8A8 kernel really quantizes activations."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from services.lib.mlkit.quantize.pipeline import (AWQ, SMOOTHQUANT, CompressionConfig, CompressionInputError, check_source,
                                              compress, onnx_node_name)

logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
# The tiny model is mostly embedding: a size budget that leaves its linears room for float zero points.
FAST = dict(seq_len=128, max_calibration_tokens=512, n_grid=5, search_tokens=256, max_eval_tokens=512,
            size_budget=0.6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from services.lib.mlkit.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def outputs(tiny, tmp_path_factory) -> dict:
    done = {}
    for strategy in (SMOOTHQUANT, AWQ):
        root = tmp_path_factory.mktemp(strategy)
        steps: list[str] = []
        outcome = compress(model_dir=tiny, out_dir=root / "out", work_dir=root / "work",
                           config=CompressionConfig(strategy=strategy, alpha=0.5, **FAST),
                           on_progress=lambda f, s: steps.append(s), on_log=lambda line: None)
        done[strategy] = (outcome, steps)
    return done


def attr(node, name):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _constant_matmuls(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


@pytest.mark.parametrize("strategy, bits, method", [(SMOOTHQUANT, 8, "smoothquant"), (AWQ, 4, "awq")])
def test_output_folder_is_a_quantized_onnx_model(outputs, strategy, bits, method):
    outcome, steps = outputs[strategy]
    out = outcome.out_dir
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "quantization.json"} <= {
        p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == method and config["quantization_config"]["bits"] == bits
    report = json.loads((out / "quantization.json").read_text())
    assert report["strategy"] == strategy and report["metrics"]["perplexity_after"] == outcome.perplexity_after

    model = onnx.load(str(out / "model.onnx"))
    assert _constant_matmuls(model) == []                      # every weight matrix is quantized
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    head = next(n for n in nbits if n.output[0] == "logits")
    linears = [n for n in nbits if n is not head]
    assert {attr(n, "bits") for n in linears} == {bits}
    # W4A16: the linears listed in the config carry float zero points, the others packed integer ones.
    inits = {i.name: i for i in model.graph.initializer}
    float_zp = [n for n in linears if inits[n.input[3]].data_type == onnx.TensorProto.FLOAT]
    listed = config["quantization_config"].get("modules_with_float_zero_point", [])
    assert len(float_zp) == len(listed)
    if strategy == AWQ:
        assert 0 < len(listed) <= len(linears)
    else:
        assert listed == []
    # W8A8 multiplies in int8 (accuracy_level 4) except the LM head and the listed outlier-input linears;
    # W4A16 keeps float activations.
    float_act = config["quantization_config"].get("modules_with_float_activations", [])
    if strategy == SMOOTHQUANT:
        assert attr(head, "accuracy_level") is None
        assert {n.name.rsplit("_Q", 1)[0] for n in linears if attr(n, "accuracy_level") is None} == {
            onnx_node_name(m) for m in float_act}
        assert sum(attr(n, "accuracy_level") == 4 for n in linears) == len(linears) - len(float_act) > 0
    else:
        assert float_act == [] and {attr(n, "accuracy_level") for n in nbits} == {None}
    # The tied embedding is stored once: the lookup and the LM head read the same packed bytes.
    [gather] = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    [reshape] = [n for n in model.graph.node if n.output[0] == gather.input[0]]
    assert reshape.input[0] == head.input[1] and gather.input[2] == head.input[2] and attr(gather, "bits") == 8
    hidden = config["hidden_size"]
    floats = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2
              and hidden in i.dims and i.dims[0] * i.dims[1] >= hidden * hidden]   # not scales, not rotary tables
    assert floats == []

    assert steps[0] == "loading" and steps[-1] == "done"
    assert outcome.size_ratio < (0.45 if strategy == SMOOTHQUANT else 0.40)
    assert outcome.perplexity_ratio < (1.02 if strategy == SMOOTHQUANT else 1.10)


def test_the_inference_engine_serves_the_outputs(outputs):
    """services/lib/inference runs the compressed folders as they are (the concat-KV loop over the
    optimum graph), and greedy decoding agrees with a full forward pass of the same ONNX model."""
    from services.lib.inference.engine import Engine
    from services.lib.inference.params import SamplingParams
    from services.lib.mlkit.quantize.perplexity import OnnxLM

    for outcome, _ in outputs.values():
        engine = Engine(outcome.out_dir, max_model_len=96, max_num_seqs=2)
        try:
            ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Hello!"}],
                                                       add_generation_prompt=True)
            out = engine.generate(ids, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
        finally:
            engine.close()
        assert out.completion_tokens == 6
        first = out.choices[0].token_ids[0]
        assert first == int(OnnxLM(outcome.out_dir).logits(list(ids))[-1].argmax())


def test_an_already_quantized_model_is_refused(outputs, tmp_path):
    outcome, _ = outputs[SMOOTHQUANT]
    folder = tmp_path / "quantized"
    folder.mkdir()
    (folder / "config.json").write_text((outcome.out_dir / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CompressionInputError, match=r"already quantized \(smoothquant\)"):
        check_source(folder)


def test_missing_weights_and_unknown_architectures_are_refused(tiny, tmp_path):
    (tmp_path / "config.json").write_text((tiny / "config.json").read_text())
    with pytest.raises(CompressionInputError, match="no \\*.safetensors"):
        check_source(tmp_path)
    config = json.loads((tiny / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(CompressionInputError, match="model_type 'gpt2' is not supported"):
        check_source(tmp_path)


def test_int8_kernel_quantizes_activations(tmp_path):
    """MatMulNBits with 8-bit weights and accuracy_level 4 rounds the activations to int8 (W8A8);
    with accuracy_level 0 the same weights meet float activations (W8A16)."""
    import onnxruntime as ort

    from services.lib.mlkit.quantize.onnx_quant import quantize_matmul_nbits

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    x = rng.normal(size=(4, 64)).astype(np.float32)
    x[:, 5] = 40.0    # an outlier channel: int8 activations lose the small ones in its block
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 32])],
                              [numpy_helper.from_array(w, "w")])
    errors = {}
    for level in (0, 4):
        model = quantize_matmul_nbits(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
                                      bits=8, block_size=32, accuracy_level=level)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        errors[level] = float(np.abs(session.run(None, {"x": x})[0] - x @ w).max())
    assert errors[4] > 2 * errors[0]
    assert errors[4] < 0.05 * float(np.abs(x @ w).max())
