"""Liveness and readiness: is each backing server reachable from this process?"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.lib.common import metrics
from services.lib.common.bus import topic_name
from services.lib.common.context import Platform, get_platform
from services.lib.common.metrics_access import require_metrics_reader

router = APIRouter(tags=["health"])


HEALTH_TOPIC = "health"   # logical topic /healthz writes a tiny record to (created with the others)
KAFKA_WRITE_EVERY_S = 10.0
REQUIRED = ("mongodb", "object_store", "kafka", "disk")   # the platform serves nothing without any of them


async def _mongo(platform: Platform) -> None:
    await platform.mongo.db.command("ping")


async def _object_store(platform: Platform) -> None:
    await platform.store.list_buckets()


async def _kafka(platform: Platform, timeout: float, state) -> None:
    # FastStream's ping answers False (never raises) when the broker is unreachable.
    if not await platform.broker.ping(timeout=timeout / 2):   # half: the write below gets the rest
        raise ConnectionError("the Kafka broker does not answer")
    # A reachable broker may still be unable to store anything (Tansu with its S3 store down answers
    # metadata, not produce): only a write proves it works. At most one every KAFKA_WRITE_EVERY_S
    # (each is a record kept, an object in Tansu's store); a failed one is tried again each time.
    if time.monotonic() - getattr(state, "kafka_written_at", -KAFKA_WRITE_EVERY_S) < KAFKA_WRITE_EVERY_S:
        return
    await platform.broker.publish(b"", topic=topic_name(platform.settings, HEALTH_TOPIC))
    state.kafka_written_at = time.monotonic()


async def _disk(platform: Platform) -> None:
    low = platform.disk.low()
    if low is not None:
        raise OSError(f"disk full: {low.describe()}")


async def _check(probe: Awaitable[None], timeout: float) -> dict:
    started = time.monotonic()
    try:
        await asyncio.wait_for(probe, timeout=timeout)
        result: dict = {"status": "up", "error": None}
    except TimeoutError:
        result = {"status": "down", "error": f"no answer within {timeout:g}s"}
    except Exception as exc:  # noqa: BLE001 - whatever the client raised, the server is not usable
        result = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:200]}
    result["latency_ms"] = round((time.monotonic() - started) * 1000)
    return result


@router.get("/healthz", summary="Readiness of MongoDB, object storage and Kafka",
            responses={503: {"description": "A backing server is unreachable; the body names it"}})
async def healthz(request: Request, platform: Platform = Depends(get_platform)):
    """Each backing server checked for real (a write to Kafka), all at once, each bounded by
    ``health_timeout_seconds``: the answer comes within that time even when every one hangs."""
    timeout = platform.settings.health_timeout_seconds
    probes = {"mongodb": _mongo(platform), "object_store": _object_store(platform),
              "kafka": _kafka(platform, timeout, request.app.state)}
    if platform.disk.watching:   # the folders this process writes to (and the embedded servers' data)
        probes["disk"] = _disk(platform)
    results = await asyncio.gather(*(_check(probe, timeout) for probe in probes.values()))
    dependencies = {name: {**result, "required": name in REQUIRED} for name, result in zip(probes, results)}
    ok = all(d["status"] == "up" for d in dependencies.values() if d["required"])
    # "checks" (ok / error: ...) as before, for probes and scripts that read it
    checks = {name: "ok" if d["status"] == "up" else f"error: {d['error']}" for name, d in dependencies.items()}
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks, "dependencies": dependencies},
                        status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics of this process (text format; admins and Prometheus only)",
            include_in_schema=False, dependencies=[Depends(require_metrics_reader)],
            # Its action, declared here: services.lib.common cannot import services.lib.iam's Authorized, and
            # require_metrics_reader also admits Prometheus's MAAS_METRICS_TOKEN, which is no user.
            openapi_extra={"x-maas-action": "maas:metrics:get"})
async def prometheus_metrics(request: Request, platform: Platform = Depends(get_platform)):
    metrics.build_info.labels(services=",".join(getattr(request.app.state, "services", [])),
                              version=request.app.version).set(1)
    await metrics.refresh(platform)  # cached MongoDB/Kafka gauges registered by the hosted services
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
