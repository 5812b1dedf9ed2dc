"""Perplexity of a torch model or of an exported/quantized ONNX folder on token windows.

Both use the same windows and the same sum of next-token log-likelihoods, so a compressed model's
figure is directly comparable with its source's. ONNX folders are the optimum export
(``services.lib.mlkit.onnx_export.export_causal_lm``): the KV-cache inputs get an empty past.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _nll_sum(logits: np.ndarray, ids: list[int]) -> float:
    """Sum of -log p(ids[t+1] | ids[..t]) from logits [T, V] (float64 log-softmax for stability)."""
    x = logits[:-1].astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(x).sum(axis=-1))
    target = x[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float((logz - target).sum())


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def torch_next_logprobs(model, prompts: list[list[int]]) -> np.ndarray:
    """log p(next token) after each prompt [P, V]: for a chat prompt, the answer's first token."""
    import torch

    model.eval()
    with torch.inference_mode():
        return np.stack([_log_softmax(model(torch.tensor([ids])).logits[0, -1].float().numpy()) for ids in prompts])


def onnx_next_logprobs(folder: Path, prompts: list[list[int]], *, threads: int | None = None) -> np.ndarray:
    lm = OnnxLM(folder, threads=threads)
    return np.stack([_log_softmax(lm.logits(ids)[-1]) for ids in prompts])


def next_token_drift(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(mean KL(reference || other), share of prompts whose greedy next token is unchanged)."""
    kl = (np.exp(reference) * (reference - other)).sum(axis=-1)
    same = reference.argmax(axis=-1) == other.argmax(axis=-1)
    return float(kl.mean()), float(same.mean())


def torch_perplexity(model, windows: list[list[int]]) -> float:
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for ids in windows:
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            total += _nll_sum(logits, ids)
            count += len(ids) - 1
    return math.exp(total / count)


class OnnxLM:
    """One full-sequence forward pass of an optimum-exported causal LM (empty KV cache)."""

    def __init__(self, folder: Path, *, threads: int | None = None):
        from services.lib.mlkit.onnx_export import load_onnx_session

        folder = Path(folder)
        self.session = load_onnx_session(folder / "model.onnx", providers=["CPUExecutionProvider"],
                                         threads=threads)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or heads
        self.head_dim = config.get("head_dim") or config["hidden_size"] // heads
        self.inputs = {i.name: i for i in self.session.get_inputs()}

    def logits(self, ids: list[int]) -> np.ndarray:
        n = len(ids)
        feed: dict[str, np.ndarray] = {"input_ids": np.asarray([ids], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones((1, n), dtype=np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.arange(n, dtype=np.int64)[None]
        for name, arg in self.inputs.items():
            if name.startswith("past_key_values"):
                dtype = np.float16 if "float16" in arg.type else np.float32
                feed[name] = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=dtype)
        return self.session.run(["logits"], feed)[0][0]


def onnx_perplexity(folder: Path, windows: list[list[int]], *, threads: int | None = None) -> float:
    lm = OnnxLM(folder, threads=threads)
    total, count = 0.0, 0
    for ids in windows:
        total += _nll_sum(lm.logits(ids), ids)
        count += len(ids) - 1
    return math.exp(total / count)

