"""Exports of HF folders to ONNX: layout, idempotence, the choice per provider, no half-written output."""
import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from services.lib.mlkit.onnx_export import EXPORT_MARKER, ensure_onnx, export_causal_lm, export_kind
from services.lib.mlkit.tiny import build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("export") / "tiny")


def test_optimum_export_has_the_kv_cache_layout_and_the_model_files(model_dir):
    out = ensure_onnx(model_dir)
    assert out == model_dir / "onnx" and export_kind(out) == "optimum"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    assert {"input_ids", "attention_mask", "position_ids", "past_key_values.0.key", "past_key_values.1.value"} <= inputs
    assert {"logits", "present.0.key", "present.1.value"} <= outputs
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (model_dir / name).read_bytes()
    # the chat template stays where the model keeps it (inline), no competing copy
    assert not (out / "chat_template.jinja").exists()
    assert json.loads((out / EXPORT_MARKER).read_text())["task"] == "text-generation-with-past"


def test_ensure_onnx_is_idempotent(model_dir):
    first = ensure_onnx(model_dir)
    stamp = (first / "model.onnx").stat().st_mtime_ns
    assert ensure_onnx(model_dir) == first and (first / "model.onnx").stat().st_mtime_ns == stamp
    assert ensure_onnx(first) == first                   # an ONNX folder is served as it is


def test_auto_picks_the_builder_graph_on_cpu_and_optimum_on_accelerators(model_dir):
    cpu = ensure_onnx(model_dir, kind="auto", providers=["CPUExecutionProvider"])
    assert cpu == model_dir / "onnx-gqa" and export_kind(cpu) == "gqa"
    assert (cpu / "genai_config.json").is_file() and (cpu / "tokenizer.json").is_file()
    for best in ("CUDAExecutionProvider", "CANNExecutionProvider"):
        assert ensure_onnx(model_dir, kind="auto", providers=[best, "CPUExecutionProvider"]) == model_dir / "onnx"


def test_a_failed_export_leaves_nothing_behind(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("*.safetensors", "onnx*"))
    with pytest.raises(Exception):
        export_causal_lm(model_dir=broken, out_dir=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]
