#!/usr/bin/env python
"""Cluster mode vs the local default, same machine, same run.

    .venv/bin/python benchmarks/bench_cluster.py [--jobs N] [--starts N] [--iterations N] [--threads T]

A real multi-node Ray cluster is started in this machine (``ray.cluster_utils.Cluster``: a head
without CPUs and two 1-CPU nodes of one pool, bound to 127.0.0.1), then:

* **scheduling overhead per job**: ``--jobs`` short work items (the executor test's ``echo``: one
  log message, a return value) run one after another through ``RayExecutor`` (a task on a node of
  the pool, its messages through a mailbox actor) and through ``LocalProcessExecutor`` (a fresh
  child process each, as compression and tuning jobs run). Median seconds from ``run`` to result.
* **deploy to ready**: ``--starts`` instances of the tiny model, one after another, through
  ``RayInstanceBackend`` (a detached actor on a node of the pool, the inference server its child)
  and through ``LocalProcessBackend`` (a subprocess), both from the same prepared model folder with
  its ONNX export (a warm-up start makes it first, as the first instance of a model does). Median
  seconds from ``start`` to the first ``/health`` 200, the way the deployer waits. Downloading the
  weights from object storage is the same for both and not part of the figure.
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

from contracts import new_id  # noqa: E402
from services.lib.common.cluster import RayCluster, Resources  # noqa: E402
from services.lib.common.settings import Settings  # noqa: E402
from services.deployer.backend import Health, InstanceLaunch  # noqa: E402
from services.deployer.local import LocalProcessBackend  # noqa: E402
from services.deployer.ray_backend import RayInstanceBackend  # noqa: E402
from services.lib.jobs.executor import Placement, Work  # noqa: E402
from services.lib.jobs.local_process import LocalProcessExecutor  # noqa: E402
from services.lib.jobs.ray_executor import RayExecutor  # noqa: E402
from services.lib.mlkit.tiny import build_tiny_model  # noqa: E402
from services.lib.mlkit.training import TrainConfig, train  # noqa: E402
from services.lib.mlkit.training.ray_ranks import RayPlacement  # noqa: E402
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


class PreparedFolder:
    """The deployer's model cache reduced to one folder already on disk (what a start reads)."""

    def __init__(self, folder: Path):
        self.folder = folder

    async def prepare(self, model_uri: str) -> Path:
        return self.folder

    async def publish_exports(self, model_uri: str) -> int:
        return 0


async def ready_seconds(backend, starts: int) -> list[float]:
    times = []
    for _ in range(starts):
        launch = InstanceLaunch(instance_id=new_id(), service_id="bench", served_model_name="tiny",
                                model_uri="s3://bench/tiny/", max_model_len=256, secret=new_id(), cpus=1, pool=POOL)
        started = time.perf_counter()
        handle = await backend.start(launch)
        while (health := await backend.health(handle)) is Health.not_ready:
            await asyncio.sleep(0.05)
        if health is not Health.ready:
            raise RuntimeError(f"the instance exited; its log: {await backend.read_logs(handle, offset=0)}")
        times.append(time.perf_counter() - started)
        await backend.stop(handle, grace_seconds=10)
    return times


async def deploy_figures(cluster: MiniCluster, folder: Path, model: Path, starts: int) -> dict:
    models = PreparedFolder(model)
    local = LocalProcessBackend(root=folder / "local-deployer", models=models)
    on_ray = RayInstanceBackend(RayCluster(Settings(ray_address=cluster.address)), root=folder / "ray-deployer",
                                models=models, host="127.0.0.1")
    try:
        await ready_seconds(local, 1)             # the model's first start writes its ONNX export
        await ready_seconds(on_ray, 1)            # the nodes' first actor workers
        ray_s = await ready_seconds(on_ray, starts)
        local_s = await ready_seconds(local, starts)
    finally:
        await local.close()
        await on_ray.close()
    return {"ray_median": statistics.median(ray_s), "local_median": statistics.median(local_s),
            "ratio": statistics.median(ray_s) / statistics.median(local_s), "starts": starts}


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
    parser.add_argument("--starts", type=int, default=5)
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
            step(f"deploy to ready: {args.starts} instances on each backend")
            figures["ready_seconds"] = asyncio.run(deploy_figures(cluster, folder, model, args.starts))
            step(f"ready: ray {figures['ready_seconds']['ray_median']:.2f} s, local "
                 f"{figures['ready_seconds']['local_median']:.2f} s, ratio {figures['ready_seconds']['ratio']:.2f}x")
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
