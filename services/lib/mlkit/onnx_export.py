"""Hugging Face causal LM -> ONNX folders for onnxruntime, and onnxruntime session helpers.

Two export flavours, both folders with ``model.onnx`` plus the model's tokenizer/config files:

- ``export_causal_lm``: optimum-onnx, task ``text-generation-with-past``. Standard ONNX ops only, so
  every execution provider runs it (CANN included); inputs ``input_ids``, ``attention_mask``,
  ``position_ids``, ``past_key_values.{i}.key|value``; outputs ``logits``, ``present.{i}.key|value``.
  The compression jobs quantize this one, and the engine runs it with a growing KV cache.
- ``export_gqa_model``: onnxruntime-genai's model builder. Fused GroupQueryAttention and rotary
  kernels with a KV buffer shared between past and present (no per-token copies): ~40% faster per
  token on CPU (ML-NOTES), but the contrib ops exist only for CPU/CUDA-class providers.

``ensure_onnx`` turns a model folder into an ONNX folder once (idempotent); caching the result in
object storage is the deploying service's job.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# Files that travel with the weights: tokenizer (every format transformers reads) and configs.
MODEL_SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
    "chat_template.jinja", "chat_template.json",
)
EXPORT_MARKER = "onnx_export.json"   # written last: its presence means the folder is complete
ONNX_FILE = "model.onnx"

# Execution providers in the platform's order of preference (DESIGN.md §4).
PROVIDER_ORDER = ("CANNExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

ExportKind = Literal["optimum", "gqa", "auto"]


def choose_providers(available: Sequence[str], *, prefer: str | None = None) -> list[str]:
    """Providers to pass to an InferenceSession, best first, CPU always last as the fallback.

    ``available`` is ``onnxruntime.get_available_providers()`` (a parameter so the logic is testable
    with any list). ``prefer`` (e.g. "CPUExecutionProvider") pins one provider when it is available.
    """
    if prefer is not None:
        if prefer not in available:
            raise ValueError(f"execution provider {prefer!r} is not available (available: {list(available)})")
        return [prefer] if prefer == "CPUExecutionProvider" else [prefer, "CPUExecutionProvider"]
    chosen = [p for p in PROVIDER_ORDER if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def load_onnx_session(onnx_path: Path, *, providers: Sequence[str] | None = None,
                      threads: int | None = None, spinning: bool | None = None):
    """An InferenceSession with full graph optimisation on the best available providers.

    ``spinning=False`` makes idle intra-op threads sleep instead of busy-waiting: on a few shared
    cores a spinning pool starves the Python threads that prepare the next run (decode loops).
    None keeps onnxruntime's default (spinning).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if spinning is not None:
        flag = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", flag)
        options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    providers = list(providers) if providers else choose_providers(ort.get_available_providers())
    return ort.InferenceSession(str(onnx_path), options, providers=providers)


def is_onnx_folder(folder: Path) -> bool:
    return (Path(folder) / ONNX_FILE).is_file()


def export_kind(folder: Path) -> ExportKind:
    """Which flavour an ONNX folder holds: the builder writes genai_config.json, optimum does not."""
    return "gqa" if (Path(folder) / "genai_config.json").is_file() else "optimum"


def _copy_side_files(model_dir: Path, out_dir: Path) -> None:
    # The exporters re-save the tokenizer (and may move the chat template into a separate file);
    # the model's own files are the reference, so they replace whatever the exporter wrote.
    for name in MODEL_SIDE_FILES:
        src = model_dir / name
        if src.is_file():
            shutil.copy2(src, out_dir / name)
    # A template kept inline in tokenizer_config.json must not be shadowed by an exporter's copy.
    cfg = out_dir / "tokenizer_config.json"
    if (not (model_dir / "chat_template.jinja").is_file() and cfg.is_file()
            and "chat_template" in json.loads(cfg.read_text(encoding="utf-8"))):
        (out_dir / "chat_template.jinja").unlink(missing_ok=True)


def _publish(tmp: Path, out_dir: Path, marker: dict) -> Path:
    """Write the marker and move the finished folder into place (never a half-written out_dir)."""
    (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o755)   # mkdtemp makes it private; the export is an ordinary shared folder
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out_dir)
    return out_dir


def export_causal_lm(*, model_dir: Path, out_dir: Path, with_past: bool = True) -> Path:
    """Export the HF causal LM in ``model_dir`` to ``out_dir`` (optimum-onnx); returns ``out_dir``.

    ``out_dir/model.onnx`` (plus ``model.onnx_data`` for models over 2 GB) and the model's
    tokenizer/config/generation_config files. With ``with_past`` the graph takes and returns the
    KV cache (task text-generation-with-past); without it, a plain full-sequence graph.
    """
    from optimum.exporters.onnx import main_export

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        task = "text-generation-with-past" if with_past else "text-generation"
        # Validation re-runs both models on random inputs: slow for real models and not needed
        # (the engine tests compare outputs with transformers).
        main_export(str(model_dir), output=tmp, task=task, do_validation=False, local_files_only=True)
        _copy_side_files(model_dir, tmp)
        return _publish(tmp, out_dir, {"kind": "optimum", "task": task, "with_past": with_past})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_gqa_model(*, model_dir: Path, out_dir: Path, precision: str = "fp32",
                     provider: str = "cpu") -> Path:
    """Export with onnxruntime-genai's model builder (GroupQueryAttention, shared KV buffer).

    ``precision`` fp32/fp16/int4 and ``provider`` cpu/cuda as the builder names them. The LM head
    is pruned to the last position (prefill computes one row of logits, not one per prompt token).
    Raises NotImplementedError for architectures the builder does not know.
    """
    from onnxruntime_genai.models.builder import create_model

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory() as cache:
            create_model("", str(model_dir), str(tmp), precision, provider, cache,
                         prune_lm_head=True, hf_remote=False)
        if not (tmp / ONNX_FILE).is_file():
            raise NotImplementedError(f"the model builder wrote no {ONNX_FILE} for {model_dir}")
        _copy_side_files(model_dir, tmp)
        return _publish(tmp, out_dir, {"kind": "gqa", "precision": precision, "provider": provider})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_onnx(model_dir: Path, *, kind: ExportKind = "optimum", out_dir: Path | None = None,
                providers: Sequence[str] | None = None) -> Path:
    """The ONNX folder for ``model_dir``, exporting it on first use; idempotent.

    - ``model_dir`` already holds ``model.onnx`` (an export, or a compression job's quantized
      model): returned as is.
    - otherwise the export of flavour ``kind`` lives in ``out_dir`` (default ``model_dir/onnx`` for
      optimum, ``model_dir/onnx-gqa`` for the builder); a complete one (marker present) is reused.
    - ``kind="auto"`` is what the inference server serves on this machine: the builder's graph when
      the best of ``providers`` (default: this onnxruntime build's) is the CPU and the builder
      knows the architecture, the optimum export otherwise (CANN, CUDA).
    A deploying service that caches exports in object storage calls ``ensure_onnx(dir, kind="auto")``,
    uploads the returned folder and, on the next deployment, downloads it to the same place first.
    """
    model_dir = Path(model_dir)
    if is_onnx_folder(model_dir):
        return model_dir
    if kind == "auto":
        if providers is None:
            import onnxruntime as ort

            providers = choose_providers(ort.get_available_providers())
        if providers[0] == "CPUExecutionProvider":
            try:
                return ensure_onnx(model_dir, kind="gqa", out_dir=out_dir)
            except Exception as exc:   # an architecture the builder does not know
                log.warning("model builder export failed (%s); using the optimum export", exc)
        return ensure_onnx(model_dir, kind="optimum", out_dir=out_dir)
    out_dir = Path(out_dir) if out_dir else model_dir / ("onnx" if kind == "optimum" else "onnx-gqa")
    if (out_dir / EXPORT_MARKER).is_file() and is_onnx_folder(out_dir):
        return out_dir
    if kind == "gqa":
        return export_gqa_model(model_dir=model_dir, out_dir=out_dir)
    return export_causal_lm(model_dir=model_dir, out_dir=out_dir)
