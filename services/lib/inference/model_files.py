"""Which ONNX graph and which decode loop serve a model folder, per execution provider.

- CPU: the model builder's graph (fused GroupQueryAttention, shared KV buffer) with our batched
  loop (``GqaBackend``) — faster per token than onnxruntime-genai itself (benchmarks/bench_decode.py)
  and it batches sequences of different lengths, which genai's static batches do not.
- CANN / CUDA: the optimum export (standard ONNX ops, which the CANN provider runs) with the
  concat-cache loop (``ConcatBackend``), cache kept in device memory between steps.
- An ONNX folder given directly (an export, or a quantized model from a compression job) is run
  as it is, with the loop that fits its layout.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from services.lib.mlkit.onnx_export import ensure_onnx, export_kind, is_onnx_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPlan:
    onnx_dir: Path
    backend: str          # "gqa" | "concat"
    providers: list[str]


def plan_model(model_dir: Path, *, providers: list[str]) -> ModelPlan:
    """Export if needed (idempotent) and pick the decode loop for the best provider."""
    model_dir = Path(model_dir)
    if is_onnx_folder(model_dir):
        onnx_dir = model_dir
    elif (model_dir / "config.json").is_file():
        onnx_dir = ensure_onnx(model_dir, kind="auto", providers=providers)
    else:
        raise FileNotFoundError(f"{model_dir} holds neither model.onnx nor an HF config.json")
    if export_kind(onnx_dir) == "gqa":
        if providers[0] != "CPUExecutionProvider":
            log.warning("%s is a model-builder graph; it runs on the CPU provider here", onnx_dir)
        return ModelPlan(onnx_dir, "gqa", ["CPUExecutionProvider"])
    return ModelPlan(onnx_dir, "concat", providers)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def eos_token_ids(folder: Path, tokenizer) -> frozenset[int]:
    """Every id that ends a sequence: generation_config, config and the tokenizer's EOS."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        value = read_json(Path(folder) / name).get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def context_length(folder: Path) -> int | None:
    cfg = read_json(Path(folder) / "config.json")
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    genai = read_json(Path(folder) / "genai_config.json").get("model", {})
    return genai.get("context_length")
