#!/usr/bin/env python
"""Gateway overhead: time to first token and decode speed through the OpenAI gateway vs the engine.

    python benchmarks/bench_gateway.py [--model smollm2|tiny] [--tokens 64] [--runs 5] [--streams 1,4,8]

Starts its own embedded servers and the whole platform in this process (as the integration tests
do), deploys the model as a service with one instance (spec cpu.2u8g: 2 engine threads; content
moderation on, as shipped) and measures, on the same greedy prompt (``ignore_eos``, exactly
``--tokens`` tokens):

1. **one stream**, from a client in a separate process (in this one it would share the gateway's
   event loop), the three paths interleaved run by run (the order rotates), so the machine's load,
   the platform's own background work included, hits them alike:
   - *engine*: ``services.lib.inference.engine.Engine`` called in the client process (no HTTP), 2 threads,
     from the same chat messages (chat template and tokenizer included, as for any caller);
   - *instance*: the service's inference server called directly over HTTP (SSE);
   - *gateway*: ``POST /v1/infers/{service}/v1/chat/completions`` with an API key (auth, QPS limit,
     moderation, routing, SSE relay, metering).
   Time to first token (TTFT) is from sending to the first content token; decode speed is
   (tokens - 1) / (last token - first token). Reported: medians and gateway/engine and
   gateway/instance ratios (goal: at most 5% added).
2. **throughput** at 1, 4 and 8 concurrent streams: total completion tokens per second of wall time,
   through the gateway and straight to the instance.

Prints tables to stderr and, as the last line on stdout, one JSON object with every figure.
Nothing is asserted: this reports, it does not pass or fail.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


def step(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# the three ways to run one request
# ---------------------------------------------------------------------------------------------

async def engine_run(engine, tokens: int) -> tuple[float, float, int]:
    """The same prompt as the HTTP runs, from the chat messages on: the chat template and the
    tokenizer are work every caller of the engine does too."""
    from contracts.openai import ChatMessage
    from services.lib.inference.chat import encode, render_prompt
    from services.lib.inference.params import SamplingParams

    start = time.perf_counter()
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    ids = encode(engine.tokenizer, render_prompt(engine.tokenizer, [ChatMessage(**m) for m in PROMPT]).text)
    first = last = None
    count = 0
    async for update in engine.astream(ids, params):
        for choice in update.choices:
            if choice.text:
                now = time.perf_counter()
                first = first or now
                last = now
            count = max(count, choice.completion_tokens)
    return first - start, last - first, count


async def http_run(client, url: str, model: str, tokens: int, *, key: str) -> tuple[float, float, int]:
    body = {"model": model, "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    count = 0
    async with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
    return first - start, last - first, count


async def throughput(client, url: str, model: str, tokens: int, streams: int, *, key: str) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*(http_run(client, url, model, tokens, key=key) for _ in range(streams)))
    return sum(r[2] for r in results) / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------------------------

def make_model(kind: str, work: Path) -> Path:
    if kind == "tiny":
        from services.lib.mlkit.tiny import build_tiny_model

        return build_tiny_model(work / "tiny")
    from services.lib.mlkit.smollm2 import convert_to_hf

    return convert_to_hf(work / "smollm2")


async def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


async def deploy(api, platform, folder: Path, kind: str) -> tuple[dict, str]:
    if kind == "tiny":
        me = (await api.get("/api/v1/auth/me")).json()
        dest = f"{me['default_bucket']}/bench/{kind}"
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and "onnx" not in p.parts[-2]):
            r = await api.put(f"/api/v1/storage/objects/{dest}/{file.relative_to(folder).as_posix()}",
                              content=file.read_bytes())
            r.raise_for_status()
        body = {"template_id": "qwen2-custom", "weights_path": dest}
    else:  # the same weights the platform imported as SmolLM2's preset (no 538 MB upload)
        body = {"template_id": "smollm2-135m-instruct", "weights_source": "preset"}
    r = await api.post("/api/v1/models", json={"name": f"bench-{kind}", **body})
    r.raise_for_status()
    model_id = r.json()["id"]

    async def created():
        m = (await api.get(f"/api/v1/models/{model_id}")).json()
        if m["status"] == "failed":
            raise RuntimeError(f"model failed: {m}")
        return m["status"] == "created"
    await wait(created, 600, "model creation")
    r = await api.post("/api/v1/services", json={"name": f"bench-{kind}", "model_id": model_id, "qps_limit": 10000,
                                                 "instance_spec": "cpu.2u8g"})
    r.raise_for_status()
    service_id = r.json()["id"]

    async def running():
        s = (await api.get(f"/api/v1/services/{service_id}")).json()
        if s["status"] == "failed":
            raise RuntimeError(f"service failed: {s['message']}")
        return s if s["status"] == "running" else None
    service = await wait(running, 900, "service start")
    key = (await api.post("/api/v1/api-keys", json={"description": "bench"})).json()["key"]
    return service, key


async def main(args) -> dict:
    import httpx
    import uvicorn

    from services.lib.common.http import server_config
    from services.lib.common.settings import get_settings
    from services.lib.embedded.servers import EmbeddedServers

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    step(f"building the {args.model} model")
    folder = await asyncio.to_thread(make_model, args.model, work)

    step("starting embedded servers and the platform")
    servers = EmbeddedServers(work / "data")
    servers.start(timeout=120)
    os.environ.update(servers.settings_env())
    get_settings.cache_clear()
    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from services.runtime import build_app

    settings = get_settings().model_copy(update={"work_dir": str(work / "work")})
    app = build_app(settings, services="all")
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serve = asyncio.create_task(server.serve())
    results: dict[str, list[tuple[float, float, int]]] = {}
    try:
        await wait(lambda: asyncio.sleep(0, server.started), 300, "platform start")
        platform = app.state.platform
        admin = await ensure_bootstrap_admin(platform)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=600,
                                     headers={"Authorization": f"Bearer {admin.token}"}) as api:
            # The preset import converts SmolLM2 in this process at start-up (GIL-heavy): let it finish.
            async def presets_done():
                doc = await platform.mongo["preset_imports"].find_one({})
                return doc and doc.get("status") in ("ready", "failed")
            step("waiting for the preset import to finish")
            await wait(presets_done, 900, "preset import")
            step("deploying the service")
            service, key = await deploy(api, platform, folder, args.model)
        instance = await platform.mongo["service_instances"].find_one({"service_id": service["id"], "status": "ready"})
        gateway_url = f"{base}/v1/infers/{service['id']}/v1/chat/completions"
        instance_url = f"{instance['url']}/v1/chat/completions"

        async with httpx.AsyncClient(timeout=10) as probe:
            # The instance's secret: its health details, and the direct path, are for the platform only.
            health = (await probe.get(f"{instance['url']}/health",
                                      headers={"Authorization": f"Bearer {instance['secret']}"})).json()
        # The client process runs all three paths, interleaved run by run, so a change in the
        # machine's load (the platform's own background work included) hits them alike; in this
        # process it would share the gateway's event loop (and the GIL).
        step(f"engine, instance and gateway from a client process: {args.runs} interleaved runs, then "
             "throughput at " + ", ".join(map(str, args.streams)) + " concurrent streams")
        spec = {"instance_url": instance_url, "gateway_url": gateway_url, "key": key,
                "instance_secret": instance["secret"], "model": service["name"],
                "tokens": args.tokens, "runs": args.runs, "streams": args.streams, "folder": str(folder),
                "max_model_len": service["max_model_len"]}
        child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", json.dumps(spec),
                                                     stdout=asyncio.subprocess.PIPE)
        out, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the client process failed ({child.returncode})")
        measured = json.loads(out.decode().strip().splitlines()[-1])
        for path in ("engine", "instance", "gateway"):
            results[path] = [tuple(r) for r in measured[path]]
        backends = {"engine": measured["engine_backend"], "instance": [health["backend"], health["providers"]]}
        concurrency = {int(n): row for n, row in measured["throughput"].items()}
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, 120)
        servers.stop()

    single = {}
    for path, runs in results.items():
        ttft = [r[0] * 1000 for r in runs]
        speed = [(r[2] - 1) / r[1] for r in runs if r[1] > 0]
        single[path] = {"ttft_ms": round(median(ttft), 2), "decode_tok_s": round(median(speed), 1),
                        "tokens": runs[0][2] if runs else 0}
    ratios = {
        "ttft_gateway_vs_engine": round(single["gateway"]["ttft_ms"] / single["engine"]["ttft_ms"], 3),
        "decode_gateway_vs_engine": round(single["gateway"]["decode_tok_s"] / single["engine"]["decode_tok_s"], 3),
        "ttft_gateway_vs_instance": round(single["gateway"]["ttft_ms"] / single["instance"]["ttft_ms"], 3),
        "decode_gateway_vs_instance": round(single["gateway"]["decode_tok_s"] / single["instance"]["decode_tok_s"], 3),
    }
    # Round by round the three paths ran back to back: the median of their differences shrugs off a
    # slow drift of the machine's speed that the ratio of medians does not.
    ttfts = {path: [r[0] * 1000 for r in runs] for path, runs in results.items()}
    added = {f"{a}_minus_{b}_ms": round(median([x - y for x, y in zip(ttfts[a], ttfts[b])]), 2)
             for a, b in (("gateway", "engine"), ("instance", "engine"), ("gateway", "instance"))}
    ratios["ttft_gateway_vs_engine_paired"] = round(1 + added["gateway_minus_engine_ms"] / single["engine"]["ttft_ms"], 3)
    table = Table(title=f"one stream, {args.model}, {args.tokens} tokens (medians of {args.runs})")
    for col in ("path", "TTFT ms", "decode tok/s"):
        table.add_column(col)
    for path, row in single.items():
        table.add_row(path, f"{row['ttft_ms']:.1f}", f"{row['decode_tok_s']:.1f}")
    console.print(table)
    console.print(ratios)
    console.print({"ttft_added_per_round_median": added})
    table = Table(title="throughput (total completion tokens/s)")
    for col in ("streams", "instance", "gateway", "gateway/instance"):
        table.add_column(col)
    for n, row in concurrency.items():
        table.add_row(str(n), f"{row['instance']:.1f}", f"{row['gateway']:.1f}",
                      f"{row['gateway'] / row['instance']:.3f}")
    console.print(table)
    return {"model": args.model, "tokens": args.tokens, "runs": args.runs, "backends": backends, "single_stream": single,
            "ratios": ratios, "ttft_added_ms": added, "throughput_tok_s": {str(n): {k: round(v, 1) for k, v in row.items()}
                                                   for n, row in concurrency.items()},
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()}


async def client_main(spec: dict) -> dict:
    """The client side (``--client``): the engine in this process, the instance and the gateway over
    HTTP, one run of each per round (the order rotates), then throughput."""
    import httpx

    from services.lib.inference.engine import Engine

    engine = await asyncio.to_thread(Engine, Path(spec["folder"]), max_model_len=spec["max_model_len"], threads=2)
    out: dict = {"engine": [], "instance": [], "gateway": [], "throughput": {},
                 "engine_backend": [engine.backend_name, engine.providers]}
    urls = {"instance": spec["instance_url"], "gateway": spec["gateway_url"]}
    keys = {"instance": spec["instance_secret"], "gateway": spec["key"]}   # the gateway's and a user's
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        def run(path: str):
            if path == "engine":
                return engine_run(engine, spec["tokens"])
            return http_run(client, urls[path], spec["model"], spec["tokens"], key=keys[path])

        paths = ["engine", "instance", "gateway"]
        for path in paths:   # warm-up
            await run(path)
        for r in range(spec["runs"]):
            for path in paths[r % 3:] + paths[:r % 3]:
                out[path].append(await run(path))
        await asyncio.to_thread(engine.close)
        for n in spec["streams"]:
            out["throughput"][n] = {path: await throughput(client, url, spec["model"], spec["tokens"], n,
                                                           key=keys[path])
                                    for path, url in urls.items()}
    return out


if __name__ == "__main__":
    import uvloop   # the event loop `maas up` runs on (uvicorn's default when uvloop is installed)

    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        print(json.dumps(uvloop.run(client_main(json.loads(sys.argv[2])))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(uvloop.run(main(parser.parse_args())), default=str))
