"""Log-probabilities of generated tokens, as OpenAI's ``logprobs``/``top_logprobs`` report them.

Which distribution: the raw model's, ``log_softmax`` of the logits before penalties, temperature,
top-k/top-p and grammar masks. That is vLLM's default (``logprobs_mode="raw_logprobs"``): the numbers
score the text under the model itself, so they sum to the sequence's log-likelihood whatever the
sampling settings were, and the same tokens get the same numbers on every path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_TOP_LOGPROBS = 20          # OpenAI's bound for top_logprobs
FLOOR = -9999.0                # what OpenAI reports for a probability that rounds to zero (JSON has no -inf)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its log-probability and the ``top`` most likely alternatives, best first."""
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """``token``'s log-probability under the raw distribution of one row of logits, and the ``top`` best."""
    x = logits.astype(np.float64)
    m = x.max()
    logz = m + np.log(np.exp(x - m).sum())
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        k = min(top, len(x))
        ids = np.argpartition(-x, k - 1)[:k]
        ids = ids[np.argsort(-x[ids], kind="stable")]
        best = tuple((int(i), _finite(x[i] - logz)) for i in ids)
    return TokenLogprob(token, _finite(x[token] - logz), best)


def _finite(value: float) -> float:
    return max(float(value), FLOOR)


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte-to-character map (GPT-2, Qwen2, SmolLM2 vocabularies)."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


class TokenText:
    """What a token id is in a response: its text and its UTF-8 bytes (a token may hold part of a
    character: its text then shows U+FFFD, its bytes are exact). Cached per id; use from one thread."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token)
        if hit is None:
            raw = self.token_bytes(token)
            hit = self._cache[token] = (raw.decode("utf-8", errors="replace"), list(raw))
        return hit

    def token_bytes(self, token: int) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token) if token < len(self._tokenizer) else None
        if not piece:
            return b""   # a padding row of the logits beyond the vocabulary
        decoder = _byte_decoder()
        if all(c in decoder for c in piece):
            return bytes(decoder[c] for c in piece)
        fallback = _BYTE_FALLBACK.match(piece)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        return piece.replace("\u2581", " ").encode()   # SentencePiece marks a leading space with U+2581

    def content(self, entries: list[TokenLogprob]) -> list[dict]:
        """OpenAI's ``logprobs.content`` list for these tokens."""
        out = []
        for entry in entries:
            text, raw = self(entry.token)
            top = []
            for token, logprob in entry.top:
                t, b = self(token)
                top.append({"token": t, "logprob": logprob, "bytes": b})
            out.append({"token": text, "logprob": entry.logprob, "bytes": raw, "top_logprobs": top})
        return out
