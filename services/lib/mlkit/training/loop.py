"""The training loop run by every rank (one process for world_size 1, or each of the spawned ranks).

Iteration = one optimizer step over ``global_batch_size`` samples. The loss is the mean over all
target tokens of the global batch: each micro-batch adds its summed token loss divided by the
global token count, so accumulation and data parallelism give the same update as one big batch.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.lib.mlkit.training import checkpoint as ckpt
from services.lib.mlkit.training.config import TrainConfig, TrainResult, checkpoint_iterations, iterations_per_epoch
from services.lib.mlkit.training.data import Encoded, epoch_order, split_global_batch
from services.lib.mlkit.training.modeling import LossModule, load_model

FINAL_DIR = "final"


@dataclass
class Hooks:
    """The caller's callbacks, invoked on rank 0 only."""

    on_log: Callable[[dict], None]
    on_checkpoint: Callable[[int, Path], None]
    should_stop: Callable[[], bool]


class Comm:
    """Collectives of one iteration; the single-process version does no communication."""

    rank = 0
    world_size = 1

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def gather_stats(self, stats: torch.Tensor) -> torch.Tensor:
        """(world_size, k) rows of every rank's per-iteration figures."""
        return stats.unsqueeze(0)

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        return flag

    def gather_objects(self, obj) -> list:
        return [obj]


@dataclass
class RunInputs:
    model_dir: Path
    encoded: list[Encoded]
    config: TrainConfig
    output_dir: Path
    resume_from: Path | None
    fingerprint: str
    device: str


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: str) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            # Norm scales and biases are not decayed (the usual AdamW practice).
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW (one kernel over all tensors) exists for CPU and CUDA fp32.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate, fused=True)


def _scheduler(optimizer, config: TrainConfig, total: int):
    from transformers import get_scheduler

    return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * total),
                         num_training_steps=total)


def _collate(samples: list[Encoded], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sample of this micro-batch (not to max_seq_len)."""
    width = max(len(s.ids) for s in samples)
    ids = np.full((len(samples), width), pad_id, dtype=np.int64)
    targets = np.zeros((len(samples), width), dtype=bool)
    for row, s in enumerate(samples):
        ids[row, : len(s.ids)] = s.ids
        targets[row, : len(s.ids)] = s.target
    return torch.from_numpy(ids).to(device), torch.from_numpy(targets).to(device)


def run(inputs: RunInputs, *, comm: Comm, hooks: Hooks | None) -> TrainResult:
    from transformers import AutoTokenizer

    cfg, data, rank, world = inputs.config, inputs.encoded, comm.rank, comm.world_size
    n = len(data)
    per_epoch = iterations_per_epoch(n, cfg.global_batch_size)
    total = per_epoch * cfg.epochs
    saves = set(checkpoint_iterations(total, cfg.checkpoint_count))
    lengths = [len(s.ids) for s in data]

    state = ckpt.load_state(inputs.resume_from) if inputs.resume_from else None
    model = load_model(inputs.model_dir, cfg, resume_from=inputs.resume_from, device=inputs.device)
    tokenizer = AutoTokenizer.from_pretrained(inputs.model_dir) if rank == 0 else None
    pad_id = (tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0)
    optimizer = _optimizer(model, cfg, inputs.device)
    scheduler = _scheduler(optimizer, cfg, total)
    torch.manual_seed(cfg.seed * 7919 + rank)     # dropout stream: differs per rank, fixed per seed
    start = saved = 0
    orders: dict[int, list[int]] = {}
    last_checkpoint: Path | None = None
    if state is not None:
        optimizer.load_state_dict(ckpt.load_tensors(inputs.resume_from / "optimizer.pt"))
        scheduler.load_state_dict(ckpt.load_tensors(inputs.resume_from / "scheduler.pt"))
        rng = ckpt.load_rng(inputs.resume_from, rank)
        if rng is not None:
            ckpt.set_rng_state(rng, inputs.device)
        start = saved = state.iteration
        last_checkpoint = inputs.resume_from
        orders[state.epoch] = state.order
    module = comm.wrap(LossModule(model))
    trainable = [p for p in model.parameters() if p.requires_grad]

    def order_of(epoch: int) -> list[int]:
        if epoch not in orders:
            orders[epoch] = epoch_order(n, seed=cfg.seed, epoch=epoch)
        return orders[epoch]

    def save(iteration: int, loss: float | None) -> Path | None:
        nonlocal saved
        saved = iteration
        rngs = comm.gather_objects(ckpt.rng_state(inputs.device))
        if rank != 0:
            return None
        epoch, step = divmod(iteration, per_epoch)
        trainer_state = ckpt.TrainerState(
            iteration=iteration, total_iterations=total, epoch=epoch, step_in_epoch=step,
            order=order_of(epoch) if iteration < total else [], tune_type=cfg.tune_type, num_samples=n,
            global_batch_size=cfg.global_batch_size, epochs=cfg.epochs, seed=cfg.seed,
            data_fingerprint=inputs.fingerprint, world_size=world, last_loss=loss,
            settings={"learning_rate": cfg.learning_rate, "lr_scheduler": cfg.lr_scheduler,
                      "micro_batch_size": cfg.micro_batch_size, "max_seq_len": cfg.max_seq_len})
        folder = ckpt.save(inputs.output_dir / ckpt.folder_name(iteration), model=model, tokenizer=tokenizer,
                           optimizer=optimizer, scheduler=scheduler, state=trainer_state, rng_states=rngs)
        hooks.on_checkpoint(iteration, folder)
        return folder

    losses: list[float] = []
    iteration, stopped = start, False
    while iteration < total:
        if comm.agree(bool(hooks.should_stop()) if rank == 0 else False):
            stopped = True
            break
        tick = time.perf_counter()
        epoch, step = divmod(iteration, per_epoch)
        batch = order_of(epoch)[step * cfg.global_batch_size:(step + 1) * cfg.global_batch_size]
        n_targets = sum(data[i].n_targets for i in batch)
        # Scale so that DDP's gradient averaging over ranks yields the global per-token mean.
        scale = world / max(n_targets, 1)
        micro = split_global_batch(batch, lengths, world_size=world,
                                   micro_batch_size=cfg.micro_batch_size)[rank]
        loss_sum = torch.zeros((), dtype=torch.float64)
        in_tokens, widest = 0, 0
        if not micro:     # a short last batch left this rank nothing: join the gradient sync with a no-op
            ids = torch.zeros((1, 2), dtype=torch.long, device=inputs.device)
            (module(ids, torch.zeros_like(ids, dtype=torch.bool)) * 0.0).backward()
        for k, group in enumerate(micro):
            ids, targets = _collate([data[i] for i in group], pad_id, inputs.device)
            sync = k == len(micro) - 1
            with (nullcontext() if sync or not hasattr(module, "no_sync") else module.no_sync()):
                part = module(ids, targets)
                (part * scale).backward()
            loss_sum += part.detach().double().cpu()
            in_tokens += sum(len(data[i].ids) for i in group)
            widest = max(widest, ids.shape[1])
        grad_norm = (torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm).item()
                     if cfg.max_grad_norm is not None else None)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stats = comm.gather_stats(torch.tensor([loss_sum.item(), in_tokens, widest], dtype=torch.float64))
        iteration += 1
        loss = float(stats[:, 0].sum()) / max(n_targets, 1)
        losses.append(loss)
        elapsed = time.perf_counter() - tick
        if rank == 0:
            rank_tokens = [int(t) for t in stats[:, 1].tolist()]
            hooks.on_log({
                "iteration": iteration, "total_iterations": total, "lm_loss": loss,
                "elapsed_time_per_iteration_s": elapsed, "global_batch_size": cfg.global_batch_size,
                "samples": len(batch), "consumed_samples": epoch * n + step * cfg.global_batch_size + len(batch),
                "seq_len": int(stats[:, 2].max()),
                "tokens_per_sec_per_card": sum(rank_tokens) / elapsed / world,
                "learning_rate": lr, "epoch": epoch + 1, "epochs": cfg.epochs, "grad_norm": grad_norm,
                "target_tokens": n_targets, "tokens": sum(rank_tokens), "rank_tokens": rank_tokens,
                "world_size": world,
            })
        if iteration in saves:
            last_checkpoint = save(iteration, loss) or last_checkpoint
    if stopped and iteration > saved:      # every rank takes this branch alike (collective inside)
        last_checkpoint = save(iteration, losses[-1] if losses else None) or last_checkpoint
    final_dir = None
    if not stopped and rank == 0 and last_checkpoint is not None:
        final_dir = ckpt.export_final(last_checkpoint, inputs.output_dir / FINAL_DIR)
    return TrainResult(iterations_done=iteration, final_loss=losses[-1] if losses else (state.last_loss if state else None),
                       stopped=stopped, last_checkpoint=last_checkpoint, final_dir=final_dir,
                       total_iterations=total, losses=losses)


def resolve_device(config: TrainConfig) -> str:
    if config.device:
        return config.device
    return "cuda" if config.world_size == 1 and torch.cuda.is_available() else "cpu"


