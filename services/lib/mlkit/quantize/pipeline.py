"""One compression run, from an HF folder to a quantized ONNX folder, with its before/after figures.

Steps: load the float model → perplexity on the held-out text → SmoothQuant smoothing (W8A8) or AWQ
scale + clip search (W4A16) in torch → export to ONNX with KV cache (optimum) → quantize in
onnxruntime's formats → perplexity of the quantized ONNX model on the same text.

Recipes (measured on SmolLM2-135M, benchmarks/bench_quantization.py):

- ``smoothquant-w8a8``: smoothing with migration strength α on all four scale groups, then every
  linear as ``MatMulNBits`` with 8-bit weights and ``accuracy_level=4``: onnxruntime quantizes the
  activations to int8 per row and block of K and multiplies in int8 (W8A8 with token-wise activation
  scales). The classic per-tensor dynamic int8 path (MatMulInteger) is kept in the benchmark for
  comparison: on a small model it loses far more, even after smoothing. Two exceptions multiply float
  activations with the same 8-bit weights (``accuracy_level=0``): the LM head, whose output is read
  directly as the next token's logits, and the few linears whose input range after smoothing stays
  far over that of the same linear in the other layers (``smoothquant.activation_outliers``; on
  SmolLM2 the down_proj of the layers with "massive activations"). Together with the embedding/head
  at block 32 this cuts the first-answer-token KL to float32 on chat prompts from 0.0055 to 0.0032.
  Held-out perplexity alone does not show such drift, so jobs also measure chat-template turns
  (``details.chat`` in quantization.json).
- ``awq-w4a16``: AWQ scales and clipping, then ``MatMulNBits`` 4-bit, float activations. Zero
  points are floats (each block's [min, max] spans the 16 levels exactly) for the linears where that
  lowers the output error most per extra byte, as many as fit in ``size_budget`` × the float32 size;
  the others get the usual packed integer zero point.
- Both: the token embedding and the LM head tied to it are quantized once, at 8 bits, and shared
  (``GatherBlockQuantized`` + ``MatMulNBits`` reading the same bytes).

The output folder has the layout of ``export_causal_lm`` (``model.onnx`` + tokenizer/config files)
plus ``quantization.json``; its ``config.json`` carries ``quantization_config`` so the platform
treats the model as quantized (deploy-only).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from services.lib.mlkit import MODEL_LOADING

log = logging.getLogger(__name__)

SMOOTHQUANT = "smoothquant-w8a8"
AWQ = "awq-w4a16"
STRATEGIES = (SMOOTHQUANT, AWQ)
QUANTIZATION_FILE = "quantization.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")

Progress = Callable[[float, str], None]   # (fraction 0..1, step) — may raise Cancelled
LogLine = Callable[[str], None]


class Cancelled(Exception):
    """Raised from a progress callback to stop a run (its job was deleted)."""


class CompressionInputError(ValueError):
    """The source model cannot be compressed (already quantized, unsupported architecture...)."""


@dataclass(frozen=True)
class CompressionConfig:
    strategy: str
    alpha: float = 0.5             # SmoothQuant migration strength
    block_size: int | None = None  # None: the strategy's default (see DEFAULT_BLOCK)
    n_grid: int = 10               # AWQ: α grid points in [0, 1)
    clip: bool = True              # AWQ: clipping search
    search_tokens: int = 1024      # AWQ: calibration tokens the grid search compares outputs on (its cost)
    duo: bool = False              # AWQ: also weigh the weights' magnitude in the scales (AutoAWQ's duo scaling)
    float_zero: bool = True        # AWQ: float zero points where the size budget allows (False: all integer)
    size_budget: float = 0.195     # AWQ: output size at most this share of the float32 size (4 B/parameter)
    seq_len: int = 512             # calibration / evaluation window
    max_calibration_tokens: int = 4096
    max_eval_tokens: int | None = None

    @property
    def block(self) -> int:
        return self.block_size or DEFAULT_BLOCK[self.strategy]


DEFAULT_BLOCK = {SMOOTHQUANT: 32, AWQ: 32}
EMBEDDING_BITS = 8   # the tied embedding / LM head, shared by the lookup and the head
EMBEDDING_BLOCK = 64  # at 8 bits a larger block costs nothing measurable and saves bytes for the linears
# W8A8 has the bytes to spare (0.291x instead of 0.287x on SmolLM2) and gains precision where it shows: the
# tied LM head decides the next token, and at block 64 its error alone flipped a close chat answer.
EMBEDDING_BLOCK_W8A8 = 32
GRAPH_BYTES = (50_000, 10_000)   # the graph itself (fixed + per decoder layer): a margin for the size estimate


@dataclass
class CompressionOutcome:
    out_dir: Path
    size_before_bytes: int
    size_after_bytes: int
    perplexity_before: float
    perplexity_after: float
    seconds: float
    details: dict = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        return self.size_after_bytes / self.size_before_bytes if self.size_before_bytes else math.nan

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity_after / self.perplexity_before


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def check_source(model_dir: Path) -> dict:
    """config.json of a compressible source; CompressionInputError otherwise."""
    from services.lib.mlkit.quantize.modules import SUPPORTED_MODEL_TYPES

    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CompressionInputError(f"config.json cannot be read: {exc}") from None
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "?")
        raise CompressionInputError(f"the model is already quantized ({method}); compress a full-precision model")
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise CompressionInputError(f"model_type '{config.get('model_type')}' is not supported "
                                    f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if not weights_bytes(model_dir):
        raise CompressionInputError("the model folder holds no *.safetensors / *.bin weights")
    return config


def quantization_config(config: CompressionConfig, float_zero: list[str] | None = None,
                        float_activations: list[str] | None = None) -> dict:
    """The ``quantization_config`` written into config.json (what weight validation and serving read)."""
    if config.strategy == AWQ:
        return {"quant_method": "awq", "bits": 4, "group_size": config.block, "zero_point": True,
                "embedding_bits": EMBEDDING_BITS, "version": "onnx-matmulnbits", "format": "onnx",
                "modules_with_float_zero_point": float_zero or []}
    return {"quant_method": "smoothquant", "bits": 8, "activation_bits": 8, "alpha": config.alpha,
            "group_size": config.block, "embedding_bits": EMBEDDING_BITS, "format": "onnx",
            "modules_with_float_activations": float_activations or []}


def bytes_per_weight(bits: int, block: int, *, float_zero: bool = False) -> float:
    """On-disk bytes per weight of MatMulNBits: packed values, fp32 scale, zero point (packed or fp32)."""
    return (block * bits / 8 + 4 + (4 if float_zero else bits / 8)) / block


def choose_float_zero(errors, *, allowance: float, block: int) -> list[str]:
    """Linears that get float zero points: best error gain per extra byte first, within ``allowance`` bytes."""
    extra = bytes_per_weight(4, block, float_zero=True) - bytes_per_weight(4, block)
    chosen, spent = [], 0.0
    for e in sorted((e for e in errors if e.gain > 0), key=lambda e: -e.gain / e.count):
        if spent + e.count * extra <= allowance:
            chosen.append(e.name)
            spent += e.count * extra
    return chosen


def float_zero_allowance(model, errors, *, budget: float, block: int) -> float:
    """Bytes left for float zero points once everything else is counted at its packed size."""
    total = sum(p.numel() for p in model.parameters())   # tied weights are counted once
    linears = sum(e.count for e in errors)
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings() is None or \
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    graph = GRAPH_BYTES[0] + GRAPH_BYTES[1] * model.config.num_hidden_layers
    fixed = embedding * bytes_per_weight(EMBEDDING_BITS, EMBEDDING_BLOCK) + graph
    rest = total - linears - embedding
    if not tied:   # an untied LM head becomes one more 4-bit MatMul
        head = model.get_output_embeddings().weight.numel()
        fixed += head * bytes_per_weight(4, block)
        rest -= head
    fixed += 4 * rest   # norms and biases stay float32
    return budget * 4 * total - fixed - linears * bytes_per_weight(4, block)


def onnx_node_name(module: str) -> str:
    """The optimum exporter's MatMul name of a linear.

    model.layers.3.mlp.up_proj -> /model/layers.3/mlp/up_proj/MatMul
    """
    parts: list[str] = []
    for part in module.split("."):
        if part.isdigit() and parts:
            parts[-1] += f".{part}"
        else:
            parts.append(part)
    return "/" + "/".join(parts) + "/MatMul"


def _embedding_block(hidden: int, block: int) -> int:
    """GatherBlockQuantized needs the block to divide the hidden size: the largest power of 2 ≤ block that does."""
    b = block
    while b > 16 and hidden % b:
        b //= 2
    return b


def quantize_onnx(src: Path, dst: Path, *, strategy: str, block_size: int, hidden: int,
                  float_zero: list[str] | None = None, float_activations: list[str] | None = None) -> dict:
    """Quantize the exported float folder ``src`` into ``dst`` (same layout); returns what was done.

    ``float_zero``: linears (module names) a W4A16 model packs with float zero points.
    ``float_activations``: linears (module names) a W8A8 model keeps at float activations (W8A16).
    """
    from services.lib.mlkit.quantize import onnx_quant

    model = onnx_quant.load(src)
    bits = 8 if strategy == SMOOTHQUANT else 4
    # accuracy_level 4: int8 activations inside MatMulNBits (W8A8); 0: float activations (W4A16).
    level = 4 if strategy == SMOOTHQUANT else 0
    # The tied embedding / LM head stays at 8 bits for both: at 4 bits it alone costs SmolLM2 ~11%
    # perplexity (18.15 -> 20.12), at 8 bits nothing measurable, and it is stored once. Its head
    # multiplies float activations: the logits are read directly, int8 noise there moves the next token.
    embedded = onnx_quant.quantize_embeddings(
        model, bits=EMBEDDING_BITS, accuracy_level=0,
        block_size=_embedding_block(hidden, EMBEDDING_BLOCK_W8A8 if strategy == SMOOTHQUANT else EMBEDDING_BLOCK))
    nodes = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    kept_modules = [m for m in float_zero or [] if onnx_node_name(m) in nodes]
    if kept_modules:
        onnx_quant.quantize_matmul_float_zero(model, bits=bits, block_size=block_size,
                                              nodes={onnx_node_name(m) for m in kept_modules})
    # Every other MatMul with a constant weight: onnxruntime's quantizer, integer zero points.
    kept_float = [m for m in float_activations or [] if onnx_node_name(m) in nodes] if level else []
    model = onnx_quant.quantize_matmul_nbits(model, bits=bits, block_size=block_size, accuracy_level=level,
                                             exclude=[onnx_node_name(m) for m in kept_float])
    if kept_float:   # the same 8-bit weights, multiplied with float activations
        model = onnx_quant.quantize_matmul_nbits(model, bits=bits, block_size=block_size, accuracy_level=0)
    dst.mkdir(parents=True, exist_ok=True)
    for path in Path(src).iterdir():
        if path.is_file() and path.name not in (onnx_quant.ONNX_FILE, onnx_quant.EXTERNAL_DATA_FILE):
            shutil.copy2(path, dst / path.name)
    onnx_quant.save(model, dst)
    return {"weight_bits": bits, "embedding_bits": EMBEDDING_BITS, "block_size": block_size,
            "activation_bits": 8 if strategy == SMOOTHQUANT else 32, "embeddings": embedded,
            "float_zero_linears": kept_modules, "float_activation_linears": kept_float,
            "ops": onnx_quant.op_histogram(model)}


def _save_float(model, tokenizer, model_dir: Path, out: Path) -> None:
    """The transformed float weights next to the source's own config and tokenizer files."""
    from services.lib.mlkit.onnx_export import MODEL_SIDE_FILES

    model.save_pretrained(out, safe_serialization=True)
    copied = False
    for name in MODEL_SIDE_FILES:
        if (Path(model_dir) / name).is_file():
            shutil.copy2(Path(model_dir) / name, out / name)
            copied = copied or name.startswith("tokenizer")
    if not copied:   # a source without tokenizer files of its own (unusual): save the loaded one
        tokenizer.save_pretrained(out)


def compress(*, model_dir: Path, out_dir: Path, config: CompressionConfig, work_dir: Path,
             calibration_texts: list[str] | None = None, on_progress: Progress | None = None,
             on_log: LogLine | None = None) -> CompressionOutcome:
    """Compress the HF model in ``model_dir`` into the ONNX folder ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.lib.mlkit.onnx_export import export_causal_lm
    from services.lib.mlkit.quantize.calibration import (builtin_calibration_texts, chat_samples, heldout_texts,
                                                     token_windows)
    from services.lib.mlkit.quantize.perplexity import (next_token_drift, onnx_next_logprobs, onnx_perplexity,
                                                    torch_next_logprobs, torch_perplexity)

    if config.strategy not in STRATEGIES:
        raise CompressionInputError(f"unknown strategy '{config.strategy}'")
    started = time.monotonic()
    say = on_log or (lambda line: log.info("%s", line))
    step = on_progress or (lambda fraction, name: None)
    model_dir, out_dir, work_dir = Path(model_dir), Path(out_dir), Path(work_dir)

    step(0.0, "loading")
    source_config = check_source(model_dir)
    say(f"strategy {config.strategy}; source {source_config.get('model_type')} "
        f"hidden {source_config.get('hidden_size')} layers {source_config.get('num_hidden_layers')}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - any tokenizer problem is the source's
        raise CompressionInputError(f"the tokenizer cannot be loaded: {type(exc).__name__}: {exc}") from exc
    try:
        with MODEL_LOADING:   # the worker runs jobs in threads, next to other loads in the process
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - corrupt or mismatched weight files
        raise CompressionInputError(f"the weights cannot be loaded: {type(exc).__name__}: {exc}") from exc
    model.eval()
    seq_len = min(config.seq_len, getattr(model.config, "max_position_embeddings", config.seq_len) or config.seq_len)
    texts = calibration_texts or builtin_calibration_texts()
    calibration = token_windows(tokenizer, texts, seq_len=seq_len, max_tokens=config.max_calibration_tokens,
                                equal=True)
    evaluation = token_windows(tokenizer, heldout_texts(), seq_len=seq_len, max_tokens=config.max_eval_tokens)
    say(f"calibration: {sum(map(len, calibration))} tokens in {len(calibration)} windows of {seq_len} "
        f"({'built-in set' if calibration_texts is None else f'{len(texts)} user texts'}); "
        f"held-out evaluation: {sum(map(len, evaluation))} tokens")

    step(0.05, "perplexity before")
    ppl_before = torch_perplexity(model, evaluation)
    say(f"perplexity before (float32, torch): {ppl_before:.4f}")
    chat_prompts, chat_conversations = chat_samples(tokenizer)
    chat: dict = {}
    if chat_prompts:
        chat = {"prompts": len(chat_prompts), "perplexity_before": torch_perplexity(model, chat_conversations),
                "first_tokens": torch_next_logprobs(model, chat_prompts)}
        say(f"chat perplexity before: {chat['perplexity_before']:.4f} ({len(chat_prompts)} chat-template turns)")

    float_zero: list[str] = []
    float_activations: list[str] = []
    details: dict = {"strategy": config.strategy, "calibration_tokens": sum(map(len, calibration)),
                     "evaluation_tokens": sum(map(len, evaluation))}
    if config.strategy == SMOOTHQUANT:
        from services.lib.mlkit.quantize.smoothquant import OUTLIER_FACTOR, activation_outliers, smooth

        step(0.15, "smoothing")
        report = smooth(model, calibration, alpha=config.alpha,
                        progress=lambda f: step(0.15 + 0.45 * f, "smoothing"))
        say(f"SmoothQuant α={config.alpha}: largest per-channel activation {report.max_act_before:.1f} → "
            f"{report.max_act_after:.1f} over groups {', '.join(report.groups)} of {report.layers} layers")
        float_activations = activation_outliers(report)
        say(f"float activations (W8A16) for {len(float_activations)} linears whose inputs stay over "
            f"{OUTLIER_FACTOR:g}x the median of their kind after smoothing: {', '.join(float_activations) or 'none'}")
        details["smoothquant"] = {**{k: v for k, v in asdict(report).items() if k != "inputs"},
                                  "float_activation_linears": float_activations}
    else:
        from services.lib.mlkit.quantize.awq import apply_awq, zero_point_errors

        step(0.15, "awq search")
        report = apply_awq(model, calibration, bits=4, block_size=config.block, n_grid=config.n_grid,
                           clip=config.clip, search_tokens=config.search_tokens, duo=config.duo,
                           float_zero=config.float_zero,
                           progress=lambda f: step(0.15 + 0.4 * f, "awq search"))
        mean_alpha = {k: round(sum(a for a in v if a is not None) / max(1, sum(a is not None for a in v)), 3)
                      for k, v in report.alphas.items()}
        unscaled = sum(a is None for v in report.alphas.values() for a in v)
        say(f"AWQ: {report.layers} layers, mean chosen α per group {mean_alpha} ({unscaled} of "
            f"{sum(map(len, report.alphas.values()))} groups kept unscaled), output error "
            f"{100 * report.error_reduction:.1f}% below round-to-nearest; clipping {'on' if config.clip else 'off'}")
        details["awq"] = {"bits": report.bits, "block_size": report.block_size, "n_grid": report.n_grid,
                          "clip": report.clip, "mean_alpha": mean_alpha, "unscaled_groups": unscaled,
                          "error_reduction": report.error_reduction}
        if config.float_zero:
            step(0.55, "zero points")
            errors = zero_point_errors(model, calibration, bits=4, block_size=config.block)
            allowance = float_zero_allowance(model, errors, budget=config.size_budget, block=config.block)
            float_zero = choose_float_zero(errors, allowance=allowance, block=config.block)
            mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
            say(f"zero points: float for {len(float_zero)} of {len(errors)} linears (size budget "
                f"{config.size_budget:.3f}x of float32); mean relative output error with integer zero points "
                f"{mean([e.int_zero for e in errors]):.2e}, float {mean([e.float_zero for e in errors]):.2e}")
            details["awq"]["float_zero_linears"] = float_zero

    step(0.6, "export")
    float_dir = work_dir / "float"
    _save_float(model, tokenizer, model_dir, float_dir)
    del model
    export_dir = export_causal_lm(model_dir=float_dir, out_dir=work_dir / "onnx-float")
    shutil.rmtree(float_dir, ignore_errors=True)
    say("exported to ONNX (text-generation-with-past)")

    step(0.7, "quantize")
    done = quantize_onnx(export_dir, out_dir, strategy=config.strategy, block_size=config.block,
                         hidden=source_config["hidden_size"], float_zero=float_zero,
                         float_activations=float_activations)
    shutil.rmtree(export_dir, ignore_errors=True)
    details["onnx"] = done
    say(f"quantized: {done['ops']}; embeddings: {'; '.join(done['embeddings']) or 'kept float'}")

    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["quantization_config"] = quantization_config(config, done["float_zero_linears"],
                                                   done["float_activation_linears"])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    step(0.8, "perplexity after")
    ppl_after = onnx_perplexity(out_dir, evaluation)
    if chat:
        reference = chat.pop("first_tokens")
        chat["perplexity_after"] = onnx_perplexity(out_dir, chat_conversations)
        chat["perplexity_ratio"] = chat["perplexity_after"] / chat["perplexity_before"]
        chat["first_token_kl"], chat["first_token_agreement"] = next_token_drift(
            reference, onnx_next_logprobs(out_dir, chat_prompts))
        details["chat"] = chat
        say(f"chat perplexity after: {chat['perplexity_after']:.4f} ({chat['perplexity_ratio']:.3f}x); first answer "
            f"token: KL to the float model {chat['first_token_kl']:.4f}, same greedy token for "
            f"{100 * chat['first_token_agreement']:.0f}% of the chat prompts")
    from services.lib.mlkit.quantize.onnx_quant import model_bytes

    outcome = CompressionOutcome(out_dir=out_dir, size_before_bytes=weights_bytes(model_dir),
                                 size_after_bytes=model_bytes(out_dir), perplexity_before=ppl_before,
                                 perplexity_after=ppl_after, seconds=time.monotonic() - started, details=details)
    say(f"perplexity after (onnxruntime): {ppl_after:.4f} ({outcome.perplexity_ratio:.3f}x); size "
        f"{outcome.size_before_bytes / 1e6:.1f} MB → {outcome.size_after_bytes / 1e6:.1f} MB "
        f"({outcome.size_ratio:.3f}x)")
    (out_dir / QUANTIZATION_FILE).write_text(json.dumps({
        "strategy": config.strategy, "quantization_config": cfg["quantization_config"],
        "params": {"alpha": config.alpha if config.strategy == SMOOTHQUANT else None,
                   "block_size": config.block, "seq_len": seq_len,
                   **({"n_grid": config.n_grid, "clip": config.clip, "search_tokens": config.search_tokens,
                       "duo": config.duo, "float_zero": config.float_zero, "size_budget": config.size_budget}
                      if config.strategy == AWQ else {})},
        "metrics": {"size_before_bytes": outcome.size_before_bytes, "size_after_bytes": outcome.size_after_bytes,
                    "perplexity_before": ppl_before, "perplexity_after": ppl_after,
                    "seconds": round(outcome.seconds, 2)},
        "details": details,
    }, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    step(1.0, "done")
    return outcome
