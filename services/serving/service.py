"""Use cases of model services: deploy, start, stop, delete, scale, QPS, upgrade, moderation.

Each records the new desired state and its event in one transaction; the deployer reconciles the
instances and reports back (``apply_report``). ``generation`` is bumped on every change the
deployer must act on, and doubles as an optimistic lock against concurrent changes.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from contracts import new_id
from contracts.events import TaskRecordChanged
from contracts.notifications import NotificationRuleChanged
from contracts.serving import (ServiceDeleted, ServiceDeployRequested, ServiceModerationChanged, ServiceQpsChanged,
                               ServiceScaled, ServiceStarted, ServiceStatusChanged, ServiceStatusReported,
                               ServiceStopped, ServiceUpgraded)
from services.lib.common.account_limits import account_limits, refuse
from services.lib.common.context import Platform
from services.lib.common.errors import ApiError, bad_request, conflict, not_found
from services.lib.readmodels.model_refs import resolve_model_version
from services.lib.common.objectstore import ObjectPath
from services.lib.pools import service as pools
from services.lib.readmodels.serving_refs import INSTANCES, PRESET_TENANT, SERVICE_LOGS, SERVICES, preset_service_id
from services.serving.models import (EVENTS_KEPT_DAYS, INSTANCE_SPECS, QPS_CHANGEABLE, SCALABLE, SERVICE_EVENTS,
                                     STARTABLE, STOPPABLE, UPGRADABLE, ModerationRequest, ServiceCreate,
                                     ServiceView, Status, instance_resources, recommended_instances, service_view)
from services.serving.templates import TemplateInfo, preset_templates, template_info

log = logging.getLogger(__name__)
DEPLOYMENT = "deployment"


def _now() -> datetime:
    return datetime.now(UTC)


def _subject(service_id: str) -> str:
    return f"services/{service_id}"


def _template(template_id: str) -> TemplateInfo:
    info = template_info(template_id)
    if info is None:
        raise bad_request(f"model_id: the model's template '{template_id}' is not in the model square",
                          field="model_id")
    return info


async def _timeline(uow, doc: dict, kind: str, message: str, *, level: str = "info",
                    at: datetime | None = None) -> None:
    """One entry of the service's event list; ``at`` is when it happened (reports arrive later)."""
    await uow.collection(SERVICE_EVENTS).insert_one(
        {"_id": new_id(), "service_id": doc["_id"], "tenant_id": doc["tenant_id"], "kind": kind, "level": level,
         "message": message, "at": at or _now()}, session=uow.session)


def _task_record(uow, doc: dict, status: str, *, removed: bool = False) -> None:
    """The registry keeps a deployment as a task record of the model version it serves."""
    model = doc["model"]
    if doc.get("preset") or not model.get("model_id"):
        return
    uow.emit(TaskRecordChanged(task_id=doc["_id"], task_kind=DEPLOYMENT, task_name=doc["name"],
                               model_id=model["model_id"], version_id=model["version_id"], status=status,
                               removed=removed),
             tenant_id=doc["tenant_id"], subject=_subject(doc["_id"]))


def _status_changed(uow, doc: dict, previous: str | None, status: str, message: str | None,
                    ready: int | None = None) -> None:
    uow.emit(ServiceStatusChanged(service_id=doc["_id"], name=doc["name"], status=status, previous_status=previous,
                                  message=message, ready_instances=doc.get("ready_instances", 0) if ready is None
                                  else ready, instance_count=doc["instance_count"]),
             tenant_id=doc["tenant_id"], subject=_subject(doc["_id"]))


async def _load(platform: Platform, *, tenant_id: str, service_id: str) -> dict:
    doc = await platform.mongo[SERVICES].find_one({"_id": service_id, "tenant_id": tenant_id})
    if doc is None:
        raise not_found("service", service_id)
    return doc


def _require_state(doc: dict, allowed: set[Status], action: str) -> None:
    if doc["status"] not in allowed:
        states = ", ".join(sorted(s.value for s in allowed))
        raise conflict(f"cannot {action} service '{doc['name']}' while it is {doc['status']} "
                       f"(allowed when: {states})", code="invalid_service_state")


async def _update(uow, doc: dict, changes: dict, *, bump: bool = True) -> dict:
    """Apply changes if nobody changed the service meanwhile; bump the generation the deployer reconciles."""
    update: dict = {"$set": {**changes, "updated_at": _now()}}
    if bump:
        update["$inc"] = {"generation": 1}
    result = await uow.collection(SERVICES).update_one(
        {"_id": doc["_id"], "generation": doc.get("generation", 1), "status": doc["status"]}, update,
        session=uow.session)
    if result.modified_count != 1:
        raise conflict(f"service '{doc['name']}' changed while applying this request; try again",
                       code="concurrent_update")
    new = {**doc, **changes}
    if bump:
        new["generation"] = doc.get("generation", 1) + 1
    return new


async def _view(platform: Platform, doc: dict, *, with_instances: bool = False) -> ServiceView:
    info = template_info(doc["model"]["template_id"])
    instances = None
    if with_instances:
        instances = [i async for i in platform.mongo[INSTANCES].find({"service_id": doc["_id"]}).sort(
            "started_at", ASCENDING)]
    return service_view(doc, per_instance_qps=info.recommended_qps if info else None, instances=instances)


# ---------------------------------------------------------------------------------------------- deploy

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


async def _max_model_len(platform: Platform, *, template_len: int, storage_uri: str) -> int:
    """The template's max input+output length, capped by what the weights themselves support."""
    try:
        folder = ObjectPath.parse(storage_uri).as_prefix()
        config = json.loads(await platform.store.get_bytes(ObjectPath(folder.bucket, folder.key + "config.json")))
    except Exception:  # no readable config.json (should not happen after validation): trust the template
        return template_len
    own = next((config[k] for k in _CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0), None)
    return min(template_len, own) if own else template_len


def preset_names() -> set[str]:
    return {t.id for t in preset_templates()}


async def recommend(platform: Platform, *, tenant_id: str, qps: int, model_id: str | None = None,
                    template_id: str | None = None) -> dict:
    """Recommended instance count = ceil(QPS ÷ the template's single-instance QPS)."""
    if model_id:
        ref = await resolve_model_version(platform, tenant_id=tenant_id, model_id=model_id, require_created=False)
        template_id = ref.template_id
    if not template_id:
        raise bad_request("model_id or template_id is required", field="model_id")
    info = template_info(template_id)
    if info is None:
        raise not_found("template", template_id)
    return {"template_id": info.id, "qps_limit": qps, "recommended_qps_per_instance": info.recommended_qps,
            "recommended_instance_count": recommended_instances(qps, info.recommended_qps),
            "max_model_len": info.context_length}


async def _within_account_limits(platform: Platform, *, tenant_id: str, services: int = 0, instances: int = 0) -> None:
    """403 when the account would pass its caps on services or instances (account_limits.py)."""
    limits = account_limits()
    mine = [d async for d in platform.mongo[SERVICES].find({"tenant_id": tenant_id}, {"instance_count": 1})]
    if services:
        refuse("services", limit=limits.services, current=len(mine), wanted=services)
    if instances > 0:
        refuse("instances", limit=limits.instances, current=sum(d.get("instance_count", 0) for d in mine),
               wanted=instances, field="instance_count")


async def deploy(platform: Platform, *, tenant_id: str, request: ServiceCreate) -> ServiceView:
    if request.instance_spec not in INSTANCE_SPECS:
        raise bad_request(f"instance_spec: '{request.instance_spec}' is not an instance spec; choose one of "
                          f"{', '.join(INSTANCE_SPECS)}", field="instance_spec")
    if request.name in preset_names():
        raise conflict(f"name: '{request.name}' is the name of a preset service", field="name")
    ref = await resolve_model_version(platform, tenant_id=tenant_id, model_id=request.model_id,
                                      version=request.version, field="model_id")
    info = _template(ref.template_id)
    if not info.deployable:
        raise bad_request(f"model_id: template '{info.name}' does not support deployment", field="model_id")
    if not ref.storage_uri:
        raise conflict(f"model_id: model '{ref.model_name}' V{ref.version_number} has no imported weights",
                       code="model_not_ready", field="model_id")
    if await platform.mongo[SERVICES].find_one({"tenant_id": tenant_id, "name": request.name}, {"_id": 1}):
        raise conflict(f"name: a service named '{request.name}' already exists", field="name")
    await _within_account_limits(platform, tenant_id=tenant_id, services=1, instances=request.instance_count)
    # Per instance: each instance is placed on its own; more instances than fit at once wait for room.
    one, what = instance_resources(request.instance_spec), f"an instance of spec {request.instance_spec}"
    placement = await pools.placement(platform, tenant_id=tenant_id, requested=request.resource_pool,
                                      resources=one, what=what)
    await pools.require_one_node_fits(platform, pool=placement["pool"], resources=one, what=what)
    max_model_len = await _max_model_len(platform, template_len=info.context_length, storage_uri=ref.storage_uri)
    now = _now()
    doc = {
        "_id": new_id(), "tenant_id": tenant_id, "name": request.name, "description": request.description,
        "preset": False,
        "model": {"model_id": ref.model_id, "model_name": ref.model_name, "version_id": ref.version_id,
                  "version_number": ref.version_number, "template_id": ref.template_id,
                  "quantization": ref.quantization, "storage_uri": ref.storage_uri},
        "resource_pool": request.resource_pool, "instance_spec": request.instance_spec, "placement": placement,
        "qps_limit": request.qps_limit, "instance_count": request.instance_count,
        "max_model_len": max_model_len, "content_moderation": request.content_moderation,
        "notification": request.notification.model_dump(), "auto_stop": request.auto_stop.model_dump(),
        "stop_at": None, "status": Status.deploying.value, "desired": "running", "generation": 1,
        "ready_instances": 0, "operation": None, "message": None, "created_at": now, "updated_at": now,
    }
    try:
        async with platform.uow() as uow:
            await uow.collection(SERVICES).insert_one(doc, session=uow.session)
            await _timeline(uow, doc, "deploy", f"deployment requested: {ref.model_name} V{ref.version_number}, "
                            f"{request.instance_count} instance(s), QPS limit {request.qps_limit}")
            uow.emit(ServiceDeployRequested(
                service_id=doc["_id"], name=doc["name"], model_id=ref.model_id, version_id=ref.version_id,
                version_number=ref.version_number, template_id=ref.template_id, storage_uri=ref.storage_uri,
                instance_count=request.instance_count, qps_limit=request.qps_limit,
                max_model_len=max_model_len, instance_spec=request.instance_spec,
                resource_pool=request.resource_pool, content_moderation=request.content_moderation),
                tenant_id=tenant_id, subject=_subject(doc["_id"]))
            _task_record(uow, doc, Status.deploying.value)
            if request.notification.enabled:
                uow.emit(NotificationRuleChanged(subject=_subject(doc["_id"]),
                                                 topic_name=request.notification.topic_name or "",
                                                 events=list(request.notification.events)),
                         tenant_id=tenant_id, subject=_subject(doc["_id"]))
    except DuplicateKeyError:
        raise conflict(f"name: a service named '{request.name}' already exists", field="name") from None
    return await _view(platform, doc)


# ---------------------------------------------------------------------------------------------- queries

async def list_services(platform: Platform, *, tenant_id: str, name: str | None = None, status: str | None = None,
                        offset: int = 0, limit: int = 50) -> dict:
    query: dict = {"tenant_id": tenant_id}
    if status:
        query["status"] = status
    docs = [d async for d in platform.mongo[SERVICES].find(query).sort("created_at", DESCENDING)]
    if name:
        docs = [d for d in docs if name.lower() in d["name"].lower()]
    return {"total": len(docs), "items": [await _view(platform, d) for d in docs[offset:offset + limit]]}


async def get_service(platform: Platform, *, tenant_id: str, service_id: str) -> ServiceView:
    return await _view(platform, await _load(platform, tenant_id=tenant_id, service_id=service_id),
                       with_instances=True)


async def list_events(platform: Platform, *, tenant_id: str, service_id: str, offset: int = 0,
                      limit: int = 100) -> dict:
    await _load(platform, tenant_id=tenant_id, service_id=service_id)
    since = _now() - timedelta(days=EVENTS_KEPT_DAYS)  # the TTL index removes them; never show older ones
    query = {"service_id": service_id, "tenant_id": tenant_id, "at": {"$gte": since}}
    total = await platform.mongo[SERVICE_EVENTS].count_documents(query)
    docs = platform.mongo[SERVICE_EVENTS].find(query).sort("at", DESCENDING).skip(offset).limit(limit)
    return {"total": total, "items": [{"kind": d["kind"], "level": d["level"], "message": d["message"],
                                       "at": d["at"]} async for d in docs]}


async def search_logs(platform: Platform, *, tenant_id: str, service_id: str, search: str | None = None,
                      instance_id: str | None = None, limit: int = 200) -> dict:
    """The newest ``limit`` log lines (oldest first) of the service's instances, optionally filtered."""
    await _load(platform, tenant_id=tenant_id, service_id=service_id)
    query: dict = {"service_id": service_id}
    if instance_id:
        query["instance_id"] = instance_id
    if search:
        query["line"] = {"$regex": re.escape(search), "$options": "i"}
    docs = [d async for d in platform.mongo[SERVICE_LOGS].find(query).sort("seq", DESCENDING).limit(limit)]
    docs.reverse()
    return {"items": [{"instance_id": d["instance_id"], "at": d["at"], "line": d["line"]} for d in docs]}


# ---------------------------------------------------------------------------------------------- changes

async def stop(platform: Platform, *, tenant_id: str, service_id: str, reason: str = "user") -> ServiceView:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    _require_state(doc, STOPPABLE, "stop")
    async with platform.uow() as uow:
        doc = await _stop_in(uow, doc, reason=reason)
    return await _view(platform, doc)


async def _stop_in(uow, doc: dict, *, reason: str) -> dict:
    previous = doc["status"]
    doc = await _update(uow, doc, {"desired": "stopped", "status": Status.stopping.value, "stop_at": None,
                                   "operation": None, "message": None})
    await _timeline(uow, doc, "stop", "stop requested" + (" (auto-stop time reached)" if reason == "auto_stop" else ""))
    uow.emit(ServiceStopped(service_id=doc["_id"], generation=doc["generation"], reason=reason),
             tenant_id=doc["tenant_id"], subject=_subject(doc["_id"]))
    _status_changed(uow, doc, previous, Status.stopping.value, None)
    _task_record(uow, doc, Status.stopping.value)
    return doc


async def start(platform: Platform, *, tenant_id: str, service_id: str, reason: str = "user") -> ServiceView:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    _require_state(doc, STARTABLE, "start")
    async with platform.uow() as uow:
        doc = await _start_in(uow, doc, reason=reason)
    return await _view(platform, doc)


async def _start_in(uow, doc: dict, *, reason: str) -> dict:
    previous = doc["status"]
    doc = await _update(uow, doc, {"desired": "running", "status": Status.deploying.value, "message": None,
                                   "ready_instances": 0, "stop_at": None})
    await _timeline(uow, doc, "start", "start requested" + ("" if reason == "user" else f" ({reason})"))
    uow.emit(ServiceStarted(service_id=doc["_id"], generation=doc["generation"], reason=reason),
             tenant_id=doc["tenant_id"], subject=_subject(doc["_id"]))
    _status_changed(uow, doc, previous, Status.deploying.value, None)
    _task_record(uow, doc, Status.deploying.value)
    return doc


async def delete(platform: Platform, *, tenant_id: str, service_id: str) -> None:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    async with platform.uow() as uow:
        result = await uow.collection(SERVICES).delete_one({"_id": service_id, "tenant_id": tenant_id},
                                                           session=uow.session)
        if result.deleted_count != 1:
            raise not_found("service", service_id)
        await _timeline(uow, doc, "delete", "service deleted")
        model = doc["model"]
        # The deployer stops whatever still runs: a deleted service has no desired state left.
        uow.emit(ServiceDeleted(service_id=service_id, name=doc["name"], model_id=model.get("model_id", ""),
                                version_id=model.get("version_id", "")),
                 tenant_id=tenant_id, subject=_subject(service_id))
        _task_record(uow, doc, "deleted", removed=True)
        if (doc.get("notification") or {}).get("enabled"):
            uow.emit(NotificationRuleChanged(subject=_subject(service_id), removed=True),
                     tenant_id=tenant_id, subject=_subject(service_id))


async def scale(platform: Platform, *, tenant_id: str, service_id: str, instance_count: int) -> ServiceView:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    _require_state(doc, SCALABLE, "scale")
    if instance_count == doc["instance_count"]:
        return await _view(platform, doc, with_instances=True)
    await _within_account_limits(platform, tenant_id=tenant_id, instances=instance_count - doc["instance_count"])
    async with platform.uow() as uow:
        previous = doc["instance_count"]
        doc = await _update(uow, doc, {"instance_count": instance_count, "operation": "scaling"})
        await _timeline(uow, doc, "scale", f"instance count {previous} -> {instance_count}")
        uow.emit(ServiceScaled(service_id=service_id, from_count=previous, to_count=instance_count,
                               generation=doc["generation"]), tenant_id=tenant_id, subject=_subject(service_id))
    return await _view(platform, doc, with_instances=True)


async def set_qps(platform: Platform, *, tenant_id: str, service_id: str, qps_limit: int) -> ServiceView:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    _require_state(doc, QPS_CHANGEABLE, "change the QPS limit of")
    async with platform.uow() as uow:
        previous = doc["qps_limit"]
        # The gateway reads the limit on its next request; instances need not change.
        doc = await _update(uow, doc, {"qps_limit": qps_limit}, bump=False)
        await _timeline(uow, doc, "qps", f"QPS limit {previous} -> {qps_limit}")
        uow.emit(ServiceQpsChanged(service_id=service_id, from_qps=previous, to_qps=qps_limit),
                 tenant_id=tenant_id, subject=_subject(service_id))
    return await _view(platform, doc)


async def upgrade(platform: Platform, *, tenant_id: str, service_id: str, version: int | str) -> ServiceView:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    _require_state(doc, UPGRADABLE, "upgrade")
    current = doc["model"]
    ref = await resolve_model_version(platform, tenant_id=tenant_id, model_id=current["model_id"], version=version,
                                      field="version")
    if ref.version_id == current["version_id"]:
        raise bad_request(f"version: the service already runs V{ref.version_number}; choose another version",
                          field="version")
    if not ref.storage_uri:
        raise conflict(f"version: V{ref.version_number} has no imported weights", code="model_not_ready",
                       field="version")
    running = doc["status"] in (Status.running, Status.alarm)
    model = {**current, "version_id": ref.version_id, "version_number": ref.version_number,
             "storage_uri": ref.storage_uri, "quantization": ref.quantization}
    info = _template(ref.template_id)
    max_model_len = await _max_model_len(platform, template_len=info.context_length, storage_uri=ref.storage_uri)
    async with platform.uow() as uow:
        doc = await _update(uow, doc, {"model": model, "max_model_len": max_model_len,
                                       "operation": "upgrading" if running else None})
        await _timeline(uow, doc, "upgrade", f"upgrade V{current['version_number']} -> V{ref.version_number}"
                        + (" (rolling)" if running else " (applies at the next start)"))
        uow.emit(ServiceUpgraded(service_id=service_id, from_version_id=current["version_id"],
                                 from_version_number=current["version_number"], to_version_id=ref.version_id,
                                 to_version_number=ref.version_number, storage_uri=ref.storage_uri,
                                 generation=doc["generation"]), tenant_id=tenant_id, subject=_subject(service_id))
        # The task record moves to the version the service now serves.
        _task_record(uow, doc, doc["status"])
    return await _view(platform, doc)


async def set_moderation(platform: Platform, *, tenant_id: str, service_id: str,
                         request: ModerationRequest) -> ServiceView:
    doc = await _load(platform, tenant_id=tenant_id, service_id=service_id)
    async with platform.uow() as uow:
        doc = await _update(uow, doc, {"content_moderation": request.enabled}, bump=False)
        await _timeline(uow, doc, "moderation", "content moderation " + ("on" if request.enabled else "off"),
                        level="info" if request.enabled else "warning")
        uow.emit(ServiceModerationChanged(service_id=service_id, enabled=request.enabled),
                 tenant_id=tenant_id, subject=_subject(service_id))
    return await _view(platform, doc)


# ---------------------------------------------------------------------------------------------- reports

async def apply_report(platform: Platform, *, event_id: str, report: ServiceStatusReported,
                       at: datetime | None = None) -> None:
    """The deployer's outcome for one generation becomes the status users see."""
    async with platform.uow() as uow:
        await uow.mark_processed(consumer="serving", event_id=event_id)
        doc = await uow.collection(SERVICES).find_one({"_id": report.service_id}, session=uow.session)
        if doc is None or report.generation < doc.get("generation", 1):
            return  # deleted, or about a desired state that has been replaced since
        if (doc["desired"] == "stopped") != (report.status == "stopped"):
            return  # the deployer has not caught up with the latest request yet
        changes: dict = {"status": report.status, "ready_instances": report.ready_instances,
                         "message": report.message, "operation": None, "updated_at": _now()}
        auto_stop = doc.get("auto_stop") or {}
        if report.status == Status.running and auto_stop.get("enabled") and doc.get("stop_at") is None:
            # Guide 8: the running time counts from when the service runs, not while it deploys.
            changes["stop_at"] = _now() + timedelta(hours=float(auto_stop.get("hours", 1)))
        await uow.collection(SERVICES).update_one({"_id": doc["_id"]}, {"$set": changes}, session=uow.session)
        if report.status != doc["status"]:
            level = "error" if report.status in ("failed", "alarm") else "info"
            await _timeline(uow, doc, "status", f"{doc['status']} -> {report.status}"
                            + (f": {report.message}" if report.message else ""), level=level, at=at)
            _status_changed(uow, doc, doc["status"], report.status, report.message, report.ready_instances)
            _task_record(uow, doc, report.status)


async def record_instance_change(platform: Platform, *, event_id: str, service_id: str, instance_id: str,
                                 status: str, message: str | None, at: datetime | None = None) -> None:
    async with platform.uow() as uow:
        await uow.mark_processed(consumer="serving", event_id=event_id)
        doc = await uow.collection(SERVICES).find_one({"_id": service_id}, session=uow.session)
        if doc is None:
            return
        level = "error" if status in ("failed", "unhealthy") else "info"
        await _timeline(uow, doc, "instance", f"instance {instance_id[:8]} {status}"
                        + (f": {message}" if message else ""), level=level, at=at)


async def wake_preset(platform: Platform, *, event_id: str, service_id: str) -> None:
    """Lazy start of a preset service on its first call; a no-op when it already runs or starts."""
    async with platform.uow() as uow:
        await uow.mark_processed(consumer="serving", event_id=event_id)
        doc = await uow.collection(SERVICES).find_one({"_id": service_id, "preset": True}, session=uow.session)
        if doc is None or doc["desired"] == "running" or doc["status"] not in STARTABLE:
            return
        await _start_in(uow, doc, reason="first call")


async def sweep_auto_stop(platform: Platform, *, now: datetime | None = None) -> int:
    """Stop the services whose auto-stop time has come; returns how many were stopped."""
    now = now or _now()
    stopped = 0
    async for doc in platform.mongo[SERVICES].find({"desired": "running", "stop_at": {"$ne": None, "$lte": now}}):
        try:
            async with platform.uow() as uow:
                await _stop_in(uow, doc, reason="auto_stop")
            stopped += 1
        except ApiError:  # changed concurrently: the next sweep sees the new state
            continue
    return stopped


# ---------------------------------------------------------------------------------------------- presets

PRESET_IMPORTS = "preset_imports"   # the registry's record of imported preset weights (read-only here)


async def ensure_preset_services(platform: Platform, *, autostart: bool, qps_limit: int,
                                 instance_spec: str) -> list[str]:
    """A preset service per template whose preset weights are imported; returns the ids that exist."""
    ready = {d["_id"]: d async for d in platform.mongo[PRESET_IMPORTS].find({"status": "ready"})}
    existing = []
    for info in preset_templates():
        imported = ready.get(info.id)
        if imported is None:
            continue
        service_id = preset_service_id(info.id)
        existing.append(service_id)
        if await platform.mongo[SERVICES].find_one({"_id": service_id}, {"_id": 1}):
            continue
        storage_uri = imported.get("uri") or f"s3://{info.preset_bucket}/{info.preset_prefix}"
        max_model_len = await _max_model_len(platform, template_len=info.context_length, storage_uri=storage_uri)
        now = _now()
        doc = {
            "_id": service_id, "tenant_id": PRESET_TENANT, "name": info.id,
            "description": f"Preset service of {info.name}", "preset": True,
            "model": {"model_id": "", "model_name": info.name, "version_id": service_id, "version_number": 1,
                      "template_id": info.id, "quantization": None, "storage_uri": storage_uri},
            "resource_pool": "public", "instance_spec": instance_spec, "qps_limit": qps_limit, "instance_count": 1,
            "placement": {"pool": "public", **instance_resources(instance_spec).as_dict()},
            "max_model_len": max_model_len, "content_moderation": True,  # guide 9: always on for presets
            "notification": {"enabled": False}, "auto_stop": {"enabled": False}, "stop_at": None,
            "status": Status.deploying.value if autostart else Status.stopped.value,
            "desired": "running" if autostart else "stopped", "generation": 1, "ready_instances": 0,
            "operation": None, "message": None, "created_at": now, "updated_at": now,
        }
        try:
            async with platform.uow() as uow:
                await uow.collection(SERVICES).insert_one(doc, session=uow.session)
                await _timeline(uow, doc, "deploy", "preset service created"
                                + (" and starting" if autostart else "; it starts on its first call"))
                if autostart:
                    uow.emit(ServiceStarted(service_id=service_id, generation=1, reason="preset autostart"),
                             tenant_id=PRESET_TENANT, subject=_subject(service_id))
        except DuplicateKeyError:
            pass  # another process created it
    return existing
