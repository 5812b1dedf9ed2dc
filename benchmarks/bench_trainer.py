#!/usr/bin/env python
"""Training-step benchmark: services.lib.mlkit.training.train() vs a plain transformers + peft loop.

    python benchmarks/bench_trainer.py [--smollm2] [--tune lora|full] [--iterations N] [--rounds R]

Both sides train the same model on the same Alpaca-style rows (tests.toydata)
with the same LoRA settings, learning rate, micro batch, accumulation and clipping, in this
process, one after the other, ``--rounds`` times alternating (so drift in machine load hits both).

* ``baseline``: the loop people write by hand: model(input_ids, attention_mask, labels).loss /
  accumulation, backward, clip, AdamW step, scheduler step. It is fed exactly the micro-batches
  our trainer forms (same samples, same padded lengths), so the ratio measures the step itself.
* ``baseline, dataset order``: the same loop with micro-batches cut in the shuffled order without
  our length grouping (more padding): what a plain loop costs on the same global batches.

Step time = wall time of one iteration (collation, forward/backward of every micro-batch,
clipping, optimizer and scheduler), median over the iterations after ``--warmup``. Ours is the
``elapsed_time_per_iteration_s`` that train() reports. CPU time per iteration is printed too: on
a machine shared with other work, wall times swing with the load, while the CPU time of a
single-threaded run (``--threads 1``) still compares the work each side does. The goal is ours / baseline <= 1.10.
Tiny model by default (step overheads dominate); ``--smollm2`` for SmolLM2-135M (compute dominates).
The last line is one JSON object with every figure. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.lib.mlkit.training import TrainConfig, train  # noqa: E402
from services.lib.mlkit.training.data import encode_examples, epoch_order, split_global_batch  # noqa: E402
from tests.toydata import alpaca_messages  # noqa: E402


def _plans(encoded, cfg: TrainConfig, iterations: int) -> tuple[list, list]:
    order = epoch_order(len(encoded), seed=cfg.seed, epoch=0)
    lengths = [len(e.ids) for e in encoded]
    grouped, naive = [], []
    for it in range(iterations):
        batch = order[it * cfg.global_batch_size:(it + 1) * cfg.global_batch_size]
        grouped.append(split_global_batch(batch, lengths, world_size=1, micro_batch_size=cfg.micro_batch_size)[0])
        naive.append([batch[k:k + cfg.micro_batch_size] for k in range(0, len(batch), cfg.micro_batch_size)])
    return grouped, naive


def _hf_batch(samples, pad_id: int):
    width = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), -100, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.ids)
        ids[row, :n] = torch.from_numpy(s.ids.astype(np.int64))
        mask[row, :n] = 1
        labels[row, :n] = torch.where(torch.from_numpy(s.target), ids[row, :n], -100)
    return ids, mask, labels


def baseline(model_dir: Path, encoded, plan, cfg: TrainConfig, pad_id: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_scheduler

    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    if cfg.tune_type == "lora":
        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout,
                                                 target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=len(plan))
    times, cpu, losses = [], [], []
    for micro_batches in plan:
        tick, cpu_tick = time.perf_counter(), time.process_time()
        total = 0.0
        for group in micro_batches:
            ids, mask, labels = _hf_batch([encoded[i] for i in group], pad_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / len(micro_batches)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tick)
        cpu.append(time.process_time() - cpu_tick)
        losses.append(total)
    return times, cpu, losses


def ours(model_dir: Path, rows, cfg: TrainConfig, out: Path):
    logs: list[dict] = []
    marks: list[float] = []

    def on_log(record: dict) -> None:
        # CPU time between consecutive logs = one iteration (plus a negligible callback); the
        # first interval also holds the model load and is dropped with the warm-up iterations.
        marks.append(time.process_time())
        logs.append(record)

    tick = time.perf_counter()
    train(model_dir=model_dir, examples=rows, config=cfg, output_dir=out, on_log=on_log)
    wall = time.perf_counter() - tick
    cpu = [float("nan")] + [b - a for a, b in zip(marks, marks[1:])]
    return [r["elapsed_time_per_iteration_s"] for r in logs], cpu, [r["lm_loss"] for r in logs], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct instead of the tiny model")
    ap.add_argument("--tune", choices=["lora", "full"], default="lora")
    ap.add_argument("--iterations", type=int, default=None, help="measured iterations (default 30 tiny, 6 SmolLM2)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    iterations = args.iterations or (6 if args.smollm2 else 30)

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        tmp = Path(tmp)
        if args.smollm2:
            from services.lib.mlkit.smollm2 import convert_to_hf
            model_dir, name = convert_to_hf(tmp / "smollm2"), "SmolLM2-135M-Instruct"
        else:
            from services.lib.mlkit.tiny import build_tiny_model
            model_dir, name = build_tiny_model(tmp / "tiny"), "tiny qwen2 (200k params)"
        gbs = args.micro_batch * args.accumulation
        steps = args.warmup + iterations
        cfg = TrainConfig(tune_type=args.tune, learning_rate=2e-4 if args.tune == "lora" else 2e-5,
                          global_batch_size=gbs, micro_batch_size=args.micro_batch, max_seq_len=1024)
        rows = alpaca_messages(gbs * steps, seed=1)
        tok = AutoTokenizer.from_pretrained(model_dir)
        encoded = encode_examples(rows, tok, tune_type=cfg.tune_type, max_seq_len=cfg.max_seq_len)
        grouped, naive = _plans(encoded, cfg, steps)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

        keys = ("ours", "baseline", "baseline_dataset_order")
        results: dict[str, list[float]] = {k: [] for k in keys}
        cpu: dict[str, list[float]] = {k: [] for k in keys}
        walls, loss_pairs = [], []
        warm = max(args.warmup, 1)
        for r in range(args.rounds):
            b_times, b_cpu, b_losses = baseline(model_dir, encoded, grouped, cfg, pad_id)
            o_times, o_cpu, o_losses, wall = ours(model_dir, rows, cfg, tmp / f"out{r}")
            results["baseline"] += b_times[warm:]
            cpu["baseline"] += b_cpu[warm:]
            results["ours"] += o_times[warm:]
            cpu["ours"] += o_cpu[warm:]
            walls.append(wall)
            loss_pairs.append((b_losses[-1], o_losses[-1]))
        n_times, n_cpu, _ = baseline(model_dir, encoded, naive, cfg, pad_id)
        results["baseline_dataset_order"] += n_times[warm:]
        cpu["baseline_dataset_order"] += n_cpu[warm:]

    def tokens(plan) -> int:
        return sum(len(encoded[i].ids) for it in plan[args.warmup:] for g in it for i in g)

    def padded(plan) -> int:
        return sum(len(g) * max(len(encoded[i].ids) for i in g) for it in plan[args.warmup:] for g in it)

    med = {k: statistics.median(v) for k, v in results.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = med["ours"] / med["baseline"]
    cpu_ratio = cpu_med["ours"] / cpu_med["baseline"]
    print(f"model: {name}   tune: {args.tune}   micro batch {args.micro_batch} x accumulation {args.accumulation}"
          f" = global batch {gbs}   torch threads {torch.get_num_threads()}   {platform.machine()}")
    print(f"measured iterations per method: {len(results['ours'])} ({args.rounds} rounds, {args.warmup} warm-up each)")
    print(f"real tokens per iteration: {tokens(grouped) / iterations:.0f}; padded tokens per iteration: "
          f"grouped {padded(grouped) / iterations:.0f}, dataset order {padded(naive) / iterations:.0f}")
    print(f"{'method':<28}{'median step (ms)':>18}{'mean (ms)':>12}{'median CPU (ms)':>17}")
    for k, v in results.items():
        print(f"{k:<28}{med[k] * 1000:>18.1f}{statistics.mean(v) * 1000:>12.1f}{cpu_med[k] * 1000:>17.1f}")
    print(f"ours / baseline (same micro-batches): {ratio:.3f} wall, {cpu_ratio:.3f} CPU time   (goal <= 1.10)")
    print(f"ours / baseline in dataset order:     {med['ours'] / med['baseline_dataset_order']:.3f} wall, "
          f"{cpu_med['ours'] / cpu_med['baseline_dataset_order']:.3f} CPU time")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(on a busy machine read the CPU-time ratio, measured with --threads 1)")
    print(f"train() wall time per run incl. load + checkpoint: {statistics.mean(walls):.2f} s")
    print(f"last-iteration loss (baseline, ours) per round: {[(round(a, 4), round(b, 4)) for a, b in loss_pairs]}")
    print(json.dumps({"model": name, "tune": args.tune, "micro_batch": args.micro_batch,
                      "accumulation": args.accumulation, "iterations": len(results["ours"]),
                      "median_step_ms": {k: round(v * 1000, 2) for k, v in med.items()},
                      "median_step_cpu_ms": {k: round(v * 1000, 2) for k, v in cpu_med.items()},
                      "ratio_ours_vs_baseline": round(ratio, 4), "ratio_cpu_ours_vs_baseline": round(cpu_ratio, 4),
                      "ratio_ours_vs_baseline_dataset_order": round(med["ours"] / med["baseline_dataset_order"], 4),
                      "train_wall_s": round(statistics.mean(walls), 2)}))


if __name__ == "__main__":
    main()
