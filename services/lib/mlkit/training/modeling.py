"""Loading the model to train (full weights or a LoRA adapter on a frozen base) and its loss."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from services.lib.mlkit.training.config import TrainConfig

# Architectures whose ForCausalLM forward is exactly lm_head(decoder(x)) (no logit scaling or
# soft-capping), so the loss may project only the target positions (see LossModule).
_PLAIN_HEAD_TYPES = {"llama", "qwen2", "qwen3", "mistral", "qwen2_moe", "qwen3_moe", "olmo", "olmo2"}


def load_model(model_dir: Path, config: TrainConfig, *, resume_from: Path | None, device: str) -> nn.Module:
    """The trainable model: for full/pretrain every weight, for LoRA only the adapter.

    On resume the weights come from the checkpoint (full) or the adapter does (LoRA), so training
    continues from exactly the saved values.
    """
    from transformers import AutoModelForCausalLM

    from services.lib.mlkit import MODEL_LOADING

    source = resume_from if (resume_from is not None and not config.is_lora) else model_dir
    with MODEL_LOADING:
        # A checkpoint is always written as safetensors: never fall back to a pickled weight file there.
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32,
                                                     use_safetensors=True if source is resume_from else None)
        model.config.use_cache = False          # no KV cache while training
        if config.is_lora:
            model = _with_lora(model, config, resume_from)
    model.to(device)
    model.train()
    return model


def _with_lora(model: nn.Module, config: TrainConfig, resume_from: Path | None) -> nn.Module:
    from peft import LoraConfig, PeftModel, get_peft_model

    if resume_from is not None:
        return PeftModel.from_pretrained(model, resume_from, is_trainable=True)
    targets = config.lora_target_modules
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets if isinstance(targets, str) else list(targets),
                      bias="none", task_type="CAUSAL_LM")
    # The adapter's random init (lora_A) must not depend on what the caller's RNG did before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:
            raise ValueError(f"lora_target_modules: {exc}") from exc


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers ForCausalLM inside ``model`` (itself, or the one a PeftModel wraps)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class LossModule(nn.Module):
    """forward(ids, targets) -> summed cross-entropy over target tokens.

    Why not ``model(labels=...)``: (1) a sum, normalised later by the token count of the whole
    global batch, makes gradient accumulation and data parallelism exactly equal to one big batch;
    (2) for plain-head architectures the vocabulary projection runs only on target positions
    (prompts and padding are skipped), which on a 49k vocabulary is a real share of the step;
    (3) batches are right-padded, so causal attention never lets a real token see padding and no
    attention mask is needed: the fast causal kernel path applies.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        lm = causal_lm(model)
        self._split = (lm.config.model_type in _PLAIN_HEAD_TYPES and callable(getattr(lm, "get_decoder", None))
                       and lm.get_output_embeddings() is not None)
        self._lm = lm

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        sel = targets[:, 1:]                    # position t predicts token t + 1
        gold = ids[:, 1:][sel].long()
        if self._split:
            hidden = self._lm.get_decoder()(input_ids=ids).last_hidden_state
            logits = self._lm.get_output_embeddings()(hidden[:, :-1][sel])
        else:
            logits = self.model(input_ids=ids).logits[:, :-1][sel]
        return F.cross_entropy(logits.float(), gold, reduction="sum")
