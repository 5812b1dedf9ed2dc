"""Use cases of the registry: my models, versions, task records. Keyword-only, one transaction each."""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from contracts import new_id
from contracts.events import ModelArtifactRejected, ModelCreated, ModelDeleted, ModelVersionCreated
from services.lib.common.account_limits import account_limits, refuse
from services.lib.common.context import Platform
from services.lib.common.errors import ApiError, bad_request, conflict, not_found
from services.lib.common.objectstore import ObjectPath
from services.lib.readmodels.buckets import check_access
from services.lib.catalog.templates import Template, default_catalog
from services.registry.models import (MANAGED_BUCKET, MAX_VERSIONS, MODELS, PRESETS, TASK_RECORDS, VERSIONS,
                                      ModelCreate, ModelView, Status, TaskStatus, VersionCreate, VersionView,
                                      model_view, version_view)
from services.registry.validation_jobs import request_validation
from services.registry.weight_checks import is_hf_folder

WEIGHT_VALIDATION = "weight_validation"
# Records of finished steps that made the version (not tasks using it): they never block a delete.
HISTORY_ONLY_TASKS = (WEIGHT_VALIDATION, "weight_conversion")
log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def template_or_400(template_id: str) -> Template:
    template = default_catalog().get(template_id)
    if template is None:
        raise bad_request(f"template_id: '{template_id}' is not a model-square template", field="template_id")
    return template


async def _custom_weights_uri(platform: Platform, *, tenant_id: str, weights_path: str | None) -> str:
    if not weights_path:
        raise bad_request("weights_path is required when weights_source is 'custom'", field="weights_path")
    path = ObjectPath.parse(weights_path).as_prefix()
    await check_access(platform, path, tenant_id=tenant_id, field="weights_path")
    names = [o.key[len(path.key):] for o in await platform.store.list(path, recursive=False)]
    if not names:
        raise bad_request(f"weights_path: '{weights_path}' does not exist or is empty", field="weights_path")
    if not is_hf_folder(names):
        raise bad_request(
            f"weights_path: '{weights_path}' is not a Hugging Face model folder "
            "(it needs config.json and *.safetensors or *.bin weight files at its top level)", field="weights_path")
    return path.uri


async def _preset_weights_uri(platform: Platform, template: Template) -> str:
    if template.preset_weights is None:
        raise bad_request(f"weights_source: template '{template.id}' ships no preset weights; use 'custom'",
                          field="weights_source")
    state = await platform.mongo[PRESETS].find_one({"_id": template.id})
    if not state or state.get("status") != "ready":
        progress = (state or {}).get("progress", 0)
        raise conflict(f"the preset weights of '{template.id}' are still being imported ({progress:.0%}); "
                       "try again shortly", code="preset_not_ready", field="weights_source")
    preset = template.preset_weights
    return ObjectPath(preset.bucket, preset.prefix).as_prefix().uri


def _managed_uri(tenant_id: str, model_id: str, number: int) -> str:
    return ObjectPath(MANAGED_BUCKET, f"{tenant_id}/{model_id}/v{number}/").uri


def _version_doc(*, tenant_id: str, model_id: str, number: int, source_uri: str, description: str,
                 validate: bool, template: Template, preset: bool, base_version: int | None) -> dict:
    now = _now()
    return {
        "_id": new_id(), "tenant_id": tenant_id, "model_id": model_id, "number": number,
        "description": description, "source_uri": source_uri,
        # Preset weights are shared read-only; everything else gets a platform-owned copy.
        "storage_uri": source_uri if preset else None,
        "target_uri": source_uri if preset else _managed_uri(tenant_id, model_id, number),
        "validate_weights": validate, "template_id": template.id, "base_version": base_version,
        "status": Status.creating, "message": None, "created_at": now, "updated_at": now,
    }


async def _start_import(uow, *, tenant_id: str, model_id: str, version: dict, template: Template) -> None:
    """Record the weight-validation task and its job (the worker's), in the caller's transaction."""
    task_id = new_id()
    now = _now()
    await uow.collection(TASK_RECORDS).insert_one({
        "_id": task_id, "tenant_id": tenant_id, "model_id": model_id, "version_id": version["_id"],
        "kind": WEIGHT_VALIDATION, "name": f"weight-validation-V{version['number']}",
        "status": TaskStatus.running, "message": None, "checks": [], "created_at": now, "updated_at": now,
    }, session=uow.session)
    await request_validation(uow, task_id=task_id, tenant_id=tenant_id, version=version, template_id=template.id)


async def create_model(platform: Platform, *, tenant_id: str, request: ModelCreate) -> ModelView:
    template = template_or_400(request.template_id)
    preset = request.weights_source == "preset"
    source_uri = (await _preset_weights_uri(platform, template) if preset else
                  await _custom_weights_uri(platform, tenant_id=tenant_id, weights_path=request.weights_path))
    if await platform.mongo[MODELS].find_one({"tenant_id": tenant_id, "name": request.name}, {"_id": 1}):
        raise conflict(f"name: a model named '{request.name}' already exists", field="name")
    refuse("models", limit=account_limits().models,
           current=await platform.mongo[MODELS].count_documents({"tenant_id": tenant_id}))
    try:
        async with platform.uow() as uow:
            model, version = await _insert_model(
                uow, tenant_id=tenant_id, name=request.name, description=request.description, template=template,
                quantization=template.quantization.value if template.quantization else None,
                source_uri=source_uri, preset=preset, validate=request.validate_weights)
    except DuplicateKeyError:  # lost a race with a same-named create
        raise conflict(f"name: a model named '{request.name}' already exists", field="name") from None
    return model_view(model, [version_view(version)])


async def _insert_model(uow, *, tenant_id: str, name: str, description: str, template: Template,
                        quantization: str | None, source_uri: str, preset: bool, validate: bool,
                        origin: dict | None = None) -> tuple[dict, dict]:
    model_id, now = new_id(), _now()
    model = {"_id": model_id, "tenant_id": tenant_id, "name": name, "description": description,
             "template_id": template.id, "template_name": template.name, "quantization": quantization,
             "origin": origin, "status": Status.creating, "version_count": 1, "latest_version": 1,
             "created_at": now, "updated_at": now}
    version = _version_doc(tenant_id=tenant_id, model_id=model_id, number=1, source_uri=source_uri,
                           description=description, validate=validate, template=template, preset=preset,
                           base_version=None)
    await uow.collection(MODELS).insert_one(model, session=uow.session)
    await uow.collection(VERSIONS).insert_one(version, session=uow.session)
    await _start_import(uow, tenant_id=tenant_id, model_id=model_id, version=version, template=template)
    uow.emit(ModelCreated(model_id=model_id, name=name, template_id=template.id, version_id=version["_id"],
                          weights_uri=source_uri), tenant_id=tenant_id, subject=f"models/{model_id}")
    return model, version


async def register_artifact(platform: Platform, *, tenant_id: str, event_id: str, subject: str, artifact) -> None:
    """Turn a job's output (ModelArtifactProduced) into a new model or a new version; once per event.

    When that cannot be done, the job hears why (ModelArtifactRejected) rather than waiting forever.
    """
    async with platform.uow() as uow:
        await uow.mark_processed(consumer="registry", event_id=event_id)
        reason = await _make_model_or_version(uow, tenant_id=tenant_id, artifact=artifact)
        if reason is not None:
            log.warning("cannot register the output of %s %s: %s", artifact.task_kind, artifact.task_id, reason)
            uow.emit(ModelArtifactRejected(task_id=artifact.task_id, task_kind=artifact.task_kind,
                                           weights_uri=artifact.weights_uri, reason=reason),
                     tenant_id=tenant_id, subject=subject)


async def _make_model_or_version(uow, *, tenant_id: str, artifact) -> str | None:
    """Make what the artifact asks for, in the caller's transaction; None, or why it cannot be made."""
    template = default_catalog().get(artifact.template_id)
    if template is None:
        return f"template_id: the template '{artifact.template_id}' is unknown"
    origin = {"task_kind": artifact.task_kind, "task_id": artifact.task_id}
    if artifact.target == "new_model":
        name = artifact.model_name or f"{artifact.task_kind}-{artifact.task_id[:8]}"
        if await uow.collection(MODELS).find_one({"tenant_id": tenant_id, "name": name}, session=uow.session):
            name = f"{name[:55]}-{artifact.task_id[:8]}"  # the job's name was taken meanwhile
        await _insert_model(uow, tenant_id=tenant_id, name=name, description=artifact.description,
                            template=template, quantization=artifact.quantization, source_uri=artifact.weights_uri,
                            preset=False, validate=artifact.validate_weights, origin=origin)
        return None
    model = await uow.collection(MODELS).find_one({"_id": artifact.model_id, "tenant_id": tenant_id},
                                                  session=uow.session)
    if model is None:
        return f"model_id: the model {artifact.model_id} no longer exists"
    if model["version_count"] >= MAX_VERSIONS:
        return (f"model_id: model '{model['name']}' already has {MAX_VERSIONS} versions, the most a model may "
                "have; delete one and convert again")
    await _add_version(uow, tenant_id=tenant_id, model=model, template=template, artifact=artifact, origin=origin)
    return None


async def _add_version(uow, *, tenant_id: str, model: dict, template: Template, artifact, origin: dict) -> None:
    number = model["latest_version"] + 1
    version = _version_doc(tenant_id=tenant_id, model_id=model["_id"], number=number,
                           source_uri=artifact.weights_uri, description=artifact.description,
                           validate=artifact.validate_weights, template=template, preset=False,
                           base_version=model["latest_version"])
    version["origin"] = origin
    await uow.collection(MODELS).update_one(
        {"_id": model["_id"]}, {"$inc": {"version_count": 1}, "$set": {"latest_version": number,
                                                                       "updated_at": _now()}},
        session=uow.session)
    await uow.collection(VERSIONS).insert_one(version, session=uow.session)
    await _start_import(uow, tenant_id=tenant_id, model_id=model["_id"], version=version, template=template)
    uow.emit(ModelVersionCreated(model_id=model["_id"], version_id=version["_id"], version_number=number,
                                 weights_uri=artifact.weights_uri, validate_weights=artifact.validate_weights),
             tenant_id=tenant_id, subject=f"models/{model['_id']}")


async def _model_or_404(platform: Platform, *, tenant_id: str, model_id: str) -> dict:
    doc = await platform.mongo[MODELS].find_one({"_id": model_id, "tenant_id": tenant_id})
    if doc is None:
        raise not_found("model", model_id)
    return doc


async def add_version(platform: Platform, *, tenant_id: str, model_id: str, request: VersionCreate) -> VersionView:
    model = await _model_or_404(platform, tenant_id=tenant_id, model_id=model_id)
    if model["version_count"] >= MAX_VERSIONS:
        raise conflict(f"model '{model['name']}' already has {MAX_VERSIONS} versions, the maximum",
                       code="version_limit")
    if request.base_version is not None and request.base_version > model["latest_version"]:
        raise bad_request(f"base_version: V{request.base_version} does not exist", field="base_version")
    template = template_or_400(model["template_id"])
    source_uri = await _custom_weights_uri(platform, tenant_id=tenant_id, weights_path=request.weights_path)
    number = model["latest_version"] + 1
    version = _version_doc(tenant_id=tenant_id, model_id=model_id, number=number, source_uri=source_uri,
                           description=request.description, validate=request.validate_weights, template=template,
                           preset=False, base_version=request.base_version or model["latest_version"])
    try:
        async with platform.uow() as uow:
            # The version counter is the optimistic lock: a concurrent add loses and gets a 409.
            updated = await uow.collection(MODELS).update_one(
                {"_id": model_id, "tenant_id": tenant_id, "latest_version": model["latest_version"],
                 "version_count": {"$lt": MAX_VERSIONS}},
                {"$inc": {"version_count": 1}, "$set": {"latest_version": number, "updated_at": _now()}},
                session=uow.session)
            if updated.modified_count != 1:
                raise conflict("the model changed while adding this version; try again", code="concurrent_update")
            await uow.collection(VERSIONS).insert_one(version, session=uow.session)
            await _start_import(uow, tenant_id=tenant_id, model_id=model_id, version=version, template=template)
            uow.emit(ModelVersionCreated(model_id=model_id, version_id=version["_id"], version_number=number,
                                         weights_uri=source_uri, validate_weights=request.validate_weights),
                     tenant_id=tenant_id, subject=f"models/{model_id}")
    except DuplicateKeyError:
        raise conflict("the model changed while adding this version; try again", code="concurrent_update") from None
    return version_view(version)


async def list_models(platform: Platform, *, tenant_id: str, name: str | None = None, status: str | None = None,
                      template_id: str | None = None, offset: int = 0, limit: int = 50) -> dict:
    query: dict = {"tenant_id": tenant_id}
    if status:
        query["status"] = status
    if template_id:
        query["template_id"] = template_id
    docs = [d async for d in platform.mongo[MODELS].find(query).sort("created_at", DESCENDING)]
    if name:  # substring search in memory: per-tenant model counts are small
        docs = [d for d in docs if name.lower() in d["name"].lower()]
    return {"total": len(docs), "items": [model_view(d) for d in docs[offset:offset + limit]]}


async def get_model(platform: Platform, *, tenant_id: str, model_id: str) -> ModelView:
    model = await _model_or_404(platform, tenant_id=tenant_id, model_id=model_id)
    versions = [version_view(v) async for v in
                platform.mongo[VERSIONS].find({"tenant_id": tenant_id, "model_id": model_id}).sort("number", ASCENDING)]
    return model_view(model, versions)


async def get_version(platform: Platform, *, tenant_id: str, model_id: str, version: str) -> VersionView:
    await _model_or_404(platform, tenant_id=tenant_id, model_id=model_id)
    query = {"tenant_id": tenant_id, "model_id": model_id}
    query.update({"number": int(version.lstrip("vV"))} if version.lstrip("vV").isdigit() else {"_id": version})
    doc = await platform.mongo[VERSIONS].find_one(query)
    if doc is None:
        raise not_found("model version", version)
    tasks = [t async for t in platform.mongo[TASK_RECORDS].find(
        {"tenant_id": tenant_id, "version_id": doc["_id"]}).sort("created_at", ASCENDING)]
    return version_view(doc, tasks)


async def delete_model(platform: Platform, *, tenant_id: str, model_id: str) -> None:
    model = await _model_or_404(platform, tenant_id=tenant_id, model_id=model_id)
    blocking = [t async for t in platform.mongo[TASK_RECORDS].find(
        {"tenant_id": tenant_id, "model_id": model_id, "kind": {"$nin": list(HISTORY_ONLY_TASKS)}})]
    if blocking:
        listed = ", ".join(f"{t['kind']} '{t.get('name') or t['_id']}'" for t in blocking[:5])
        raise ApiError(409, "model_in_use",
                       f"model '{model['name']}' has {len(blocking)} task record(s) ({listed}); "
                       "delete those tasks first")
    version_ids = [v["_id"] async for v in platform.mongo[VERSIONS].find({"model_id": model_id}, {"_id": 1})]
    async with platform.uow() as uow:
        deleted = await uow.collection(MODELS).delete_one({"_id": model_id, "tenant_id": tenant_id},
                                                          session=uow.session)
        if deleted.deleted_count != 1:
            raise not_found("model", model_id)
        await uow.collection(VERSIONS).delete_many({"model_id": model_id}, session=uow.session)
        await uow.collection(TASK_RECORDS).delete_many({"model_id": model_id}, session=uow.session)
        # Objects are removed by the ModelDeleted handler, so a crash here cannot orphan them.
        uow.emit(ModelDeleted(model_id=model_id, name=model["name"], version_ids=version_ids),
                 tenant_id=tenant_id, subject=f"models/{model_id}")
