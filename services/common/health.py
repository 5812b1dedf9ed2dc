"""Liveness and readiness: is each backing server reachable from this process?"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.common import metrics
from services.common.context import Platform, get_platform
from services.common.metrics_access import require_metrics_reader

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Readiness of MongoDB, object storage and Kafka",
            responses={503: {"description": "A backing server is unreachable; the body names it"}})
async def healthz(platform: Platform = Depends(get_platform)):
    async def mongo():
        await platform.mongo.db.command("ping")

    async def s3():
        await platform.store.list_buckets()

    async def kafka():
        await platform.broker.ping(timeout=3)

    checks = {}
    for name, probe in (("mongodb", mongo), ("object_store", s3), ("kafka", kafka)):
        try:
            await asyncio.wait_for(probe(), timeout=5)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:200]
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics of this process (text format; admins and Prometheus only)",
            include_in_schema=False, dependencies=[Depends(require_metrics_reader)],
            # Its action, declared here: services.common cannot import services.iam's Authorized, and
            # require_metrics_reader also admits Prometheus's MAAS_METRICS_TOKEN, which is no user.
            openapi_extra={"x-maas-action": "maas:metrics:get"})
async def prometheus_metrics(request: Request, platform: Platform = Depends(get_platform)):
    metrics.build_info.labels(services=",".join(getattr(request.app.state, "services", [])),
                              version=request.app.version).set(1)
    await metrics.refresh(platform)  # cached MongoDB/Kafka gauges registered by the hosted services
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
