#!/usr/bin/env python
"""Soak (issue 18, item 7): the platform under mixed traffic and jobs for a long while, sampled.

    python benchmarks/soak.py [--minutes 30] [--qps 4] [--sample-seconds 15]

Starts its own embedded servers and the whole platform as one ``maas serve`` process (what is
measured), deploys the tiny model, then for ``--minutes`` sends chat calls at ``--qps`` (Poisson;
streaming, non-streaming and clients that leave mid-stream) while a LoRA tuning job and a compression
job run on the same platform, and samples every ``--sample-seconds``:

- the platform process's RSS and open files (its own, not the servers' or the instance's);
- TCP connections from it to MongoDB and to Kafka;
- event lag: the sum over consumer groups of (end offset − committed offset) of their partitions,
  and the outbox's backlog (events committed with the state, not yet published);
- calls answered, by status, and calls that failed at the client.

Prints the samples as a table, then the drift from the first sample after warm-up to the last
(a leak shows as a slope, not a level), and as the last line on stdout one JSON object. Nothing is
asserted. Not in CI: 30 minutes by default (``--minutes 2`` to try it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_gateway import console, deploy, make_model, step  # noqa: E402
from platform_process import platform_process  # noqa: E402
from rich.table import Table  # noqa: E402

from services.lib.common.bus import end_offsets  # noqa: E402
from services.runtime import SERVICES  # noqa: E402

PROMPT = [{"role": "user", "content": "Hi"}]
# The platform's consumer groups (services' specs), read once: a group committed nothing yet counts 0.
GROUPS = sorted({c.group for spec in SERVICES.values() for c in spec.consumers})


async def traffic(url: str, key: str, model: str, qps: float, until: float, statuses: Counter) -> None:
    """Chat calls at ``qps`` until ``until`` (monotonic); the kinds mixed at random."""
    import httpx

    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=url + "/v1", timeout=120, headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=200)) as client:
        async def one(kind: str) -> None:
            body = {"model": model, "messages": PROMPT, "max_tokens": 16, "stream": kind != "plain"}
            try:
                if kind == "plain":
                    statuses[(await client.post("/chat/completions", json=body)).status_code] += 1
                    return
                async with client.stream("POST", "/chat/completions", json=body) as r:
                    statuses[r.status_code] += 1
                    async for line in r.aiter_lines():
                        if kind == "leave" and line.startswith("data: {"):
                            break
            except Exception as exc:   # noqa: BLE001 - counted, the soak goes on
                statuses[type(exc).__name__] += 1
        tasks: set[asyncio.Task] = set()
        while time.monotonic() < until:
            task = asyncio.create_task(one(rng.choice(("plain", "stream", "leave"))))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(qps))
        await asyncio.gather(*tasks)


async def start_jobs(api, model_id: str) -> list[tuple[str, str]]:
    """A LoRA tuning job long enough to span the soak and a compression job, on the tiny model."""
    me = (await api.get("/api/v1/auth/me")).json()
    rows = [{"instruction": f"Question {i % 8}?", "input": "", "output": f"Answer {i % 8}."} for i in range(256)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (await api.put(f"/api/v1/storage/objects/{me['default_bucket']}/soak/data.jsonl", content=data)).raise_for_status()
    jobs = []
    r = await api.post("/api/v1/tuning-jobs", json={
        "name": "soak-tune", "source": {"model_id": model_id}, "tune_type": "lora", "output_model_name": "soak-tuned",
        "dataset_format": "alpaca", "dataset_path": f"{me['default_bucket']}/soak/data.jsonl",
        "hyperparameters": {"epochs": 200, "learning_rate": 0.01, "checkpoint_count": 10}})
    _ok(r)
    jobs.append(("tuning-jobs", r.json()["id"]))
    r = await api.post("/api/v1/compression-jobs", json={"name": "soak-compress", "source": {"model_id": model_id},
                                                         "strategy": "awq-w4a16", "output_model_name": "soak-awq"})
    _ok(r)
    jobs.append(("compression-jobs", r.json()["id"]))
    return jobs


def _ok(r) -> None:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")


def connections_to(proc, port: int) -> int:
    return sum(1 for c in proc.net_connections(kind="tcp") if c.raddr and c.raddr.port == port)


async def event_lag(bootstrap: str, prefix: str) -> int | None:
    """Σ (end offset − committed offset) over the platform's consumer groups and their partitions;
    None where the broker does not answer the offset requests."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, max_partition_fetch_bytes=1024)
    await probe.start()
    try:
        topics = [t for t in await probe.topics() if t.startswith(prefix + ".")]
        partitions = [TopicPartition(t, p) for t in topics for p in probe.partitions_for_topic(t) or ()]
        ends = await end_offsets(probe, partitions)
    finally:
        await probe.stop()
    lag = 0
    for group in GROUPS:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{prefix}.{group}",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            for tp in partitions:
                committed = await consumer.committed(tp)
                if committed is not None:
                    lag += max(0, ends[tp] - committed)
        except Exception:   # noqa: BLE001 - a broker without OffsetFetch
            return None
        finally:
            await consumer.stop()
    return lag


async def main(args) -> dict:
    import psutil

    from services.lib.common.context import Platform
    from services.lib.common.outbox import OUTBOX

    samples: list[dict] = []
    statuses: Counter = Counter()
    async with platform_process("soak-") as running:
        api, servers, settings = running.api, running.servers, running.settings
        folder = await asyncio.to_thread(make_model, "tiny", running.work)
        step("deploying the tiny model")
        service, key = await deploy(api, None, folder, "tiny")
        jobs = await start_jobs(api, service["model_id"])
        proc = psutil.Process(running.proc.pid)
        outbox = Platform.connect(settings).mongo[OUTBOX]
        until = time.monotonic() + args.minutes * 60
        step(f"soaking for {args.minutes} min at {args.qps} calls/s, sampling every {args.sample_seconds} s")
        load = asyncio.create_task(traffic(running.url, key, service["name"], args.qps, until, statuses))
        start = time.monotonic()
        while time.monotonic() < until:
            await asyncio.sleep(args.sample_seconds)
            states = [(await api.get(f"/api/v1/{kind}/{jid}")).json()["status"] for kind, jid in jobs]
            samples.append({
                "t_s": round(time.monotonic() - start), "rss_mib": proc.memory_info().rss >> 20,
                "open_files": proc.num_fds(), "mongo_conns": connections_to(proc, servers.ports["mongo"]),
                "kafka_conns": connections_to(proc, servers.ports["kafka"]),
                "event_lag": await event_lag(servers.kafka_bootstrap, settings.topic_prefix),
                "outbox_backlog": await outbox.count_documents({"published": False}),
                "calls": sum(statuses.values()), "non_200": sum(v for k, v in statuses.items() if k != 200),
                "jobs": "/".join(states)})
            console.print(samples[-1])
        await load

    table = Table(title=f"soak: {args.minutes} min at {args.qps} calls/s with a tuning and a compression job")
    for col in samples[0] if samples else ():
        table.add_column(col)
    for s in samples:
        table.add_row(*(str(v) for v in s.values()))
    console.print(table)
    warm = samples[min(len(samples) - 1, max(1, len(samples) // 5))] if samples else {}
    last = samples[-1] if samples else {}
    drift = {k: last[k] - warm[k] for k in ("rss_mib", "open_files", "mongo_conns", "kafka_conns", "event_lag",
                                            "outbox_backlog") if k in warm and None not in (last[k], warm[k])}
    console.print({"drift_after_warm_up": drift, "statuses": dict(statuses)})
    return {"minutes": args.minutes, "qps": args.qps, "samples": samples, "drift_after_warm_up": drift,
            "statuses": {str(k): v for k, v in statuses.items()}, "cpus": os.cpu_count(),
            "load_avg": os.getloadavg()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--qps", type=float, default=4)
    parser.add_argument("--sample-seconds", type=float, default=15)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
