#!/usr/bin/env python
"""Cluster mode vs the local default, same machine, same run.

    python benchmarks/bench_cluster.py [--jobs N] [--iterations N] [--threads T]

A real multi-node Ray cluster is started in this machine (``ray.cluster_utils.Cluster``: a head
without CPUs and two 1-CPU nodes of one pool, bound to 127.0.0.1), then:

* **scheduling overhead per job**: ``--jobs`` short work items (the executor test's ``echo``: one
  log message, a return value) run one after another through ``RayExecutor`` (a task on a node of
  the pool, its messages through a mailbox actor) and through ``LocalProcessExecutor`` (a fresh
  child process each, as compression and tuning jobs run). Median seconds from ``run`` to result.
* **training step time, 2 ranks**: the tiny model, LoRA, the same data and seed, ``world_size`` 2 —
  two gloo ranks as local processes vs two Ray tasks on the two nodes. Median ``elapsed time per
  iteration`` after the first two iterations; the goal is Ray / local <= 1.10.

Figures are ratios against the local baseline measured in the same run. The last line on stdout is
one JSON object with every figure. Nothing is asserted. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # every node on 127.0.0.1

from services.common.cluster import RayCluster, Resources  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.jobs.executor import Placement, Work  # noqa: E402
from services.jobs.local_process import LocalProcessExecutor  # noqa: E402
from services.jobs.ray_executor import RayExecutor  # noqa: E402
from services.mlkit.tiny import build_tiny_model  # noqa: E402
from services.mlkit.training import TrainConfig, train  # noqa: E402
from services.mlkit.training.ray_ranks import RayPlacement  # noqa: E402
from tests.ray_cluster import MiniCluster  # noqa: E402
from tests.unit.test_training import chat_rows  # noqa: E402

POOL = "bench"


def step(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


async def per_job_seconds(executor, folder: Path, jobs: int) -> list[float]:
    times = []
    for n in range(jobs):
        work = Work(entry="tests.unit.job_entries:echo", args={"name": f"job-{n}"}, workdir=folder / f"w{n}",
                    placement=Placement(pool=POOL, resources=Resources(cpus=1)))
        started = time.perf_counter()
        await executor.run(work, lambda kind, data: None)
        times.append(time.perf_counter() - started)
    return times


def step_times_ms(folder: Path, model: Path, *, iterations: int, threads: int, placement) -> list[float]:
    logs: list[dict] = []
    config = TrainConfig(tune_type="lora", learning_rate=3e-2, global_batch_size=8, world_size=2,
                         epochs=max(1, iterations * 8 // 32), num_threads=threads, checkpoint_count=1)
    train(model_dir=model, examples=chat_rows(32), config=config, output_dir=folder, on_log=logs.append,
          ray_placement=placement)
    return [r["elapsed_time_per_iteration_s"] * 1000 for r in logs[2:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    step("starting a 3-node Ray cluster in this machine")
    cluster = MiniCluster().start()
    for _ in range(2):
        cluster.add_node(POOL, cpus=1)
    figures: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
            folder = Path(tmp)
            ray_executor = RayExecutor(RayCluster(Settings(ray_address=cluster.address)), entry_package="tests")
            local_executor = LocalProcessExecutor(entry_package="tests")
            asyncio.run(per_job_seconds(ray_executor, folder / "warm", 2))      # the nodes' first workers
            step(f"scheduling: {args.jobs} jobs on each executor")
            ray_s = asyncio.run(per_job_seconds(ray_executor, folder / "ray", args.jobs))
            local_s = asyncio.run(per_job_seconds(local_executor, folder / "local", args.jobs))
            figures["job_seconds"] = {"ray_median": statistics.median(ray_s), "local_median": statistics.median(local_s),
                                      "ratio": statistics.median(ray_s) / statistics.median(local_s)}
            step(f"job: ray {figures['job_seconds']['ray_median']:.3f} s, local "
                 f"{figures['job_seconds']['local_median']:.3f} s, ratio {figures['job_seconds']['ratio']:.2f}x")

            model = build_tiny_model(folder / "tiny")
            step("training: 2 local ranks")
            local_ms = step_times_ms(folder / "t-local", model, iterations=args.iterations, threads=args.threads,
                                     placement=None)
            step("training: 2 ranks on two Ray nodes")
            ray_ms = step_times_ms(folder / "t-ray", model, iterations=args.iterations, threads=args.threads,
                                   placement=RayPlacement(pool=POOL))
            figures["step_ms"] = {"ray_median": statistics.median(ray_ms), "local_median": statistics.median(local_ms),
                                  "ratio": statistics.median(ray_ms) / statistics.median(local_ms), "goal": 1.10,
                                  "iterations": len(ray_ms)}
            step(f"step: ray {figures['step_ms']['ray_median']:.1f} ms, local {figures['step_ms']['local_median']:.1f} ms, "
                 f"ratio {figures['step_ms']['ratio']:.2f}x (goal <= 1.10)")
            ray_executor.close()
            local_executor.close()
    finally:
        cluster.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
