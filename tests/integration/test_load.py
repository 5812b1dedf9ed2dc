"""Load on /v1 (issue 18, item 6), bounded and local: a gateway process of its own takes twice a
service's QPS limit for a fixed request budget — Poisson arrivals, streaming and non-streaming calls,
clients that leave mid-stream. Nothing answers 5xx; every refused call is a proper 429 with
Retry-After; every admitted answer is whole; and the gateway's memory is flat: a second identical
run leaves its RSS within 10% of what the first left. Timing under load is a benchmark's to report
(benchmarks/bench_gateway.py), not a test's to assert."""
from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import httpx
import psutil
import pytest

from tests.integration.conftest import serve_process, stop_process, wait_for
from tests.integration.test_serving_api import api_key, deploy, serving_tmp, tiny_model  # noqa: F401

pytestmark = pytest.mark.integration

QPS = 4
SECONDS = 10
KINDS = ("plain", "stream", "leave")      # leave: the client goes after the first token


async def _call(client: httpx.AsyncClient, kind: str, model: str) -> tuple[int, str]:
    """One call; returns its status and, for what the test must check, what was wrong (else "")."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "stream": kind != "plain"}
    if kind == "plain":
        r = await client.post("/chat/completions", json=body)
        return r.status_code, _problem(r, r.content) or ("" if r.status_code != 200 or
                                                         r.json()["choices"][0]["message"]["content"] is not None
                                                         else "an answer without content")
    async with client.stream("POST", "/chat/completions", json=body) as r:
        if r.status_code != 200:
            return r.status_code, _problem(r, await r.aread())
        lines = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if kind == "leave" and line.startswith("data: {") and json.loads(line[6:])["choices"]:
                    return 200, ""
        return 200, "" if lines and lines[-1] == "[DONE]" else f"a stream that did not end: {lines[-2:]}"


def _problem(r: httpx.Response, raw: bytes) -> str:
    if r.status_code == 200:
        return ""
    if r.status_code != 429:
        return f"{r.status_code}: {raw[:300]!r}"
    error = json.loads(raw).get("error") or {}
    if int(r.headers.get("retry-after", "0")) < 1 or error.get("code") != "rate_limit_exceeded":
        return f"a 429 without Retry-After or OpenAI's error: {dict(r.headers)} {raw[:300]!r}"
    return ""


async def _run(url: str, key: str, model: str, *, seed: int) -> tuple[Counter, list[str]]:
    """Twice the limit for SECONDS: Poisson arrivals, the kinds mixed at random (seeded)."""
    rng = random.Random(seed)
    statuses, problems, calls = Counter(), [], []
    async with httpx.AsyncClient(base_url=url + "/v1", timeout=60, headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=200)) as client:
        async def one(kind: str) -> None:
            status, problem = await _call(client, kind, model)
            statuses[status] += 1
            if problem:
                problems.append(problem)
        loop = asyncio.get_running_loop()
        end = loop.time() + SECONDS
        while loop.time() < end:
            calls.append(asyncio.create_task(one(rng.choice(KINDS))))
            await asyncio.sleep(rng.expovariate(2 * QPS))
        await asyncio.gather(*calls)
    return statuses, problems


async def test_twice_the_qps_limit_answers_200_or_a_proper_429_and_the_gateways_memory_is_flat(
        api, platform_env, serving_tmp, tmp_path):  # noqa: F811
    model = await tiny_model(api, serving_tmp)
    service = await deploy(api, name="tiny-load", model_id=model["id"], qps_limit=QPS)
    key = await api_key(api)
    with open(tmp_path / "gateway.log", "wb") as log:
        gateway, port = serve_process("gateway", platform_env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        async def up():
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(url + "/healthz")).status_code == 200
            except httpx.HTTPError:
                return False
        await wait_for(up, timeout=180, interval=0.5)

        rss = []
        for seed in (1, 2):
            statuses, problems = await _run(url, key, service["name"], seed=seed)
            assert problems == [], problems[:5]
            assert set(statuses) <= {200, 429} and statuses[200] and statuses[429], statuses
            rss.append(psutil.Process(gateway.pid).memory_info().rss)
        assert rss[1] <= rss[0] * 1.10, f"gateway RSS grew from {rss[0] >> 20} MiB to {rss[1] >> 20} MiB"
    finally:
        stop_process(gateway)
        assert (await api.delete(f"/api/v1/services/{service['id']}")).status_code == 204
