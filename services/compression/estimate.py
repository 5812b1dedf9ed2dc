"""How long a compression job takes (guide table 7-4), shown before submission and stored on the job.

Templates listed in table 7-4 get the guide's figures. Others (the shipped SmolLM2, the any-size
templates) get an estimate scaled from this platform's own CPU measurement
(benchmarks/bench_quantization.py): the work (calibration passes, AWQ's searches, export,
quantization, the two perplexity runs) grows about linearly with the parameter count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from services.compression.models import Strategy

# Table 7-4 in minutes (low, high); None: the strategy is not offered for that model ("-").
TABLE_7_4: dict[str, dict[Strategy, tuple[float, float] | None]] = {
    "llama2-13b": {Strategy.smoothquant_w8a8: (5, 10), Strategy.awq_w4a16: (60, 60)},
    "llama2-70b": {Strategy.smoothquant_w8a8: (20, 30), Strategy.awq_w4a16: (180, 180)},
    "llama2-7b": {Strategy.smoothquant_w8a8: (5, 10), Strategy.awq_w4a16: (40, 40)},
    "llama3-70b": {Strategy.smoothquant_w8a8: (20, 30), Strategy.awq_w4a16: (180, 180)},
    "llama3-8b": {Strategy.smoothquant_w8a8: (5, 10), Strategy.awq_w4a16: (40, 40)},
    "qwen1.5-14b": {Strategy.smoothquant_w8a8: (5, 10), Strategy.awq_w4a16: (60, 60)},
    "qwen1.5-72b": {Strategy.smoothquant_w8a8: (20, 30), Strategy.awq_w4a16: (180, 180)},
    "qwen1.5-7b": {Strategy.smoothquant_w8a8: (5, 10), Strategy.awq_w4a16: (40, 40)},
    "qwen2-72b": {Strategy.smoothquant_w8a8: (20, 30), Strategy.awq_w4a16: None},
    "qwen2-72b-1k": {Strategy.smoothquant_w8a8: (20, 30), Strategy.awq_w4a16: None},
    "qwen2.5-72b": {Strategy.smoothquant_w8a8: (40, 40), Strategy.awq_w4a16: None},
    "qwen2.5-32b": {Strategy.smoothquant_w8a8: (20, 30), Strategy.awq_w4a16: (120, 120)},
}

# Measured on SmolLM2-135M (0.135 B parameters), 2 CPU cores: seconds per billion parameters plus
# a fixed part (model loading, ONNX session start). The range covers a busy and an idle machine.
MEASURED_SECONDS_PER_BILLION: dict[Strategy, tuple[float, float]] = {
    Strategy.smoothquant_w8a8: (700.0, 1400.0),
    Strategy.awq_w4a16: (1500.0, 3000.0),
}
FIXED_SECONDS = (5.0, 15.0)


@dataclass(frozen=True)
class Estimate:
    min_minutes: float
    max_minutes: float
    text: str
    basis: str   # "table 7-4" | "measured"

    def as_dict(self) -> dict:
        return asdict(self)


def _text(low: float, high: float) -> str:
    def one(minutes: float) -> str:
        if minutes >= 60 and minutes % 60 == 0:
            hours = int(minutes // 60)
            return f"{hours} hour{'s' if hours > 1 else ''}"
        return f"{minutes:g}"
    if high < 1:   # not "<1~<1 minutes"
        return "under a minute"
    if low < 1:
        return f"up to {one(high)}" if "hour" in one(high) else f"up to {one(high)} minutes"
    if low == high:
        single = one(low)
        return single if "hour" in single else f"{single} minutes"
    unit_low, unit_high = one(low), one(high)
    if "hour" in unit_low or "hour" in unit_high:
        return f"{unit_low} - {unit_high}"
    return f"{unit_low}~{unit_high} minutes"


def param_count(config: dict) -> int:
    """Parameters of a Llama/Qwen2-style decoder from its config.json (embeddings counted once if tied)."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    inter = config.get("intermediate_size") or 4 * hidden
    vocab = config.get("vocab_size", 0)
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    mlp = 3 * hidden * inter
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings + hidden


def estimate(*, template_id: str, strategy: Strategy, params_billion: float | None) -> Estimate | None:
    """The duration of a job; None when neither the table nor a parameter count is known."""
    row = TABLE_7_4.get(template_id)
    if row is not None and row.get(strategy) is not None:
        low, high = row[strategy]
        return Estimate(min_minutes=low, max_minutes=high, text=_text(low, high), basis="table 7-4")
    if params_billion is None:
        return None
    per_low, per_high = MEASURED_SECONDS_PER_BILLION[strategy]
    low = (FIXED_SECONDS[0] + per_low * params_billion) / 60
    high = (FIXED_SECONDS[1] + per_high * params_billion) / 60
    low, high = max(round(low, 1), 0.1), max(round(high, 1), 0.1)
    return Estimate(min_minutes=low, max_minutes=high, text=_text(low, high), basis="measured")
