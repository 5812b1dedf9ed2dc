"""Training settings, the result of a run, and the iteration arithmetic of the guide (chapter 6)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

TUNE_TYPES = ("full", "lora", "pretrain")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class TrainConfig:
    """What one training run does.

    ``global_batch_size`` samples make one iteration (one optimizer step); they are split into
    ``world_size`` data-parallel ranks and, on each rank, into micro-batches of
    ``micro_batch_size`` whose gradients are accumulated: global = micro x accumulation x world.
    """

    tune_type: str
    learning_rate: float = 2e-5
    epochs: int = 1
    global_batch_size: int = 32
    micro_batch_size: int | None = None     # None: the largest divisor of global/world that is <= 4
    max_seq_len: int = 1024
    checkpoint_count: int = 1
    seed: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | str = DEFAULT_LORA_TARGETS   # or "all-linear"
    world_size: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    # Optional knobs beyond the agreed interface.
    lr_scheduler: str = "linear"
    max_grad_norm: float | None = 1.0        # Megatron's clip-grad default; None disables clipping
    num_threads: int | None = None           # None: keep torch's setting (split between ranks if > 1)
    device: str | None = None                # None: "cuda" when available and world_size == 1, else "cpu"
    dist_timeout_s: float = 1800.0           # a collective waiting longer than this fails the run
    # world_size 1 runs in the caller's process unless isolated. torch's RNG (LoRA dropout) and
    # thread count are process-wide: a service running several trainings at once in threads should
    # isolate them, or a resume is no longer bit-exact and the runs fight over threads.
    isolate: bool = False

    def __post_init__(self) -> None:
        self.lora_target_modules = (self.lora_target_modules if isinstance(self.lora_target_modules, str)
                                    else tuple(self.lora_target_modules))
        _check(self.tune_type in TUNE_TYPES, "tune_type", f"must be one of {', '.join(TUNE_TYPES)}")
        _check(self.learning_rate >= 0 and math.isfinite(self.learning_rate), "learning_rate",
               "must be a finite number >= 0")
        for name in ("epochs", "global_batch_size", "max_seq_len", "checkpoint_count", "world_size",
                     "lora_rank"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, name, "must be an integer >= 1")
        _check(self.max_seq_len >= 2, "max_seq_len", "must be >= 2 (a token and its successor)")
        _check(self.lora_alpha > 0, "lora_alpha", "must be > 0")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        _check(0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.lr_scheduler in SCHEDULERS, "lr_scheduler", f"must be one of {', '.join(SCHEDULERS)}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0 or None")
        _check(self.num_threads is None or self.num_threads >= 1, "num_threads", "must be >= 1 or None")
        _check(self.world_size == 1 or not (self.device or "cpu").startswith("cuda"), "device",
               "data-parallel training (world_size > 1) runs on CPU with gloo; use world_size 1 on a GPU")
        _check(bool(self.lora_target_modules), "lora_target_modules", "must name at least one module")
        per_rank, rem = divmod(self.global_batch_size, self.world_size)
        _check(rem == 0, "global_batch_size",
               f"must be a multiple of world_size ({self.world_size}); got {self.global_batch_size}")
        if self.micro_batch_size is None:
            self.micro_batch_size = max(d for d in range(1, min(per_rank, 4) + 1) if per_rank % d == 0)
        _check(isinstance(self.micro_batch_size, int) and self.micro_batch_size >= 1, "micro_batch_size",
               "must be an integer >= 1")
        _check(per_rank % self.micro_batch_size == 0, "micro_batch_size",
               f"global_batch_size ({self.global_batch_size}) must equal micro_batch_size "
               f"({self.micro_batch_size}) x gradient accumulation x world_size ({self.world_size})")

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.world_size)

    @property
    def is_lora(self) -> bool:
        return self.tune_type == "lora"


@dataclass
class TrainResult:
    iterations_done: int                 # the global iteration reached (counts those before a resume)
    final_loss: float | None             # lm loss of the last iteration run (None: none ran)
    stopped: bool                        # should_stop() ended the run early
    last_checkpoint: Path | None         # newest complete checkpoint folder
    final_dir: Path | None               # HF folder: full weights, or the LoRA adapter; None if stopped
    total_iterations: int = 0
    losses: list[float] = field(default_factory=list)   # lm loss of every iteration run in this call
    rank_nodes: list[str] = field(default_factory=list)  # the cluster node of each rank (Ray), in rank order


def _check(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {rule}")


def iterations_per_epoch(num_samples: int, global_batch_size: int) -> int:
    return math.ceil(num_samples / global_batch_size)


def total_iterations(num_samples: int, config: TrainConfig) -> int:
    """The guide's formula: iterations for one pass over the data x epochs (a partial last batch counts)."""
    if num_samples < 1:
        raise ValueError("examples: must contain at least one sample")
    return iterations_per_epoch(num_samples, config.global_batch_size) * config.epochs


def checkpoint_iterations(total: int, count: int) -> list[int]:
    """``count`` evenly spaced iterations in 1..total, the last one being ``total``."""
    if not 1 <= count <= total:
        raise ValueError(f"checkpoint_count: must be between 1 and the number of iterations ({total}); got {count}")
    return sorted({max(1, round(total * k / count)) for k in range(1, count + 1)})
