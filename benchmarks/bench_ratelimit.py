#!/usr/bin/env python
"""What the shared QPS limit costs a call: one admission vs one plain MongoDB read, same server.

    python benchmarks/bench_ratelimit.py [--calls 2000]

The QPS limit is shared by every gateway replica (services/gateway/quotas/ratelimit.py): each
admitted call is one conditional update of the key's document; a call refused under overload is
usually answered from what the replica last read (no round trip). Starts its own embedded servers
and measures, in one run and interleaved round by round: *admit* (a key whose limit is never hit),
*refuse* (a key at 2x overload, mostly answered locally) and the baseline *read* (``find_one`` by
``_id`` of one document: the round trip any shared state would cost). Reports medians and p99 in
microseconds and the ratios to the baseline. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motor.motor_asyncio import AsyncIOMotorClient  # noqa: E402

from services.lib.embedded.servers import EmbeddedServers  # noqa: E402
from services.gateway.quotas.ratelimit import QPS_BUCKETS, SharedQpsLimiter  # noqa: E402


async def _timed(call) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1e6


async def measure(url: str, calls: int) -> dict[str, list[float]]:
    client = AsyncIOMotorClient(url)
    collection = client["maas_bench"][QPS_BUCKETS]
    await collection.insert_one({"_id": "read-me", "tat": 0.0})
    limiter = SharedQpsLimiter(collection)
    # The refused key: 5 per second allowed, called back to back (far more): its bucket is soon empty.
    samples: dict[str, list[float]] = {"read": [], "admit": [], "refuse": []}
    for i in range(calls):
        samples["read"].append(await _timed(lambda: collection.find_one({"_id": "read-me"})))
        samples["admit"].append(await _timed(lambda: limiter.acquire("roomy", 1_000_000)))
        samples["refuse"].append(await _timed(lambda: limiter.acquire("overloaded", 5)))
    client.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    servers = EmbeddedServers(Path(tempfile.mkdtemp(prefix="bench-ratelimit-")))
    servers.start(timeout=60)
    try:
        samples = asyncio.run(measure(servers.settings_env()["MAAS_MONGO_URL"], args.calls))
    finally:
        servers.stop()
    base = statistics.median(samples["read"])
    print(f"{'path':8} {'median µs':>10} {'p99 µs':>10} {'median / read':>14}")
    for name, values in samples.items():
        values = sorted(values[len(values) // 10:])   # the first tenth warms the connection pool
        p99 = values[int(0.99 * (len(values) - 1))]
        print(f"{name:8} {statistics.median(values):10.0f} {p99:10.0f} {statistics.median(values) / base:14.2f}")


if __name__ == "__main__":
    main()
