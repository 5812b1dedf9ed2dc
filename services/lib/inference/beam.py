"""Beam search over a group of KV-cache slots (vLLM's use_beam_search semantics).

Width = best_of (default n); each live beam owns a slot. After every step the best ``width``
continuations survive; a continuation whose parent already passed its slot to a sibling gets a
free slot and a copy of the parent's cache. Finished hypotheses (EOS, a stop string, max_tokens)
are ranked by ``cum_logprob / generated_len ** length_penalty``; the best ``n`` are returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.lib.inference.params import SamplingParams
from services.lib.inference.sampling import TokenHistory, apply_penalties, log_softmax
from services.lib.inference.textstream import TextStream


@dataclass
class Beam:
    tokens: list[int]
    cum_logprob: float
    stream: TextStream
    history: TokenHistory | None
    slot: int | None = None
    finish_reason: str | None = None

    def score(self, length_penalty: float) -> float:
        return self.cum_logprob / (max(1, len(self.tokens)) ** length_penalty)


class BeamSearch:
    def __init__(self, *, params: SamplingParams, slots: list[int], root: Beam,
                 eos_ids: frozenset[int]):
        self.params, self.slots, self.eos_ids = params, list(slots), eos_ids
        self.width = params.width
        root.slot = slots[0]
        self.live: list[Beam] = [root]
        self.finished: list[Beam] = []

    @property
    def done(self) -> bool:
        if not self.live:
            return True
        if len(self.finished) < self.width:
            return False
        lp = self.params.length_penalty
        worst_kept = sorted((b.score(lp) for b in self.finished), reverse=True)[self.width - 1]
        return max(b.score(lp) for b in self.live) <= worst_kept

    def step(self, rows: np.ndarray, *, room: int) -> list[tuple[int, int]]:
        """Advance with one logits row per live beam; returns the (src, dst) slot copies to make.

        ``room``: how many more tokens the cache can take after this step.
        """
        params, width = self.params, self.width
        candidates: list[tuple[float, int, int]] = []
        for b_index, (beam, row) in enumerate(zip(self.live, rows)):
            x = apply_penalties(row, beam.history, params) if beam.history is not None else row
            logprobs = log_softmax(x)
            k = min(2 * width, len(logprobs))
            top = np.argpartition(-logprobs, k - 1)[:k]
            candidates += [(beam.cum_logprob + float(logprobs[t]), b_index, int(t)) for t in top]
        candidates.sort(key=lambda c: -c[0])

        survivors: list[Beam] = []
        for rank, (cum, b_index, token) in enumerate(candidates):
            parent = self.live[b_index]
            if token in self.eos_ids and not params.ignore_eos:
                if rank < width:   # as HF: an EOS ranked below the beam width is not a finish
                    self.finished.append(Beam(parent.tokens + [token], cum, parent.stream.copy(),
                                              None, finish_reason="stop"))
                continue
            stream = parent.stream.copy()
            stopped = stream.push(token)
            child = Beam(parent.tokens + [token], cum, stream, None, slot=parent.slot)
            if stopped:
                child.finish_reason = "stop"
            elif len(child.tokens) >= params.max_tokens or room <= 0:
                child.finish_reason = "length"
            if child.finish_reason:
                if rank < width:
                    self.finished.append(child)
                continue
            if parent.history is not None:
                child.history = parent.history.copy()
                child.history.add(token)
            survivors.append(child)
            if len(survivors) == width:
                break
        return self._assign_slots(survivors)

    def _assign_slots(self, survivors: list[Beam]) -> list[tuple[int, int]]:
        # The first child of a parent keeps the parent's slot (its cache is exactly the prefix);
        # further children take slots nobody kept and get a copy.
        claimed: set[int] = set()
        homeless: list[Beam] = []
        for child in survivors:
            if child.slot not in claimed:
                claimed.add(child.slot)
            else:
                homeless.append(child)
        free = [s for s in self.slots if s not in claimed]
        copies = []
        for child in homeless:
            dst = free.pop(0)
            copies.append((child.slot, dst))
            child.slot = dst
        self.live = survivors
        return copies

    def results(self) -> list[Beam]:
        """The best n hypotheses, best first; beams still live count as cut by length."""
        for beam in self.live:
            beam.finish_reason = "length"
        pool = self.finished + self.live
        for beam in pool:
            beam.stream.flush()
        pool.sort(key=lambda b: -b.score(self.params.length_penalty))
        return pool[: self.params.n]
