#!/usr/bin/env python
"""/v1 under twice a service's QPS limit (issue 18, item 6): time to first token of admitted calls,
loaded against unloaded, and the platform's memory over two loaded runs.

    python benchmarks/bench_load.py [--qps 4] [--seconds 60]

Starts its own embedded servers and the platform as one process (benchmarks/platform_process.py),
deploys the tiny model with QPS limit ``--qps`` and then, from this process:

1. **unloaded**: streaming calls one after another at half the limit for ``--seconds``;
2. **loaded**, twice: Poisson arrivals at twice the limit for ``--seconds`` — streaming, non-streaming
   and clients that leave after the first token, a third each.

Reports TTFT p50/p99 of admitted streaming calls, the loaded/unloaded p99 ratio (goal ≤ 2.0), the
answers by status (goal: 200 and 429 only) and the platform's RSS after each loaded run (goal: the
second within 10% of the first). The last stdout line is one JSON object. Nothing is asserted
(tests/integration/test_load.py asserts the statuses and the memory, not time).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
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

PROMPT = [{"role": "user", "content": "Hi"}]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def one(client, model: str, kind: str, ttfts: list[float], statuses: Counter) -> None:
    body = {"model": model, "messages": PROMPT, "max_tokens": 16, "stream": kind != "plain"}
    sent = time.perf_counter()
    if kind == "plain":
        statuses[(await client.post("/chat/completions", json=body)).status_code] += 1
        return
    async with client.stream("POST", "/chat/completions", json=body) as r:
        statuses[r.status_code] += 1
        if r.status_code != 200:
            await r.aread()
            return
        first = None
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line:
                first = time.perf_counter() - sent
                ttfts.append(first * 1000)
                if kind == "leave":
                    return


async def run(url: str, key: str, model: str, *, rate: float, seconds: float, kinds: tuple[str, ...],
              seed: int, poisson: bool) -> tuple[list[float], Counter]:
    import httpx

    rng, ttfts, statuses, tasks = random.Random(seed), [], Counter(), []
    async with httpx.AsyncClient(base_url=url + "/v1", timeout=120, headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=200)) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            task = asyncio.create_task(one(client, model, rng.choice(kinds), ttfts, statuses))
            if poisson:
                tasks.append(task)
                await asyncio.sleep(rng.expovariate(rate))
            else:   # one after another, paced
                started = time.monotonic()
                await task
                await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
        await asyncio.gather(*tasks)
    return ttfts, statuses


async def main(args) -> dict:
    import psutil

    async with platform_process("bench-load-") as running:
        folder = await asyncio.to_thread(make_model, "tiny", running.work)
        step("deploying the tiny model")
        service, key = await deploy(running.api, None, folder, "tiny")
        r = await running.api.put(f"/api/v1/services/{service['id']}/qps", json={"qps_limit": args.qps})
        r.raise_for_status()
        await asyncio.sleep(2)   # gateways refresh their view of the service every 0.5 s
        proc = psutil.Process(running.proc.pid)
        step(f"unloaded: one streaming call at a time at {args.qps / 2:g}/s for {args.seconds:g} s")
        calm, calm_statuses = await run(running.url, key, service["name"], rate=args.qps / 2, seconds=args.seconds,
                                        kinds=("stream",), seed=0, poisson=False)
        loaded, rss = [], []
        for seed in (1, 2):
            step(f"loaded run {seed}: Poisson at {2 * args.qps:g}/s for {args.seconds:g} s")
            ttfts, statuses = await run(running.url, key, service["name"], rate=2 * args.qps, seconds=args.seconds,
                                        kinds=("plain", "stream", "leave"), seed=seed, poisson=True)
            loaded.append((ttfts, statuses))
            rss.append(proc.memory_info().rss >> 20)

    rows = {"unloaded": (calm, calm_statuses), "loaded 1": loaded[0], "loaded 2": loaded[1]}
    table = Table(title=f"/v1 at twice QPS {args.qps:g}, tiny model, {args.seconds:g} s per run")
    for col in ("run", "admitted streams", "TTFT p50 ms", "TTFT p99 ms", "statuses"):
        table.add_column(col)
    figures = {}
    for name, (ttfts, statuses) in rows.items():
        p50, p99 = percentile(ttfts, 50), percentile(ttfts, 99)
        figures[name] = {"streams": len(ttfts), "ttft_p50_ms": p50 and round(p50, 1),
                         "ttft_p99_ms": p99 and round(p99, 1), "statuses": {str(k): v for k, v in statuses.items()}}
        table.add_row(name, str(len(ttfts)), f"{p50:.1f}" if p50 else "-", f"{p99:.1f}" if p99 else "-",
                      str(dict(statuses)))
    console.print(table)
    base = figures["unloaded"]["ttft_p99_ms"]
    ratios = {"ttft_p99_loaded_vs_unloaded": [round(figures[n]["ttft_p99_ms"] / base, 2)
                                              for n in ("loaded 1", "loaded 2")] if base else None,
              "rss_mib_after_each_loaded_run": rss, "rss_second_vs_first": round(rss[1] / rss[0], 3)}
    console.print(ratios)
    return {"qps": args.qps, "seconds": args.seconds, "runs": figures, **ratios,
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qps", type=float, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
