#!/usr/bin/env python
"""Quantization benchmark: SmoothQuant-W8A8 and AWQ-W4A16 against naive recipes, on SmolLM2.

    python benchmarks/bench_quantization.py [--model smollm2|tiny] [--cache DIR] [--alpha 0.5] [--quick]

Everything is measured in one run against the float32 ONNX export of the same model: held-out
perplexity (``services/lib/mlkit/quantize/data/heldout.txt``, onnxruntime, windows of 512 tokens) and
on-disk size (model.onnx + external data). Rows:

- ``fp32``: the optimum export (text-generation-with-past), the reference.
- naive baselines: ``int8-dynamic`` (onnxruntime ``quantize_dynamic``: int8 per-channel weights,
  per-tensor dynamic uint8 activations, embeddings float) and ``int4-rtn`` (MatMulNBits
  round-to-nearest with integer zero points, block 32, embeddings float).
- the platform recipes, run through ``services.lib.mlkit.quantize.pipeline.compress`` exactly as a
  compression job runs them: SmoothQuant-W8A8 (smoothing with α, then 8-bit MatMulNBits with int8
  activations) and AWQ-W4A16 (scale + clip search, 4-bit MatMulNBits, float zero points where the
  size budget allows).
- ``SmoothQuant-W8A8 previous recipe`` (diagnostic): the same smoothing with int8 activations in every
  linear and the LM head, and the embedding/head at block 64 - the recipe whose held-out perplexity was
  fine while a chat prompt's first answer token flipped.
- diagnostics (not with ``--quick``): int4 round-to-nearest with float zero points everywhere, and
  AWQ-W4A16 with integer zero points only (the usual AWQ format). SmolLM2 here is converted from a
  Q4_1 GGUF file: every linear's blocks of 32 already sit on a 16-level [min, max] grid, which float
  zero points reproduce exactly. These rows show how much of the W4A16 figure comes from that.

Goals (ratios vs fp32): W8A8 perplexity <= 1.05x and size <= 0.30x; W4A16 perplexity <= 1.15x and
size <= 0.20x. Chat figures, from the chat template (``calibration.CHAT_SAMPLES``): the chat-turn
perplexity ratio, and for the first answer token of each chat prompt the mean KL divergence from the
fp32 export's distribution and the share of prompts whose greedy token is unchanged. Prints a table to stderr and one JSON object as the last line of stdout. Nothing is
asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
GOALS = {"w8a8": (1.05, 0.30), "w4a16": (1.15, 0.20)}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def source_model(kind: str, cache: Path) -> Path:
    folder = cache / f"{kind}-hf"
    if (folder / "config.json").is_file():
        return folder
    if kind == "tiny":
        from services.lib.mlkit.tiny import build_tiny_model

        return build_tiny_model(folder)
    from services.lib.mlkit.smollm2 import convert_to_hf

    return convert_to_hf(folder)


class Bench:
    def __init__(self, model_dir: Path, work: Path, *, seq_len: int, calibration_tokens: int):
        from transformers import AutoTokenizer

        from services.lib.mlkit.quantize.calibration import (builtin_calibration_texts, chat_samples, heldout_texts,
                                                         token_windows)

        self.model_dir, self.work, self.seq_len = model_dir, work, seq_len
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.evaluation = token_windows(self.tokenizer, heldout_texts(), seq_len=seq_len)
        self.calibration = token_windows(self.tokenizer, builtin_calibration_texts(), seq_len=seq_len,
                                         max_tokens=calibration_tokens, equal=True)
        self.chat_prompts, self.chat_conversations = chat_samples(self.tokenizer)
        self.chat_reference = None
        self.hidden = json.loads((model_dir / "config.json").read_text())["hidden_size"]
        self.rows: list[dict] = []
        self.reference: dict | None = None
        self._exports: dict[str, Path] = {}

    # -- building blocks ------------------------------------------------------------------------

    def float_model(self):
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()

    def export(self, name: str, model=None) -> Path:
        """ONNX export of ``model`` (default: the untouched source), cached by name."""
        from services.lib.mlkit.onnx_export import export_causal_lm
        from services.lib.mlkit.quantize.pipeline import _save_float

        if name in self._exports:
            return self._exports[name]
        if model is None:
            src = self.model_dir
        else:
            src = self.work / f"{name}-hf"
            _save_float(model, self.tokenizer, self.model_dir, src)
        out = export_causal_lm(model_dir=src, out_dir=self.work / f"{name}-onnx")
        if model is not None:
            shutil.rmtree(src, ignore_errors=True)
        self._exports[name] = out
        return out

    def measure(self, name: str, folder: Path, *, family: str, note: str, seconds: float,
                perplexity: float | None = None) -> dict:
        from services.lib.mlkit.quantize.onnx_quant import model_bytes
        from services.lib.mlkit.quantize.perplexity import next_token_drift, onnx_next_logprobs, onnx_perplexity

        started = time.monotonic()
        ppl = perplexity if perplexity is not None else onnx_perplexity(folder, self.evaluation)
        size = model_bytes(folder)
        row = {"recipe": name, "family": family, "note": note, "size_bytes": size, "size_mb": round(size / 1e6, 2),
               "perplexity": round(ppl, 4), "quantize_s": round(seconds, 1)}
        if self.chat_prompts:
            row["chat_perplexity"] = round(onnx_perplexity(folder, self.chat_conversations), 4)
            first = onnx_next_logprobs(folder, self.chat_prompts)
            if self.chat_reference is None:
                self.chat_reference = first
            kl, same = next_token_drift(self.chat_reference, first)
            row["first_token_kl"], row["first_token_agreement"] = round(kl, 5), round(same, 3)
        row["eval_s"] = round(time.monotonic() - started, 1)
        if self.reference is None:
            self.reference = row
        row["ppl_ratio"] = round(ppl / self.reference["perplexity"], 4)
        row["size_ratio"] = round(size / self.reference["size_bytes"], 4)
        if "chat_perplexity" in row:
            row["chat_ppl_ratio"] = round(row["chat_perplexity"] / self.reference["chat_perplexity"], 4)
        goal = GOALS.get(family)
        row["meets_goal"] = None if goal is None else (row["ppl_ratio"] <= goal[0] and row["size_ratio"] <= goal[1])
        self.rows.append(row)
        chat = (f"  chat ppl {row['chat_ppl_ratio']:.3f}x, first-token KL {row['first_token_kl']:.4f}, "
                f"same {100 * row['first_token_agreement']:.0f}%") if "chat_perplexity" in row else ""
        log(f"  {name:<34} ppl {row['perplexity']:8.3f} ({row['ppl_ratio']:.3f}x)  size {row['size_mb']:7.1f} MB "
            f"({row['size_ratio']:.3f}x){chat}  {note}")
        if folder != self.reference_folder:
            shutil.rmtree(folder, ignore_errors=True)
        return row

    def quantized(self, name: str, src: Path, transform) -> tuple[Path, float]:
        from services.lib.mlkit.quantize import onnx_quant

        started = time.monotonic()
        model = onnx_quant.load(src)
        model = transform(model) or model
        dst = self.work / f"{name}-q"
        dst.mkdir(parents=True, exist_ok=True)
        for path in src.iterdir():
            if path.is_file() and path.name not in ("model.onnx", "model.onnx_data"):
                shutil.copy2(path, dst / path.name)
        onnx_quant.save(model, dst)
        return dst, time.monotonic() - started

    # -- the rows --------------------------------------------------------------------------------

    def platform(self, name: str, *, family: str, note: str, **config) -> dict:
        """One compression exactly as a job runs it (pipeline.compress), measured like the other rows."""
        from services.lib.mlkit.quantize.pipeline import CompressionConfig, compress

        out = self.work / f"{name}-out"
        outcome = compress(model_dir=self.model_dir, out_dir=out, work_dir=self.work / f"{name}-work",
                           config=CompressionConfig(seq_len=self.seq_len, **config),
                           on_log=lambda line: log(f"    {line}"))
        row = self.measure(name, out, family=family, note=note, seconds=outcome.seconds,
                           perplexity=outcome.perplexity_after)
        row["job_seconds"] = round(outcome.seconds, 1)
        return row

    def run(self, *, alpha: float, quick: bool) -> None:
        from services.lib.mlkit.quantize import onnx_quant
        from services.lib.mlkit.quantize.pipeline import AWQ, SMOOTHQUANT

        started = time.monotonic()
        base = self.export("fp32")
        self.reference_folder = base
        self.measure("fp32", base, family="reference", note="optimum export", seconds=time.monotonic() - started)

        log("naive baselines")
        folder, s = self.quantized("int8-dynamic", base, lambda m: onnx_quant.quantize_matmul_int8_dynamic(
            m, work_dir=self.work))
        self.measure("int8-dynamic (naive)", folder, family="w8a8", seconds=s,
                     note="quantize_dynamic per-channel, per-tensor activations, embeddings float")
        folder, s = self.quantized("int4-rtn", base, lambda m: onnx_quant.quantize_matmul_nbits(
            m, bits=4, block_size=32))
        self.measure("int4-rtn b32 (naive)", folder, family="w4a16", seconds=s,
                     note="MatMulNBits round-to-nearest, integer zero points, embeddings float")
        if not quick:
            def float_zero(m):
                onnx_quant.quantize_matmul_float_zero(m, bits=4, block_size=32)
            folder, s = self.quantized("int4-rtn-fz", base, float_zero)
            self.measure("int4-rtn b32 float zero points", folder, family="diagnostic", seconds=s,
                         note="round-to-nearest, embeddings float: the Q4_1 grid of this model")

        log(f"SmoothQuant-W8A8 (alpha {alpha}), as a job runs it")
        self.platform(f"SmoothQuant-W8A8 a{alpha} (platform)", family="w8a8", strategy=SMOOTHQUANT, alpha=alpha,
                      note="smoothing, MatMulNBits 8-bit + int8 activations (float for outlier-input linears "
                           "and the LM head), embedding/head int8 shared, block 32")
        log("SmoothQuant-W8A8 previous recipe (diagnostic)")
        from services.lib.mlkit.quantize.smoothquant import smooth

        model = self.float_model()
        smooth(model, self.calibration, alpha=alpha)
        smoothed = self.export(f"sq{alpha}", model)
        del model

        def previous(m):
            onnx_quant.quantize_embeddings(m, bits=8, block_size=64, accuracy_level=4)
            return onnx_quant.quantize_matmul_nbits(m, bits=8, block_size=32, accuracy_level=4)
        folder, s = self.quantized("sq-previous", smoothed, previous)
        self.measure(f"SmoothQuant-W8A8 a{alpha} previous recipe", folder, family="diagnostic", seconds=s,
                     note="int8 activations everywhere incl. the LM head, embedding/head block 64")
        shutil.rmtree(smoothed, ignore_errors=True)
        log("AWQ-W4A16, as a job runs it")
        self.platform("AWQ-W4A16 (platform)", family="w4a16", strategy=AWQ,
                      note="AWQ scales + clipping, 4-bit, float zero points within the size budget, "
                           "embedding/head int8 shared")
        if not quick:
            log("AWQ-W4A16 with integer zero points only (diagnostic)")
            self.platform("AWQ-W4A16 integer zero points", family="diagnostic", strategy=AWQ, float_zero=False,
                          note="the usual AWQ format; on a normal checkpoint the float-zero-point gain is small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "maas-bench-quant")
    parser.add_argument("--source", type=Path, help="an HF folder of the model to use instead of converting it")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--calibration-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="no diagnostic rows")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model_dir = args.source or source_model(args.model, args.cache)
    with tempfile.TemporaryDirectory(prefix="bench-quant-", dir=args.cache) as tmp:
        bench = Bench(model_dir, Path(tmp), seq_len=args.seq_len, calibration_tokens=args.calibration_tokens)
        log(f"{args.model}: {sum(map(len, bench.evaluation))} held-out tokens, "
            f"{sum(map(len, bench.calibration))} calibration tokens")
        bench.run(alpha=args.alpha, quick=args.quick)
    log("")
    log(f"{'recipe':<44} {'ppl':>9} {'ratio':>7} {'MB':>8} {'ratio':>7} {'chat':>7} {'1st KL':>7} {'same':>5}  goal")
    for row in bench.rows:
        goal = {True: "meets", False: "misses", None: ""}[row["meets_goal"]]
        chat = (f"{row['chat_ppl_ratio']:7.3f} {row['first_token_kl']:7.4f} {100 * row['first_token_agreement']:4.0f}%"
                if "chat_perplexity" in row else " " * 21)
        log(f"{row['recipe']:<44} {row['perplexity']:9.3f} {row['ppl_ratio']:7.3f} {row['size_mb']:8.1f} "
            f"{row['size_ratio']:7.3f} {chat}  {goal}")
    print(json.dumps({"model": args.model, "alpha": args.alpha, "seconds": round(time.monotonic() - started, 1),
                      "goals": GOALS, "rows": bench.rows}))


if __name__ == "__main__":
    main()
