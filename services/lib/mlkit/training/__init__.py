"""Model training for the tuning service: full fine-tuning, LoRA and continued pretraining.

Public interface (agreed with services/tuning): TrainConfig, TrainResult, total_iterations,
train, merge_lora, log_line. Modules: config (settings, iteration arithmetic), data (chat
template rendering, answer-only targets, sample order), modeling (model + LoRA, loss), loop
(one rank's iterations), checkpoint (atomic folders, exact resume), distributed (gloo ranks),
logs (Megatron-style lines).
"""
from services.lib.mlkit.training.api import merge_lora, train
from services.lib.mlkit.training.config import TrainConfig, TrainResult, checkpoint_iterations, total_iterations
from services.lib.mlkit.training.logs import log_line

__all__ = ["TrainConfig", "TrainResult", "checkpoint_iterations", "log_line", "merge_lora", "total_iterations",
           "train"]
