#!/usr/bin/env python
"""Tuning-worker step time vs a plain transformers + peft loop, same model / data / settings, same run.

    python benchmarks/bench_training.py [--smollm2] [--iterations N] [--warmup W]

* ``ours``: the whole product path. The platform runs in this process on its own embedded servers
  (gateway, registry, tuning, tuning-worker; uvicorn on a free port). A LoRA job is submitted
  through the REST API and trained by the tuning worker: its training thread next to the event
  loop with lease heartbeats, log flushing to MongoDB, progress events through the outbox and
  Kafka. The step time is the ``elapsed time per iteration`` each log line reports.
* ``baseline``: the loop people write by hand: ``model(input_ids, attention_mask, labels).loss /
  accumulation``, backward, clip, AdamW, linear schedule, on a peft LoRA model with the same rank,
  alpha, dropout and target modules, fed exactly the micro-batches of the job (same samples, same
  order, same padding), with the platform idle in the background.

Median step time after ``--warmup`` iterations; the goal is ours / baseline <= 1.10. ``--threads N``
sets torch's intra-op threads on both sides (the worker through ``MAAS_TUNING_NUM_THREADS``). On an
oversubscribed machine use 1: OpenMP teams of 2+ threads then spin at every op's barrier and step
times swing 5-40x from one iteration to the next, which drowns any comparison. Tiny model by
default (per-step overheads dominate); ``--smollm2`` tunes the preset SmolLM2-135M-Instruct
(compute dominates; the preset import runs first, before anything is timed). The last line on
stdout is one JSON object with every figure. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP = re.compile(r"elapsed time per iteration \(ms\): ([0-9.]+)")
LOSS = re.compile(r"lm loss: ([0-9.E+-]+)")


def step(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hold_preset_imports(platform) -> None:
    """The tiny run never uses preset weights: keep the SmolLM2 import from competing for the CPU."""
    from services.lib.catalog.templates import default_catalog
    from services.registry.models import PRESETS

    now = datetime.now(UTC)
    for template in default_catalog():
        if template.preset_weights is not None:
            await platform.mongo[PRESETS].update_one(
                {"_id": template.id}, {"$set": {"status": "importing", "progress": 0.0, "holder": "benchmark",
                                                "lease_until": now + timedelta(days=1), "updated_at": now}},
                upsert=True)


async def wait_for(predicate, *, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout}s")
        await asyncio.sleep(interval)


def baseline_steps(model_dir: Path, examples: list[dict], plan: list[list[list[int]]], *, lr: float,
                   max_seq_len: int, threads: int | None) -> tuple[list[float], list[float]]:
    """The hand-written loop, on the job's micro-batches."""
    if threads:
        torch.set_num_threads(threads)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from services.lib.mlkit.training import TrainConfig
    from services.lib.mlkit.training.data import encode_examples

    cfg = TrainConfig(tune_type="lora", learning_rate=lr, global_batch_size=32, max_seq_len=max_seq_len)
    tok = AutoTokenizer.from_pretrained(model_dir)
    encoded = encode_examples(examples, tok, tune_type="lora", max_seq_len=max_seq_len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                             target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=len(plan))
    times, losses = [], []
    for micro_batches in plan:
        tick = time.perf_counter()
        total = 0.0
        for group in micro_batches:
            samples = [encoded[i] for i in group]
            width = max(len(s.ids) for s in samples)
            ids = torch.full((len(samples), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for row, s in enumerate(samples):
                n = len(s.ids)
                ids[row, :n] = torch.from_numpy(s.ids.astype(np.int64))
                mask[row, :n] = 1
                labels[row, :n] = torch.where(torch.from_numpy(s.target), ids[row, :n], -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / len(micro_batches)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tick)
        losses.append(total)
    return times, losses


def job_plan(examples: list[dict], model_dir: Path, *, iterations: int, max_seq_len: int) -> list:
    """The micro-batches the trainer forms for each iteration (same order, same length grouping)."""
    from transformers import AutoTokenizer

    from services.lib.mlkit.training.data import encode_examples, epoch_order, split_global_batch

    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(e.ids) for e in encode_examples(examples, tok, tune_type="lora", max_seq_len=max_seq_len)]
    order = epoch_order(len(examples), seed=0, epoch=0)
    return [split_global_batch(order[i * 32:(i + 1) * 32], lengths, world_size=1, micro_batch_size=4)[0]
            for i in range(iterations)]


async def run(args, tmp: Path) -> dict:
    import httpx
    import uvicorn

    from services.lib.common.http import server_config
    from services.lib.common.objectstore import ObjectPath
    from services.lib.common.settings import get_settings
    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from tests.toydata import alpaca_rows
    from services.runtime import build_app
    from services.tuning.datasets import parse_dataset

    settings = get_settings().model_copy(update={"work_dir": str(tmp / "work")})
    (tmp / "work").mkdir()
    app = build_app(settings, services="gateway,registry,registry-worker,tuning,tuning-worker")
    platform = app.state.platform
    if not args.smollm2:
        await hold_preset_imports(platform)
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        admin = await ensure_bootstrap_admin(platform)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                     headers={"Authorization": f"Bearer {admin.token}"}) as api:
            bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
            model_dir = tmp / "model"
            if args.smollm2:
                step("waiting for the SmolLM2 preset import (not timed)")

                async def ready():
                    state = (await api.get("/api/v1/templates/smollm2-135m-instruct")).json()["preset_weights"]["state"]
                    if state["status"] == "failed":
                        raise RuntimeError(state)
                    return state["status"] == "ready"
                await wait_for(ready, timeout=1200, interval=2)
                await platform.store.download_prefix(ObjectPath("maas-presets", "smollm2-135m-instruct/"), model_dir)
                source, lr, name = {"template_id": "smollm2-135m-instruct"}, 2e-4, "SmolLM2-135M-Instruct"
            else:
                from services.lib.mlkit.tiny import build_tiny_model

                build_tiny_model(model_dir)
                for file in sorted(model_dir.iterdir()):
                    (await api.put(f"/api/v1/storage/objects/{bucket}/bench-tiny/{file.name}",
                                   content=file.read_bytes())).raise_for_status()
                r = await api.post("/api/v1/models", json={"name": "bench-tiny", "template_id": "qwen2-custom",
                                                           "weights_path": f"{bucket}/bench-tiny",
                                                           "validate_weights": False})
                r.raise_for_status()
                model_id = r.json()["id"]

                async def created():
                    return (await api.get(f"/api/v1/models/{model_id}")).json()["status"] == "created"
                await wait_for(created, timeout=120)
                source, lr, name = {"model_id": model_id}, 2e-3, "tiny qwen2 (200k params)"

            iterations = args.warmup + args.iterations
            rows = alpaca_rows(32 * iterations, seed=1)
            data = "".join(json.dumps(r) + "\n" for r in rows).encode()
            (await api.put(f"/api/v1/storage/objects/{bucket}/bench-data/alpaca.jsonl", content=data)).raise_for_status()
            examples = parse_dataset(data, filename="a.jsonl", dataset_format="alpaca", tune_type="lora",
                                     template_id="qwen2-custom").examples
            times: dict[str, list[float]] = {"ours_worker": [], "trainer_alone": [], "baseline": []}
            losses: dict[str, list[float]] = {}
            walls = []
            w = args.warmup
            for rnd in range(args.rounds):   # alternating, so drift in machine load hits every side
                step(f"round {rnd + 1}: a LoRA job through the API, {iterations} iterations of 32 samples on {name}")
                r = await api.post("/api/v1/tuning-jobs", json={
                    "name": f"bench-{rnd}", "source": source, "tune_type": "lora",
                    "output_model_name": f"bench-out-{rnd}", "dataset_format": "alpaca",
                    "dataset_path": f"{bucket}/bench-data/alpaca.jsonl",
                    "hyperparameters": {"epochs": 1, "learning_rate": lr, "checkpoint_count": 1}})
                r.raise_for_status()
                job = r.json()
                t_submit = time.perf_counter()

                async def finished():
                    doc = (await api.get(f"/api/v1/tuning-jobs/{job['id']}")).json()
                    if doc["status"] == "failed":
                        raise RuntimeError(doc["status_message"])
                    return doc if doc["status"] == "completed" else None
                doc = await wait_for(finished, timeout=3600, interval=1)
                walls.append(time.perf_counter() - t_submit)
                lines = [i["line"] for i in (await api.get(f"/api/v1/tuning-jobs/{job['id']}/logs", params={
                    "search": "lm loss", "limit": 5000})).json()["items"]]
                times["ours_worker"] += [float(STEP.search(line).group(1)) / 1000 for line in lines][w:]
                losses["ours_worker"] = [float(LOSS.search(line).group(1)) for line in lines]
                seq = doc["hyperparameters"]["seq_len"]

                step("the trainer alone: services.lib.mlkit.training.train() in a thread of this process")
                alone = await asyncio.to_thread(trainer_alone, model_dir, examples, lr=lr, max_seq_len=seq,
                                                threads=args.threads, out=tmp / f"alone{rnd}")
                times["trainer_alone"] += [r["elapsed_time_per_iteration_s"] for r in alone][w:]
                losses["trainer_alone"] = [r["lm_loss"] for r in alone]

                step("the plain transformers + peft loop on the same micro-batches")
                plan = job_plan(examples, model_dir, iterations=iterations, max_seq_len=seq)
                base, base_loss = await asyncio.to_thread(baseline_steps, model_dir, examples, plan, lr=lr,
                                                          max_seq_len=seq, threads=args.threads)
                times["baseline"] += base[w:]
                losses["baseline"] = base_loss
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)

    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "tune": "lora", "global_batch": 32, "micro_batch": 4, "rounds": args.rounds,
            "iterations_measured_per_side": len(times["ours_worker"]),
            "torch_threads": args.threads or torch.get_num_threads(),
            "load_average_start_end": [round(args.load_start, 2), round(os.getloadavg()[0], 2)],
            "median_step_ms": {k: round(v * 1000, 1) for k, v in med.items()},
            "mean_step_ms": {k: round(statistics.mean(v) * 1000, 1) for k, v in times.items()},
            "ratio_ours_vs_baseline": round(med["ours_worker"] / med["baseline"], 4),
            "ratio_ours_vs_trainer_alone": round(med["ours_worker"] / med["trainer_alone"], 4),
            "ratio_trainer_alone_vs_baseline": round(med["trainer_alone"] / med["baseline"], 4),
            "job_wall_s": round(statistics.mean(walls), 1),
            "loss_first_last": {k: [round(v[0], 4), round(v[-1], 4)] for k, v in losses.items()}}


def trainer_alone(model_dir: Path, examples: list[dict], *, lr: float, max_seq_len: int, threads: int | None,
                  out: Path) -> list[dict]:
    from services.lib.mlkit.training import TrainConfig, train

    logs: list[dict] = []
    train(model_dir=model_dir, examples=examples, output_dir=out, on_log=logs.append,
          config=TrainConfig(tune_type="lora", learning_rate=lr, global_batch_size=32, max_seq_len=max_seq_len,
                             checkpoint_count=1, num_threads=threads))
    return logs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--smollm2", action="store_true", help="tune the preset SmolLM2-135M-Instruct")
    ap.add_argument("--iterations", type=int, default=None, help="measured iterations (default 10 tiny, 4 SmolLM2)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on both sides")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    args.load_start = os.getloadavg()[0]
    args.iterations = args.iterations or (4 if args.smollm2 else 10)

    from services.lib.common.settings import get_settings
    from services.lib.embedded.servers import EmbeddedServers

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        tmp = Path(tmp)
        servers = EmbeddedServers(tmp / "embedded")
        step("starting embedded servers")
        servers.start(timeout=90)
        saved = dict(os.environ)
        try:
            os.environ.update(servers.settings_env())
            if args.threads:
                os.environ["MAAS_TUNING_NUM_THREADS"] = str(args.threads)
            get_settings.cache_clear()
            result = asyncio.run(run(args, tmp))
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
            servers.stop()
    med, mean = result["median_step_ms"], result["mean_step_ms"]
    print(f"model: {result['model']}   LoRA   global batch 32 = micro batch 4 x 8   torch threads "
          f"{result['torch_threads']}   {result['rounds']} rounds, {result['iterations_measured_per_side']} "
          "measured iterations per side")
    print(f"{'method':<40}{'median step (ms)':>18}{'mean (ms)':>12}")
    for key, label in (("ours_worker", "ours (tuning worker, job via the API)"),
                       ("trainer_alone", "train() alone, same process"),
                       ("baseline", "baseline (transformers + peft loop)")):
        print(f"{label:<40}{med[key]:>18.1f}{mean[key]:>12.1f}")
    print(f"ours / baseline: {result['ratio_ours_vs_baseline']:.3f}   (goal <= 1.10)")
    print(f"ours / train() alone (the worker's own overhead): {result['ratio_ours_vs_trainer_alone']:.3f}")
    print(f"train() alone / baseline: {result['ratio_trainer_alone_vs_baseline']:.3f}")
    print(f"job submit -> completed: {result['job_wall_s']} s (downloads, training, checkpoint, merge, upload)")
    print(f"1-min load average at start / end: {result['load_average_start_end']} on {os.cpu_count()} CPUs")
    print(f"loss first -> last: {result['loss_first_last']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
