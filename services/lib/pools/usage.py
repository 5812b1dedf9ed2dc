"""Compute usage per account, and prepaid packages (guide: 购买套餐包) deducted before on-demand.

Every allocation a pool releases becomes one usage record — who, which pool, which job or instance,
how long, how many CPU-hours and accelerator-hours — written in the same unit of work as the
release, so no run goes unrecorded or is recorded twice. On the public pool, an account's packages
(CPU-hours and accelerator-hours, valid until they expire) pay first, earliest expiry first; the rest
is metered as on-demand. Dedicated pools are the account's own machines: metered, never charged to
a package.

A package is granted by the platform administrator (a self-hosted platform sells nothing itself:
the grant is the purchase).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING

from contracts import new_id
from contracts.timestamps import instants
from services.lib.common.cluster import PUBLIC_POOL, Resources
from services.lib.common.jobs import now
from services.lib.common.mongo import IndexSpec

USAGE_RECORDS = "compute_usage"
PACKAGES = "compute_packages"
INDEXES: list[IndexSpec] = [
    (USAGE_RECORDS, [("tenant_id", ASCENDING), ("ended_at", ASCENDING)], {}),
    (PACKAGES, [("tenant_id", ASCENDING), ("expires_at", ASCENDING)], {}),
]
_EPS = 1e-12


class PackageGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_id: str = Field(min_length=1, max_length=64, description="the account (tenant) receiving the package")
    name: str = Field(min_length=1, max_length=64)
    cpu_hours: float = Field(0, ge=0, le=1_000_000)
    accelerator_hours: float = Field(0, ge=0, le=1_000_000)
    valid_days: int = Field(30, ge=1, le=3660, description="the package expires this many days after the grant")


async def record(uow, allocation: dict, *, ended_at: datetime) -> dict | None:
    """The usage record of a released ``allocation``, its public-pool hours paid from packages first
    (None for work that held nothing, e.g. a weight validation)."""
    if not (allocation["resources"].get("cpus") or allocation["resources"].get("gpus")):
        return None
    started = allocation["created_at"]
    if started.tzinfo is None:
        started = started.replace(tzinfo=ended_at.tzinfo)
    seconds = max(0.0, (ended_at - started).total_seconds())
    r = Resources.from_dict(allocation["resources"])
    cpu_hours, acc_hours = r.cpus * seconds / 3600, r.gpus * seconds / 3600
    paid_cpu = paid_acc = 0.0
    if allocation["pool"] == PUBLIC_POOL and (cpu_hours > _EPS or acc_hours > _EPS):
        paid_cpu, paid_acc = await _pay_from_packages(uow, allocation["tenant_id"], cpu_hours, acc_hours, at=ended_at)
    doc = {"_id": f"{allocation['_id']}:{allocation['run_id']}", "tenant_id": allocation["tenant_id"],
           "pool": allocation["pool"], "kind": allocation["kind"], "job_id": allocation["job_id"],
           "resources": r.as_dict(), "started_at": started, "ended_at": ended_at, "seconds": seconds,
           "cpu_hours": cpu_hours, "accelerator_hours": acc_hours,
           "package_cpu_hours": paid_cpu, "package_accelerator_hours": paid_acc,
           "on_demand_cpu_hours": cpu_hours - paid_cpu, "on_demand_accelerator_hours": acc_hours - paid_acc}
    await uow.collection(USAGE_RECORDS).insert_one(doc, session=uow.session)
    return doc


async def _pay_from_packages(uow, tenant_id: str, cpu_hours: float, acc_hours: float, *,
                             at: datetime) -> tuple[float, float]:
    packages = uow.collection(PACKAGES)
    paid = {"cpu_hours_left": 0.0, "accelerator_hours_left": 0.0}
    owed = {"cpu_hours_left": cpu_hours, "accelerator_hours_left": acc_hours}
    cursor = packages.find({"tenant_id": tenant_id, "expires_at": {"$gt": at},
                            "$or": [{"cpu_hours_left": {"$gt": 0}}, {"accelerator_hours_left": {"$gt": 0}}]},
                           session=uow.session).sort("expires_at", ASCENDING)
    async for package in cursor:
        take = {k: min(owed[k], max(package.get(k, 0.0), 0.0)) for k in owed}
        if all(v <= _EPS for v in take.values()):
            continue
        # Conditional on what is left: a concurrent deduction makes this one retry (write conflict).
        await packages.update_one({"_id": package["_id"], **{k: {"$gte": v} for k, v in take.items() if v > _EPS}},
                                  {"$inc": {k: -v for k, v in take.items() if v > _EPS}}, session=uow.session)
        for k, v in take.items():
            owed[k] -= v
            paid[k] += v
        if all(v <= _EPS for v in owed.values()):
            break
    return paid["cpu_hours_left"], paid["accelerator_hours_left"]


async def grant(platform, *, request: PackageGrant, granted_by: str) -> dict:
    at = now()
    doc = {"_id": new_id(), "tenant_id": request.account_id, "name": request.name,
           "cpu_hours": request.cpu_hours, "accelerator_hours": request.accelerator_hours,
           "cpu_hours_left": request.cpu_hours, "accelerator_hours_left": request.accelerator_hours,
           "granted_by": granted_by, "granted_at": at, "expires_at": at + timedelta(days=request.valid_days)}
    await platform.mongo[PACKAGES].insert_one(doc)
    return package_view(doc)


def package_view(doc: dict) -> dict:
    return instants({"id": doc["_id"], "name": doc["name"], "cpu_hours": doc["cpu_hours"],
            "accelerator_hours": doc["accelerator_hours"], "cpu_hours_left": round(doc["cpu_hours_left"], 6),
            "accelerator_hours_left": round(doc["accelerator_hours_left"], 6), "granted_at": doc["granted_at"],
            "expires_at": doc["expires_at"]})


async def packages_of(platform, *, tenant_id: str) -> list[dict]:
    return [package_view(d) async for d in platform.mongo[PACKAGES].find({"tenant_id": tenant_id}).sort("expires_at", 1)]


_SUMS = ("seconds", "cpu_hours", "accelerator_hours", "package_cpu_hours", "package_accelerator_hours",
         "on_demand_cpu_hours", "on_demand_accelerator_hours")


async def summary(platform, *, tenant_id: str, group_by: str, days: int) -> list[dict]:
    """The account's compute usage over the last ``days``, one row per pool, kind or day."""
    since = now() - timedelta(days=days)
    rows: dict[str, dict] = {}
    async for doc in platform.mongo[USAGE_RECORDS].find({"tenant_id": tenant_id, "ended_at": {"$gte": since}}):
        key = doc[group_by] if group_by != "day" else doc["ended_at"].strftime("%Y-%m-%d")
        row = rows.setdefault(key, {group_by: key, "runs": 0, **{k: 0.0 for k in _SUMS}})
        row["runs"] += 1
        for k in _SUMS:
            row[k] += doc.get(k, 0.0)
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
            for _, row in sorted(rows.items())]
