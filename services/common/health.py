"""Liveness and readiness: is each backing server reachable from this process?"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.common.context import Platform, get_platform

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Readiness of MongoDB, object storage and Kafka")
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
