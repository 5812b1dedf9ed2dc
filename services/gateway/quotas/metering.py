"""Usage metering and service monitoring, recorded by the gateway from every response.

Every answered call adds its tokens to the caller's daily usage (per key and service) and to
per-minute metrics of the service and the instance that served it (requests, errors, tokens,
latency, time to first token). Counts are summed in memory and written in one bulk ``$inc`` per
document every second, so calls never wait on these writes. A rejected call (bad input, auth,
quota, QPS, moderation of the input) adds no usage; it counts as ``rejected`` in the service's
metrics. The free quota of a preset service is reserved and billed by ledger.py.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pymongo import ASCENDING, UpdateOne

from contracts.timestamps import rfc3339
from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.errors import not_found
from services.lib.common.metrics import record_tokens
from services.lib.common.mongo import IndexSpec
from services.lib.readmodels.serving_refs import get_service
from services.lib.iam.authorize import Authorized

log = logging.getLogger(__name__)

USAGE = "usage_daily"
METRICS = "service_metrics"
API_KEYS = "api_keys"

INDEXES: list[IndexSpec] = [
    (USAGE, [("tenant_id", ASCENDING), ("day", ASCENDING)], {}),
    (USAGE, [("user_id", ASCENDING), ("key_id", ASCENDING)], {}),
    (METRICS, [("service_id", ASCENDING), ("minute", ASCENDING)], {}),
    (METRICS, [("minute", ASCENDING)], {"expireAfterSeconds": 30 * 24 * 3600}),
]

_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class UsageRecorder:
    def __init__(self, platform: Platform):
        self.platform = platform
        self._usage: dict[str, dict] = {}
        self._metrics: dict[str, dict] = {}
        self._keys_used: dict[str, datetime] = {}
        self._lock = asyncio.Lock()

    def usage(self, *, caller, service, prompt_tokens: int, completion_tokens: int) -> None:
        now = datetime.now(UTC)
        day = now.strftime("%Y-%m-%d")
        doc_id = f"{caller.tenant_id}:{caller.user_id}:{service.id}:{caller.key_id}:{day}"
        entry = self._usage.setdefault(doc_id, {
            "fields": {"tenant_id": caller.tenant_id, "user_id": caller.user_id, "service_id": service.id,
                       "service_name": service.name, "key_id": caller.key_id, "day": day},
            "inc": dict.fromkeys(_COUNTERS, 0)})
        inc = entry["inc"]
        inc["requests"] += 1
        inc["prompt_tokens"] += prompt_tokens
        inc["completion_tokens"] += completion_tokens
        inc["total_tokens"] += prompt_tokens + completion_tokens
        if caller.key_id != "playground":
            self._keys_used[caller.key_id] = now
        record_tokens(service=service.name, model=service.template_id, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens)

    def call(self, *, service, instance_id: str, ok: bool, latency_ms: float, ttft_ms: float | None = None,
             prompt_tokens: int = 0, completion_tokens: int = 0, rejected: bool = False,
             cached_tokens: int = 0) -> None:
        """``cached_tokens``: of the prompt's, those the instance's prefix cache saved (its hit rate)."""
        now = datetime.now(UTC)
        minute = _minute(now)
        for inst in {instance_id, "_all"}:
            doc_id = f"{service.id}:{inst}:{minute:%Y%m%d%H%M}"
            entry = self._metrics.setdefault(doc_id, {
                "fields": {"service_id": service.id, "tenant_id": service.tenant_id, "instance_id": inst,
                           "minute": minute},
                "inc": defaultdict(float)})
            inc = entry["inc"]
            if rejected:
                inc["rejected"] += 1
                continue
            inc["requests"] += 1
            inc["errors"] += 0 if ok else 1
            inc["prompt_tokens"] += prompt_tokens
            inc["completion_tokens"] += completion_tokens
            inc["cached_prompt_tokens"] += cached_tokens
            inc["latency_ms_sum"] += latency_ms
            if ttft_ms is not None:
                inc["ttft_ms_sum"] += ttft_ms
                inc["ttft_count"] += 1

    async def flush(self) -> int:
        async with self._lock:
            usage, metrics, keys = self._usage, self._metrics, self._keys_used
            self._usage, self._metrics, self._keys_used = {}, {}, {}
            writes = 0
            try:
                if usage:
                    await self.platform.mongo[USAGE].bulk_write([
                        UpdateOne({"_id": k}, {"$inc": v["inc"], "$setOnInsert": v["fields"]}, upsert=True)
                        for k, v in usage.items()], ordered=False)
                if metrics:
                    await self.platform.mongo[METRICS].bulk_write([
                        UpdateOne({"_id": k}, {"$inc": dict(v["inc"]), "$setOnInsert": v["fields"]}, upsert=True)
                        for k, v in metrics.items()], ordered=False)
                if keys:
                    await self.platform.mongo[API_KEYS].bulk_write([
                        UpdateOne({"key_id": k}, {"$max": {"last_used_at": at}}) for k, at in keys.items()],
                        ordered=False)
                writes = len(usage) + len(metrics)
            except Exception:
                # Keep the counts for the next round rather than lose them.
                log.exception("writing usage failed; retrying on the next flush")
                self._merge_back(usage, metrics, keys)
            return writes

    def _merge_back(self, usage, metrics, keys) -> None:
        for k, v in usage.items():
            mine = self._usage.setdefault(k, {"fields": v["fields"], "inc": dict.fromkeys(_COUNTERS, 0)})
            for c, n in v["inc"].items():
                mine["inc"][c] = mine["inc"].get(c, 0) + n
        for k, v in metrics.items():
            mine = self._metrics.setdefault(k, {"fields": v["fields"], "inc": defaultdict(float)})
            for c, n in v["inc"].items():
                mine["inc"][c] += n
        for k, at in keys.items():
            self._keys_used.setdefault(k, at)


# ------------------------------------------------------------------------------------ queries

async def usage_by_key(platform: Platform, *, user_id: str) -> dict[str, dict]:
    pipeline = [{"$match": {"user_id": user_id}},
                {"$group": {"_id": "$key_id", **{c: {"$sum": f"${c}"} for c in _COUNTERS}}}]
    return {d["_id"]: {c: int(d[c]) for c in _COUNTERS} async for d in platform.mongo[USAGE].aggregate(pipeline)}


async def usage_summary(platform: Platform, *, tenant_id: str, group_by: str, days: int,
                        user_id: str | None = None) -> list[dict]:
    since = (datetime.now(UTC) - timedelta(days=days - 1)).strftime("%Y-%m-%d")
    match: dict = {"tenant_id": tenant_id, "day": {"$gte": since}}
    if user_id:
        match["user_id"] = user_id
    key = {"service": {"service_id": "$service_id", "service_name": "$service_name"}, "key": {"key_id": "$key_id"},
           "day": {"day": "$day"}}[group_by]
    pipeline = [{"$match": match}, {"$group": {"_id": key, **{c: {"$sum": f"${c}"} for c in _COUNTERS}}}]
    rows = [{**d["_id"], **{c: int(d[c]) for c in _COUNTERS}} async for d in platform.mongo[USAGE].aggregate(pipeline)]
    return sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))


def _summarize(rows: list[dict]) -> dict:
    total = defaultdict(float)
    for r in rows:
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] += v
    requests, prompt = total["requests"], total["prompt_tokens"]
    return {
        "requests": int(requests), "errors": int(total["errors"]), "rejected": int(total["rejected"]),
        "prompt_tokens": int(prompt), "completion_tokens": int(total["completion_tokens"]),
        # The instances' prefix cache: how much of the prompts it did not compute again.
        "cached_prompt_tokens": int(total["cached_prompt_tokens"]),
        "prefix_cache_hit_rate": round(total["cached_prompt_tokens"] / prompt, 4) if prompt else None,
        "avg_latency_ms": round(total["latency_ms_sum"] / requests, 1) if requests else None,
        "avg_ttft_ms": round(total["ttft_ms_sum"] / total["ttft_count"], 1) if total["ttft_count"] else None,
    }


async def service_metrics(platform: Platform, *, service_id: str, minutes: int) -> dict:
    since = _minute(datetime.now(UTC)) - timedelta(minutes=minutes - 1)
    docs = [d async for d in platform.mongo[METRICS].find(
        {"service_id": service_id, "minute": {"$gte": since}}).sort("minute", ASCENDING)]
    overall = [d for d in docs if d["instance_id"] == "_all"]
    per_instance: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        if d["instance_id"] not in ("_all", "-"):
            per_instance[d["instance_id"]].append(d)
    return {
        "service_id": service_id, "minutes": minutes, "totals": _summarize(overall),
        "series": [{"minute": rfc3339(d["minute"]), **_summarize([d])} for d in overall],
        "instances": {iid: _summarize(rows) for iid, rows in per_instance.items()},
    }


# ------------------------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/v1", tags=["usage and monitoring"])


@router.get("/usage", summary="Token usage of my tenant, grouped by service, API key or day")
async def usage(principal: Principal = Authorized("maas:usage:list"),
                group_by: Annotated[str, Query(pattern="^(service|key|day)$")] = "service",
                days: Annotated[int, Query(ge=1, le=366)] = 30, platform: Platform = Depends(get_platform)):
    rows = await usage_summary(platform, tenant_id=principal.tenant_id, group_by=group_by, days=days)
    return {"group_by": group_by, "days": days, "items": rows,
            "total_tokens": sum(r["total_tokens"] for r in rows)}


@router.get("/services/{service_id}/metrics", summary="Monitoring: requests, tokens, latency, errors")
async def metrics(service_id: str, principal: Principal = Authorized("maas:services:getMetrics"),
                  minutes: Annotated[int, Query(ge=1, le=30 * 24 * 60)] = 60,
                  platform: Platform = Depends(get_platform)):
    service = await get_service(platform, service_id)
    if service is None or service.tenant_id != principal.tenant_id:
        raise not_found("service", service_id)
    return await service_metrics(platform, service_id=service_id, minutes=minutes)
