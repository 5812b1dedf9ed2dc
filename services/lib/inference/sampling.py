"""Next-token choice from one row of logits: penalties, temperature, top-k, top-p, seeded draws.

numpy on the host, one sequence at a time: the vocabulary is ~50k, so each operation is tens of
microseconds, small next to a decode step. Full sorts are avoided (they cost milliseconds).
"""
from __future__ import annotations

import numpy as np

from services.lib.inference.params import SamplingParams

_NUCLEUS_GUESS = 256   # candidates tried first for top-p; most nuclei are far smaller


class TokenHistory:
    """Per-sequence counts that the penalties need (vLLM semantics).

    presence/frequency penalties look at the generated tokens only; the repetition penalty at the
    prompt and the generated tokens.
    """

    def __init__(self, vocab_size: int, prompt_ids: np.ndarray | None = None):
        self.counts = np.zeros(vocab_size, dtype=np.int32)
        self.seen = np.zeros(vocab_size, dtype=bool)
        if prompt_ids is not None and len(prompt_ids):
            self.seen[np.asarray(prompt_ids, dtype=np.int64) % vocab_size] = True

    def add(self, token: int) -> None:
        if token < len(self.counts):
            self.counts[token] += 1
            self.seen[token] = True

    def copy(self) -> TokenHistory:
        other = TokenHistory.__new__(TokenHistory)
        other.counts, other.seen = self.counts.copy(), self.seen.copy()
        return other


def apply_penalties(logits: np.ndarray, history: TokenHistory, params: SamplingParams) -> np.ndarray:
    """Penalised copy of ``logits`` (a (V,) float32 row; the input stays untouched)."""
    x = logits.astype(np.float32, copy=True)
    n = min(len(x), len(history.counts))
    if params.repetition_penalty != 1.0:
        seen = history.seen[:n]
        vals = x[:n][seen]
        x[:n][seen] = np.where(vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty)
    if params.frequency_penalty:
        x[:n] -= params.frequency_penalty * history.counts[:n]
    if params.presence_penalty:
        x[:n] -= params.presence_penalty * (history.counts[:n] > 0)
    return x


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _candidates(x: np.ndarray, top_k: int, top_p: float) -> tuple[np.ndarray | None, np.ndarray]:
    """(token ids or None for the whole vocabulary, unnormalised probabilities) after top-k/top-p."""
    ids = None
    vals = x
    if 0 < top_k < len(x):
        ids = np.argpartition(-x, top_k - 1)[:top_k]
        vals = x[ids]
    probs = np.exp(vals.astype(np.float64) - vals.max())
    if top_p >= 1.0:
        return ids, probs
    total = probs.sum()
    # The nucleus is usually small: find a top-K set holding mass p (K growing 4x at a time, each
    # try a linear-time partition) and sort only that, instead of sorting the whole vocabulary.
    guess = np.arange(len(probs))
    k = _NUCLEUS_GUESS
    while k < len(probs):
        top = np.argpartition(-probs, k - 1)[:k]
        if probs[top].sum() >= top_p * total:
            guess = top
            break
        k *= 4
    order = guess[np.argsort(-probs[guess], kind="stable")]
    cum = np.cumsum(probs[order]) / total
    keep = int(np.searchsorted(cum, top_p, side="left")) + 1   # includes the token that crosses p
    order = order[:keep]
    ids = order if ids is None else ids[order]
    return ids, probs[order]


def choose_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
                 *, want_logprob: bool = False) -> tuple[int, float]:
    """(token, log-probability under the sampling distribution; 0.0 unless ``want_logprob``)."""
    if params.greedy:
        token = int(np.argmax(logits))
        return token, float(log_softmax(logits)[token]) if want_logprob else 0.0
    x = logits / np.float32(params.temperature)
    ids, probs = _candidates(x, params.top_k, params.top_p)
    cum = np.cumsum(probs)
    pick = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    pick = min(pick, len(cum) - 1)
    token = int(ids[pick]) if ids is not None else pick
    logprob = float(np.log(probs[pick] / cum[-1])) if want_logprob else 0.0
    return token, logprob


def make_rngs(seed: int | None, count: int) -> list[np.random.Generator]:
    """Independent generators per sequence; the same seed gives the same streams."""
    root = np.random.SeedSequence(None if seed is None else seed & 0xFFFF_FFFF_FFFF_FFFF)
    return [np.random.default_rng(s) for s in root.spawn(count)]
