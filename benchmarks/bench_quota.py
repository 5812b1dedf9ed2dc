#!/usr/bin/env python
"""What the free-quota reservation costs the first token: gateway TTFT with reservation on vs off.

    python benchmarks/bench_quota.py [--model tiny|smollm2] [--tokens 16] [--runs 41]

Starts its own embedded servers and the whole platform in this process (as bench_gateway.py does)
and deploys one model as two services of one instance each. One of them is marked a preset
service (*on*: every gateway call to it reserves on the caller's free quota and settles after,
quota_ledger.py), the other stays an ordinary service (*off*: no quota); halfway through they swap
roles, so a difference between the two instances cannot pass for the reservation's cost. A client
in its own process runs, round by round with the order rotating, one stream on each of four paths:
each service's instance directly and each through the gateway
(``/v1/infers/{id}/v1/chat/completions`` with an API key).

The gateway's added time to first token is the gateway run minus the same service's instance run
of the same round. Reported: its median for *on* and *off*, the median of their round-by-round
difference, the ratios on/off (the baseline, *off*, measured in the same rounds), and the CPU
time of the reservation itself (bound, reserve, settle; hot, in this process, microseconds per
call). ``--chunk 0``: leases grow by exactly what a call lacks (as near the end of a quota).
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench_gateway import PROMPT, console, free_port, http_run, make_model, median, step, wait
from rich.table import Table

PATHS = ("instance_on", "gateway_on", "instance_off", "gateway_off")


async def _model(api, folder: Path, kind: str) -> str:
    if kind == "tiny":
        me = (await api.get("/api/v1/auth/me")).json()
        dest = f"{me['default_bucket']}/bench-quota/{kind}"
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and "onnx" not in p.parts[-2]):
            r = await api.put(f"/api/v1/storage/objects/{dest}/{file.relative_to(folder).as_posix()}",
                              content=file.read_bytes())
            r.raise_for_status()
        body = {"template_id": "qwen2-custom", "weights_path": dest}
    else:
        body = {"template_id": "smollm2-135m-instruct", "weights_source": "preset"}
    r = await api.post("/api/v1/models", json={"name": f"bench-quota-{kind}", **body})
    r.raise_for_status()
    model_id = r.json()["id"]

    async def created():
        m = (await api.get(f"/api/v1/models/{model_id}")).json()
        if m["status"] == "failed":
            raise RuntimeError(f"model failed: {m}")
        return m["status"] == "created"
    await wait(created, 600, "model creation")
    return model_id


async def _service(api, *, model_id: str, name: str) -> dict:
    r = await api.post("/api/v1/services", json={"name": name, "model_id": model_id, "qps_limit": 10000,
                                                 "instance_spec": "cpu.2u8g"})
    r.raise_for_status()
    service_id = r.json()["id"]

    async def running():
        s = (await api.get(f"/api/v1/services/{service_id}")).json()
        if s["status"] == "failed":
            raise RuntimeError(f"service failed: {s['message']}")
        return s if s["status"] == "running" else None
    return await wait(running, 900, f"service {name}")


async def main(args) -> dict:
    import httpx
    import uvicorn

    from services.lib.common.http import server_config
    from services.lib.common.settings import get_settings
    from services.lib.embedded.servers import EmbeddedServers

    work = Path(tempfile.mkdtemp(prefix="bench-quota-"))
    step(f"building the {args.model} model")
    folder = await asyncio.to_thread(make_model, args.model, work)
    step("starting embedded servers and the platform")
    servers = EmbeddedServers(work / "data")
    servers.start(timeout=120)
    os.environ.update(servers.settings_env())
    os.environ["MAAS_GATEWAY_QUOTA_CHUNK_TOKENS"] = str(args.chunk)
    get_settings.cache_clear()
    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from services.gateway.settings import gateway_settings
    from services.runtime import build_app

    gateway_settings.cache_clear()
    app = build_app(get_settings().model_copy(update={"work_dir": str(work / "work")}), services="all")
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serve = asyncio.create_task(server.serve())
    try:
        await wait(lambda: asyncio.sleep(0, server.started), 300, "platform start")
        platform = app.state.platform
        admin = await ensure_bootstrap_admin(platform)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=600,
                                     headers={"Authorization": f"Bearer {admin.token}"}) as api:
            async def presets_done():   # SmolLM2's preset import converts weights in this process at start-up
                doc = await platform.mongo["preset_imports"].find_one({})
                return doc and doc.get("status") in ("ready", "failed")
            step("waiting for the preset import to finish")
            await wait(presets_done, 900, "preset import")
            step("deploying the two services")
            model_id = await _model(api, folder, args.model)
            services = [await _service(api, model_id=model_id, name=f"bench-quota-{x}-{args.model}") for x in "ab"]
            key = (await api.post("/api/v1/api-keys", json={"description": "bench-quota"})).json()["key"]
            measured: dict = {path: [] for path in PATHS}
            # Half the rounds with service a as the preset, half with b: a difference between the
            # two instances cannot pass for the reservation's cost.
            for half, (on, off) in enumerate((services, services[::-1])):
                await _make_preset(api, platform, on=on, off=off)
                spec = {"tokens": args.tokens, "runs": args.runs // 2 + half * (args.runs % 2), "paths": {}}
                for name, service in (("on", on), ("off", off)):
                    instance = await platform.mongo["service_instances"].find_one({"service_id": service["id"],
                                                                                   "status": "ready"})
                    spec["paths"][f"instance_{name}"] = {"url": f"{instance['url']}/v1/chat/completions",
                                                         "key": instance.get("secret") or "-", "model": service["name"]}
                    spec["paths"][f"gateway_{name}"] = {
                        "url": f"{base}/v1/infers/{service['id']}/v1/chat/completions", "key": key,
                        "model": service["name"]}
                step(f"four paths from a client process: {spec['runs']} interleaved rounds, {on['name']} on")
                child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", json.dumps(spec),
                                                             stdout=asyncio.subprocess.PIPE)
                out, _ = await child.communicate()
                if child.returncode != 0:
                    raise RuntimeError(f"the client process failed ({child.returncode})")
                for path, runs in json.loads(out.decode().strip().splitlines()[-1]).items():
                    measured[path] += runs
        step("the reservation alone, in this process")
        per_call_us = await _reservation_cost(platform, app.state.components["gateway"], on=on)
        await asyncio.sleep(1.5)
        ids = [x["id"] for x in services]
        quotas = [d async for d in platform.mongo["free_quotas"].find({"service_id": {"$in": ids}})]
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, 120)
        servers.stop()
    return report(args, measured, quotas, per_call_us)


async def _make_preset(api, platform, *, on: dict, off: dict) -> None:
    """Mark ``on`` a preset service (the admin's free quota of it claimed) and ``off`` an ordinary one."""
    services = platform.mongo["model_services"]
    await services.update_one({"_id": on["id"]}, {"$set": {"preset": True}})
    await services.update_one({"_id": off["id"]}, {"$set": {"preset": False}})
    r = await api.post(f"/api/v1/preset-services/{on['id']}/claim")
    if r.status_code != 201:
        raise RuntimeError(f"claim: {r.status_code} {r.text}")
    await asyncio.sleep(2)   # the gateway's view of a service is at most 0.5 s old


async def _reservation_cost(platform, gateway, *, on: dict) -> float:
    """Microseconds per call of the gateway's own reserve + settle (the bound included), hot."""
    from contracts.openai import ChatCompletionRequest
    from services.lib.readmodels.serving_refs import get_service
    from services.gateway.quotas.calls import call_bound, reserve

    doc = await platform.mongo["free_quotas"].find_one({"service_id": on["id"]})
    service = await get_service(platform, on["id"])
    ledger = gateway.ledger
    body = {"model": service.name, "messages": PROMPT, "max_tokens": 64}
    request = ChatCompletionRequest.model_validate(body)
    n = 5000
    started = time.perf_counter()
    for _ in range(n):
        bound = call_bound(body, request, service)
        (await reserve(ledger, user_id=doc["user_id"], service=service, bound=bound)).settle(0)
    return (time.perf_counter() - started) / n * 1e6


def report(args, measured: dict, quotas: list[dict], per_call_us: float) -> dict:
    ttft = {path: [r[0] * 1000 for r in measured[path]] for path in PATHS}
    medians = {path: round(median(values), 2) for path, values in ttft.items()}
    added = {name: [g - i for g, i in zip(ttft[f"gateway_{name}"], ttft[f"instance_{name}"])] for name in ("on", "off")}
    added_median = {name: round(median(values), 3) for name, values in added.items()}
    differences = [a - b for a, b in zip(added["on"], added["off"])]
    on_minus_off = round(median(differences), 3)
    low, high = _bootstrap_ci(differences)
    ratios = {
        "gateway_ttft_on_vs_off": round(medians["gateway_on"] / medians["gateway_off"], 3),
        "gateway_ttft_on_vs_off_paired": round(median([a / b for a, b in zip(ttft["gateway_on"], ttft["gateway_off"])]),
                                               3),
        "instance_ttft_on_vs_off": round(medians["instance_on"] / medians["instance_off"], 3),
        "added_ms_on_vs_off": round(added_median["on"] / added_median["off"], 3) if added_median["off"] else None,
    }
    table = Table(title=f"TTFT, {args.model}, {args.tokens} tokens, chunk {args.chunk} (medians of {args.runs} rounds)")
    for col in ("path", "TTFT ms", "gateway added ms (paired)"):
        table.add_column(col)
    for path in PATHS:
        name = path.rsplit("_", 1)[1]
        table.add_row(path, f"{medians[path]:.2f}", f"{added_median[name]:.3f}" if path.startswith("gateway") else "")
    console.print(table)
    console.print({"ratios": ratios, "added_on_minus_off_ms_paired": on_minus_off,
                   "its_95%_interval_ms": [low, high],
                   "reserve_settle_us_per_call (in process)": round(per_call_us, 1)})
    return {"model": args.model, "tokens": args.tokens, "runs": args.runs, "chunk": args.chunk,
            "ttft_ms": medians, "gateway_added_ms": added_median, "added_on_minus_off_ms": on_minus_off,
            "added_on_minus_off_ms_95ci": [low, high],
            "ratios": ratios, "reserve_settle_us_per_call": round(per_call_us, 1),
            "quota_used": [q.get("used") for q in quotas],
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "ttft_ms_per_round": {path: [round(v, 3) for v in values] for path, values in ttft.items()}}


def _bootstrap_ci(values: list[float], *, resamples: int = 2000) -> tuple[float, float]:
    """95% interval of the median of ``values`` (percentile bootstrap): what the noise allows."""
    rng = random.Random(0)
    medians = sorted(median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return round(medians[int(0.025 * resamples)], 3), round(medians[int(0.975 * resamples)], 3)


async def client_main(spec: dict) -> dict:
    """The client side (``--client``): one run of each path per round, the order rotating."""
    import httpx

    out: dict = {path: [] for path in PATHS}
    async with httpx.AsyncClient(timeout=600) as client:
        def run(path: str):
            p = spec["paths"][path]
            return http_run(client, p["url"], p["model"], spec["tokens"], key=p["key"])
        for path in PATHS:   # warm-up (the first call on "on" also makes this gateway's lease)
            await run(path)
        for r in range(spec["runs"]):
            for path in PATHS[r % 4:] + PATHS[:r % 4]:
                out[path].append(await run(path))
    return out


if __name__ == "__main__":
    import uvloop   # the event loop `maas up` runs on

    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        print(json.dumps(uvloop.run(client_main(json.loads(sys.argv[2])))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="tiny")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--chunk", type=int, default=8192, help="MAAS_GATEWAY_QUOTA_CHUNK_TOKENS for this run")
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(uvloop.run(main(parser.parse_args())), default=str))
