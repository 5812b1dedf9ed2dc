"""Use cases of the compression service: estimate and create (list, detail, stop, continue, delete
and logs are the job engine's: services.lib.jobs.resources).

Everything that can be wrong with a request (names, α, the strategy against the template's table
7-2 entry, the source model's state and weights, the calibration file, the output name and path)
is checked here, before a job exists or any compute runs. Keyword-only; each write is one unit of work.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from contracts import new_id
from contracts.compression import CompressionRequested
from services.lib.common.context import Platform
from services.lib.common.errors import bad_request, conflict
from services.lib.readmodels.model_refs import preset_weights_ready, resolve_model_version
from services.lib.common.objectstore import ObjectPath
from services.lib.readmodels.buckets import check_access
from services.compression import estimate as est
from services.compression.jobs import announce_task_record, now, subject
from services.compression.models import (DEFAULT_ALPHA, INSTANCE_SPECS, JOBS, MANAGED_BUCKET, SPEC_RESOURCES,
                                         STRATEGY_LABELS,
                                         EstimateRequest, JobCreate, JobStatus, SourceModel, Strategy, job_view)
from services.lib.mlkit.quantize.calibration import SUFFIXES, CalibrationDataError, parse_calibration_file
from services.lib.catalog.templates import Template, default_catalog  # shared catalog data, read-only
from services.lib.jobs.resources import announce_notification_rule, check_output_name
from services.lib.pools import service as pools

MAX_CALIBRATION_BYTES = 200 * 1024 ** 2
MIN_CALIBRATION_CHARS = 200
WEIGHT_SUFFIXES = (".safetensors", ".bin")


# ---------------------------------------------------------------------------------------------
# Request checks
# ---------------------------------------------------------------------------------------------

def _template(template_id: str, *, field: str) -> Template:
    template = default_catalog().get(template_id)
    if template is None:
        raise bad_request(f"{field}: '{template_id}' is not a model-square template", field=field)
    return template


async def _check_weights_present(platform: Platform, uri: str, *, field: str, what: str) -> None:
    path = ObjectPath.parse(uri).as_prefix()
    names = {o.key[len(path.key):] for o in await platform.store.list(path, recursive=False)}
    if "config.json" not in names or not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise bad_request(f"{field}: the weights of {what} are missing from storage ({uri} has no config.json "
                          "and *.safetensors / *.bin files)", field=field, code="weights_missing")


async def _resolve_source(platform: Platform, *, tenant_id: str, source: SourceModel,
                          for_estimate: bool = False) -> tuple[dict, Template]:
    """The weights to compress and their template; refuses quantized, validating and weightless models."""
    if source.template_id:
        template = _template(source.template_id, field="source.template_id")
        if template.quantization is not None:
            raise bad_request(f"source.template_id: '{template.name}' is already quantized "
                              f"({template.quantization.value}); it can only be deployed", field="source.template_id",
                              code="already_quantized")
        if template.preset_weights is None:
            if for_estimate:   # an estimate needs only the template (table 7-4)
                return {"kind": "template", "template_id": template.id, "model_name": template.name}, template
            raise bad_request(f"source.template_id: template '{template.name}' ships no preset weights; create a "
                              "model with your weights in My models and compress that", field="source.template_id")
        uri = ObjectPath(template.preset_weights.bucket, template.preset_weights.prefix).as_prefix().uri
        if not for_estimate:
            if not await preset_weights_ready(platform, template_id=template.id):
                raise conflict(f"source.template_id: the preset weights of '{template.name}' are still being "
                               "imported; try again shortly", code="preset_not_ready", field="source.template_id")
            await _check_weights_present(platform, uri, field="source.template_id", what=f"'{template.name}'")
        source = {"kind": "template", "template_id": template.id, "model_name": template.name, "weights_uri": uri}
        return source, template
    ref = await resolve_model_version(platform, tenant_id=tenant_id, model_id=source.model_id,
                                      version=source.version, field="source.model_id",
                                      require_created=not for_estimate)
    if ref.deploy_only:
        raise bad_request(f"source.model_id: model '{ref.model_name}' is already quantized ({ref.quantization}); "
                          "compress a full-precision model", field="source.model_id", code="already_quantized")
    template = _template(ref.template_id, field="source.model_id")
    if not for_estimate:
        if not ref.storage_uri:
            raise bad_request(f"source.model_id: model '{ref.model_name}' V{ref.version_number} has no weights",
                              field="source.model_id", code="weights_missing")
        await _check_weights_present(platform, ref.storage_uri, field="source.model_id",
                                     what=f"model '{ref.model_name}' V{ref.version_number}")
    return {"kind": "model", "model_id": ref.model_id, "model_name": ref.model_name, "version_id": ref.version_id,
            "version_number": ref.version_number, "template_id": template.id,
            "weights_uri": ref.storage_uri}, template


def _check_strategy(template: Template, strategy: Strategy) -> None:
    if not template.supports_compression(strategy):
        supported = ", ".join(s.value for s in template.tasks.compress) if template.quantization is None else ""
        raise bad_request(f"strategy: {STRATEGY_LABELS[strategy]} is not supported for '{template.name}' "
                          f"(table 7-2; supported: {supported or 'none'})", field="strategy",
                          code="strategy_not_supported")


async def _read_calibration(platform: Platform, *, tenant_id: str, text: str) -> dict:
    """Check a user calibration file now (exists, allowed, parses); its stored description."""
    field = "calibration_dataset"
    path = ObjectPath.parse(text)
    await check_access(platform, path, tenant_id=tenant_id, field=field)
    if not path.key or path.key.endswith("/"):
        raise bad_request(f"{field}: must name a file (bucket/folder/calibration.jsonl), not a folder", field=field)
    if Path(path.key).suffix.lower() not in SUFFIXES:
        raise bad_request(f"{field}: '{text}' must be a {', '.join(SUFFIXES)} file", field=field)
    matches = [o for o in await platform.store.list(path) if o.key == path.key]
    if not matches:
        raise bad_request(f"{field}: '{text}' does not exist", field=field, code="dataset_not_found")
    if matches[0].size > MAX_CALIBRATION_BYTES:
        raise bad_request(f"{field}: the file is {matches[0].size} bytes; at most {MAX_CALIBRATION_BYTES} bytes",
                          field=field)
    data = await platform.store.get_bytes(path)
    try:
        texts = await asyncio.to_thread(parse_calibration_file, path.key.rsplit("/", 1)[-1], data)
    except CalibrationDataError as exc:
        raise bad_request(f"{field}: {exc}", field=field, code="invalid_dataset") from None
    chars = sum(len(t) for t in texts)
    if chars < MIN_CALIBRATION_CHARS:
        raise bad_request(f"{field}: the file holds {chars} characters of text; calibration needs at least "
                          f"{MIN_CALIBRATION_CHARS}", field=field, code="invalid_dataset")
    return {"kind": "dataset", "path": path.uri, "texts": len(texts), "characters": chars}


async def _check_output_name(platform: Platform, *, tenant_id: str, name: str) -> None:
    await check_output_name(platform, jobs=JOBS, tenant_id=tenant_id, name=name)


async def _output_root(platform: Platform, *, tenant_id: str, job_id: str, output_path: str | None) -> ObjectPath:
    if output_path:
        root = ObjectPath.parse(output_path).as_prefix()
        await check_access(platform, root, tenant_id=tenant_id, field="output_path", write=True)
        return ObjectPath(root.bucket, f"{root.key}{job_id}/")
    return ObjectPath(MANAGED_BUCKET, f"{tenant_id}/{job_id}/")


async def _params_billion(platform: Platform, template: Template, source: dict) -> float | None:
    if template.params_billion is not None:
        return template.params_billion
    if not source.get("weights_uri"):
        return None
    folder = ObjectPath.parse(source["weights_uri"]).as_prefix()
    try:   # any-size templates: count from the source's own config.json
        config = json.loads(await platform.store.get_bytes(ObjectPath(folder.bucket, folder.key + "config.json")))
        return est.param_count(config) / 1e9
    except Exception:   # noqa: BLE001 - an estimate is best effort
        return None


# ---------------------------------------------------------------------------------------------
# Use cases
# ---------------------------------------------------------------------------------------------

async def estimate_job(platform: Platform, *, tenant_id: str, request: EstimateRequest) -> dict:
    source, template = await _resolve_source(platform, tenant_id=tenant_id, source=request.source, for_estimate=True)
    _check_strategy(template, request.strategy)
    estimate = est.estimate(template_id=template.id, strategy=request.strategy,
                            params_billion=await _params_billion(platform, template, source))
    return {"template_id": template.id, "strategy": request.strategy.value,
            "estimate": estimate.as_dict() if estimate else None,
            "note": None if estimate else f"no duration figures for '{template.name}'"}


async def create_job(platform: Platform, *, tenant_id: str, request: JobCreate) -> dict:
    source, template = await _resolve_source(platform, tenant_id=tenant_id, source=request.source)
    _check_strategy(template, request.strategy)
    if request.instance_spec not in INSTANCE_SPECS:
        raise bad_request(f"instance_spec: '{request.instance_spec}' is not a known spec; choose one of "
                          f"{', '.join(INSTANCE_SPECS)}", field="instance_spec")
    await _check_output_name(platform, tenant_id=tenant_id, name=request.output_model_name)
    placement = await pools.placement(platform, tenant_id=tenant_id, requested=request.resource_pool,
                                      resources=SPEC_RESOURCES[request.instance_spec],
                                      what=f"a compression job of spec {request.instance_spec}")
    if request.permanent_log.enabled:
        await check_access(platform, ObjectPath.parse(request.permanent_log.path).as_prefix(), tenant_id=tenant_id,
                           field="permanent_log.path", write=True)
    calibration = ({"kind": "builtin"} if not request.calibration_dataset else
                   await _read_calibration(platform, tenant_id=tenant_id, text=request.calibration_dataset))
    job_id = new_id()
    output_root = await _output_root(platform, tenant_id=tenant_id, job_id=job_id, output_path=request.output_path)
    alpha = (request.alpha if request.alpha is not None else DEFAULT_ALPHA) \
        if request.strategy == Strategy.smoothquant_w8a8 else None
    estimate = est.estimate(template_id=template.id, strategy=request.strategy,
                            params_billion=await _params_billion(platform, template, source))
    at = now()
    job = {
        "_id": job_id, "tenant_id": tenant_id, "name": request.name, "description": request.description,
        "source": source, "template_id": template.id, "strategy": request.strategy.value,
        "params": {"alpha": alpha}, "calibration": calibration,
        "output": {"model_name": request.output_model_name, "description": request.output_model_description,
                   "path": output_root.uri, "weights_uri": None, "model_id": None, "version_id": None,
                   "error": None},
        "resources": {"resource_pool": request.resource_pool, "instance_spec": request.instance_spec,
                      "instance_count": request.instance_count},
        "placement": placement,
        "permanent_log": request.permanent_log.model_dump(), "notification": request.notification.model_dump(),
        "estimate": estimate.as_dict() if estimate else None,
        "status": JobStatus.pending.value, "status_message": "queued for a compression worker",
        "history": [{"status": JobStatus.pending.value, "at": at, "message": "submitted"}],
        "progress": {"fraction": 0.0, "step": "queued"}, "metrics": None, "attempt": 0, "log_seq": 0,
        "created_at": at, "updated_at": at, "started_at": None, "finished_at": None,
    }
    async with platform.uow() as uow:
        await uow.collection(JOBS).insert_one(job, session=uow.session)
        announce_task_record(uow, job)
        uow.emit(CompressionRequested(job_id=job_id, strategy=request.strategy.value),
                 tenant_id=tenant_id, subject=subject(job_id))
        announce_notification_rule(uow, job, subject=subject(job_id))
    return job_view(job)
