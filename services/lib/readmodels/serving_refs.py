"""Read-only view of model services and their instances, for the services that route to them.

The serving API owns ``model_services`` (the desired state and status users see); the deployer owns
``service_instances`` (what actually runs) and ``service_logs``. The gateway and each of those two
read the others' documents only through this module, the published query contract of the serving
domain (like ``model_refs`` for models): the fields read here change only compatibly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SERVICES = "model_services"
INSTANCES = "service_instances"
SERVICE_LOGS = "service_logs"

PRESET_TENANT = "platform"          # tenant of the platform's preset services
CALLABLE_STATES = ("running", "alarm")   # guide 11: only a running service can be called (alarm = partly healthy)


def preset_service_id(template_id: str) -> str:
    """The id of the preset service of a template with preset weights (its name is the template id)."""
    return f"preset-{template_id}"


@dataclass(frozen=True)
class ServiceRef:
    id: str
    tenant_id: str
    name: str
    status: str
    desired: str                     # "running" | "stopped"
    preset: bool
    qps_limit: int
    max_model_len: int
    content_moderation: bool
    instance_count: int
    template_id: str
    version_id: str
    generation: int

    @property
    def callable(self) -> bool:
        return self.status in CALLABLE_STATES


def service_ref(doc: dict) -> ServiceRef:
    model = doc.get("model") or {}
    return ServiceRef(
        id=doc["_id"], tenant_id=doc["tenant_id"], name=doc["name"], status=doc["status"],
        desired=doc.get("desired", "running"), preset=bool(doc.get("preset")), qps_limit=int(doc["qps_limit"]),
        max_model_len=int(doc["max_model_len"]), content_moderation=bool(doc.get("content_moderation", True)),
        instance_count=int(doc["instance_count"]), template_id=model.get("template_id", ""),
        version_id=model.get("version_id", ""), generation=int(doc.get("generation", 1)))


async def get_service(platform, service_id: str) -> ServiceRef | None:
    doc = await platform.mongo[SERVICES].find_one({"_id": service_id})
    return service_ref(doc) if doc else None


async def find_service_by_name(platform, *, tenant_id: str, name: str) -> ServiceRef | None:
    """The tenant's service of that name, else the preset service of that name."""
    doc = await platform.mongo[SERVICES].find_one({"tenant_id": tenant_id, "name": name})
    if doc is None:
        doc = await platform.mongo[SERVICES].find_one({"tenant_id": PRESET_TENANT, "name": name})
    return service_ref(doc) if doc else None


async def list_callable_services(platform, *, tenant_id: str) -> list[ServiceRef]:
    """The tenant's running services plus every preset service (presets start on first use)."""
    docs = platform.mongo[SERVICES].find(
        {"$or": [{"tenant_id": tenant_id, "status": {"$in": list(CALLABLE_STATES)}}, {"tenant_id": PRESET_TENANT}]})
    return [service_ref(d) async for d in docs]


@dataclass(frozen=True)
class InstanceRef:
    id: str
    service_id: str
    url: str
    status: str
    secret: str = field(default="", repr=False)   # sent to the instance with every call; never logged


async def ready_instances(platform, service_id: str) -> list[InstanceRef]:
    docs = platform.mongo[INSTANCES].find({"service_id": service_id, "status": "ready"})
    return [InstanceRef(id=d["_id"], service_id=service_id, url=d["url"], status=d["status"],
                        secret=d.get("secret") or "") async for d in docs]
