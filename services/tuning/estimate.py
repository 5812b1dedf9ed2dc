"""Tuning arithmetic of the guide: iterations (table 6-4) and the duration estimate (tables 6-5, 6-6).

duration (h) = coefficient x iterations / (cards x nodes x throughput) + pre/post-processing time,
coefficient = global batch x sequence length / 3600. Throughput has a low and a high bound, so the
estimate is a range: the high throughput gives the short end.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# Table 6-5: pre/post-processing time by parameter count (billions -> hours); smaller models take
# the smallest figure, sizes in between take the next larger bracket.
PREPOST_HOURS = ((7, 0.15), (14, 0.25), (32, 0.58), (72, 1.35))
LONG_SEQ, SHORT_SEQ = 4096, 1024     # the -1K templates train on 1024-token sequences (global batch 512)


def seq_len_for(global_batch_size: int) -> int:
    return SHORT_SEQ if global_batch_size >= 512 else LONG_SEQ


def iterations(sample_count: int, global_batch_size: int, epochs: int) -> int:
    """Table 6-4: iterations of one pass (a partial last batch counts) x epochs."""
    return math.ceil(sample_count / global_batch_size) * epochs


def prepost_hours(params_billion: float | None) -> float | None:
    if params_billion is None:
        return None
    for limit, hours in PREPOST_HOURS:
        if params_billion <= limit:
            return hours
    return PREPOST_HOURS[-1][1]


@dataclass(frozen=True)
class Estimate:
    min_hours: float
    max_hours: float
    coefficient: float
    iterations: int
    cards: int
    nodes: int
    throughput_low: int
    throughput_high: int
    prepost_hours: float

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(*, params_billion: float | None, throughput: tuple[int, int] | None, global_batch_size: int,
             iterations: int, cards: int, nodes: int) -> Estimate | None:
    """None when the template has no throughput figures or size (custom templates)."""
    prepost = prepost_hours(params_billion)
    if throughput is None or prepost is None:
        return None
    low, high = throughput
    coefficient = global_batch_size * seq_len_for(global_batch_size) / 3600
    per = coefficient * iterations / (cards * nodes)
    return Estimate(min_hours=round(per / high + prepost, 3), max_hours=round(per / low + prepost, 3),
                    coefficient=round(coefficient, 2), iterations=iterations, cards=cards, nodes=nodes,
                    throughput_low=low, throughput_high=high, prepost_hours=prepost)
