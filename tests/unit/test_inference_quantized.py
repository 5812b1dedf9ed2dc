"""The engine serves the compression jobs' outputs: optimum-layout ONNX folders quantized to
int8 (QOperator, QDQ) and int4 (MatMulNBits)."""
import shutil

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from services.lib.inference.engine import Engine
from services.lib.inference.kv_concat import ConcatBackend
from services.lib.inference.params import SamplingParams
from services.lib.mlkit.onnx_export import ensure_onnx
from tests.unit.test_inference_engine import build_sharp_tiny


class _Calibration(CalibrationDataReader):
    def __init__(self, layers: int, kv_heads: int, head_dim: int):
        rng = np.random.default_rng(0)
        self._items = iter([{
            "input_ids": rng.integers(3, 2000, size=(1, 12)), "attention_mask": np.ones((1, 12), np.int64),
            "position_ids": np.arange(12)[None],
            **{f"past_key_values.{i}.{k}": np.zeros((1, kv_heads, 0, head_dim), np.float32)
               for i in range(layers) for k in ("key", "value")}} for _ in range(4)])

    def get_next(self):
        return next(self._items, None)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    src = ensure_onnx(build_sharp_tiny(root / "tiny"), kind="optimum")

    def clone(name):
        out = root / name
        shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.onnx", "onnx_export.json"))
        return out

    out = {"fp32": src, "int8-qoperator": clone("int8-qoperator"), "int8-qdq": clone("int8-qdq"), "int4": clone("int4")}
    quantize_dynamic(str(src / "model.onnx"), str(out["int8-qoperator"] / "model.onnx"), weight_type=QuantType.QInt8)
    quantize_static(str(src / "model.onnx"), str(out["int8-qdq"] / "model.onnx"), _Calibration(2, 2, 16),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"])
    quant = MatMulNBitsQuantizer(onnx.load(str(src / "model.onnx")), block_size=32, is_symmetric=True)
    quant.process()
    quant.model.save_model_to_file(str(out["int4"] / "model.onnx"))
    return out


@pytest.mark.parametrize("kind, min_cosine", [("int8-qoperator", 0.98), ("int4", 0.85), ("int8-qdq", None)])
def test_quantized_folders_load_and_generate(folders, kind, min_cosine):
    graph = onnx.load(str(folders[kind] / "model.onnx"), load_external_data=False)
    ops = {n.op_type for n in graph.graph.node}
    expected = {"int8-qoperator": "DynamicQuantizeLinear", "int8-qdq": "DequantizeLinear", "int4": "MatMulNBits"}
    assert expected[kind] in ops
    engine = Engine(folders[kind], max_model_len=64, max_num_seqs=2)
    try:
        assert engine.backend_name == "concat-kv"
        out = engine.generate(list(range(3, 30)), SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
        assert out.completion_tokens == 10 and out.text
    finally:
        engine.close()
    if min_cosine is not None:   # static int8 on random weights is the compression job's concern
        ids = np.arange(3, 30)
        ref = ConcatBackend(folders["fp32"], max_slots=1, max_len=64).prefill(0, ids)
        got = ConcatBackend(folders[kind], max_slots=1, max_len=64).prefill(0, ids)
        assert float(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref)) > min_cosine
