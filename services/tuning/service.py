"""Use cases of the tuning service: estimate, create, checkpoints and their conversion into models
(list, detail, stop, continue, delete and logs are the job engine's: services.lib.jobs.resources).
Keyword-only; each write is one unit of work.

Everything that can be wrong with a request (names, ranges, the source model, the template's tune
types, paths, every line of the dataset) is checked here, before a job exists or any compute runs.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing

from pymongo import ASCENDING

from contracts import new_id
from contracts.events import ModelArtifactProduced
from contracts.tuning import CheckpointConversionRequested, TuneRequested
from services.lib.common.context import Platform
from services.lib.common.errors import ApiError, bad_request, conflict, not_found
from services.lib.jobs import resources
from services.lib.pools import service as pools
from services.lib.readmodels.model_refs import preset_weights_ready, resolve_model_version
from services.lib.common.objectstore import ObjectPath
from services.lib.readmodels.buckets import check_access
from services.lib.catalog.templates import Template, default_catalog  # shared catalog data, read-only
from services.tuning import estimate as est
from services.tuning.datasets import (DatasetInvalid, DatasetRejected, ParsedDataset, check_whole_file_size,
                                     file_kind, normalise_dataset, to_jsonl)
from services.tuning.jobs import RESOURCE, announce_notification_rule, announce_task_record, now, subject, transact
from services.tuning.models import (CONVERSIONS, FLAVORS, JOBS, MANAGED_BUCKET, MAX_CHECKPOINTS, node_resources,
                                    MAX_DATASET_BYTES, MAX_ITERATIONS, TUNE_TYPE_LABELS, ConversionCreate,
                                    EstimateRequest, JobCreate, JobStatus, SourceModel, conversion_view, job_view,
                                    managed_root)

log = logging.getLogger(__name__)


class DatasetError(ApiError):
    """400 naming the dataset and, in ``details``, every bad line with the rule it breaks."""

    def __init__(self, exc: DatasetInvalid, *, path: str):
        super().__init__(400, "invalid_dataset", f"dataset_path: '{path}' has {exc}", field="dataset_path")
        self.details = [{"line": i.line, "rule": i.rule, "message": i.message} for i in exc.issues]
        self.total = exc.total

    def body(self) -> dict:
        body = super().body()
        body["error"]["details"] = self.details
        body["error"]["total_issues"] = self.total
        return body


# ---------------------------------------------------------------------------------------------
# Request checks
# ---------------------------------------------------------------------------------------------

def _template(template_id: str, *, field: str) -> Template:
    template = default_catalog().get(template_id)
    if template is None:
        raise bad_request(f"{field}: '{template_id}' is not a model-square template", field=field)
    return template


async def _resolve_source(platform: Platform, *, tenant_id: str, source: SourceModel,
                          for_estimate: bool = False) -> tuple[dict, Template]:
    """The weights to tune and their template; the model must be created and not deploy-only
    (an estimate needs only the template, so it does not wait for weights)."""
    if source.template_id:
        template = _template(source.template_id, field="source.template_id")
        if template.preset_weights is None:
            raise bad_request(f"source.template_id: template '{template.name}' ships no preset weights; create a "
                              "model with your weights in My models and tune that", field="source.template_id")
        if not for_estimate and not await preset_weights_ready(platform, template_id=template.id):
            raise conflict(f"source.template_id: the preset weights of '{template.name}' are still being imported; "
                           "try again shortly", code="preset_not_ready", field="source.template_id")
        uri = ObjectPath(template.preset_weights.bucket, template.preset_weights.prefix).as_prefix().uri
        return {"kind": "template", "template_id": template.id, "weights_uri": uri}, template
    ref = await resolve_model_version(platform, tenant_id=tenant_id, model_id=source.model_id,
                                      version=source.version, field="source.model_id",
                                      require_created=not for_estimate)
    if ref.deploy_only:
        raise bad_request(f"source.model_id: model '{ref.model_name}' is a compressed ({ref.quantization}) model; "
                          "compressed models can only be deployed, not tuned", field="source.model_id")
    if not ref.storage_uri and not for_estimate:
        raise conflict(f"source.model_id: model '{ref.model_name}' V{ref.version_number} has no imported weights yet",
                       code="model_not_ready", field="source.model_id")
    template = _template(ref.template_id, field="source.model_id")
    return {"kind": "model", "model_id": ref.model_id, "model_name": ref.model_name, "version_id": ref.version_id,
            "version_number": ref.version_number, "template_id": template.id,
            "weights_uri": ref.storage_uri}, template


def _check_tune_type(template: Template, tune_type: str) -> None:
    if not template.supports_tune(tune_type):
        supported = ", ".join(t.value for t in template.tasks.tune) or "none"
        raise bad_request(f"tune_type: {TUNE_TYPE_LABELS[tune_type]} ('{tune_type}') is not supported by template "
                          f"'{template.name}' (table 6-1; supported: {supported})", field="tune_type")


def _cards(flavor: str) -> int:
    if flavor not in FLAVORS:
        raise bad_request(f"flavor: '{flavor}' is not a known flavor; choose one of {', '.join(FLAVORS)}",
                          field="flavor")
    return FLAVORS[flavor][0]


def _global_batch(template: Template, requested: int | None, *, field: str) -> int:
    """The job's global batch: the template's, or another one where the template allows a choice."""
    if requested is None or requested == template.global_batch_size:
        return template.global_batch_size
    if template.global_batch_size_range is None:
        raise bad_request(f"{field}: template '{template.name}' trains with a fixed global batch of "
                          f"{template.global_batch_size} samples per iteration; leave {field} out", field=field)
    low, high = template.global_batch_size_range
    if not low <= requested <= high:
        raise bad_request(f"{field}: must be between {low} and {high} for template '{template.name}'; got "
                          f"{requested}", field=field)
    return requested


def _too_few_samples(template: Template, *, samples: int, gbs: int) -> str | None:
    """Why a dataset of ``samples`` cannot be tuned with a global batch of ``gbs``, or None."""
    if samples >= gbs:
        return None
    text = (f"the dataset has {samples} samples, fewer than one global batch of '{template.name}' "
            f"({gbs} samples per iteration)")
    allowed = template.global_batch_size_range
    if allowed is not None and allowed[0] <= samples:
        return text + f"; set hyperparameters.global_batch_size to {samples} or less"
    return text + "; add samples (the guide suggests at least 2000)"


def _check_nodes(gbs: int, node_count: int) -> None:
    if gbs % node_count:
        raise bad_request(f"node_count: {node_count} nodes cannot share a global batch of "
                          f"{gbs} samples evenly; use a divisor of it", field="node_count")


def _throughput(template: Template, tune_type: str) -> tuple[int, int] | None:
    figures = template.tuning_throughput.get(tune_type)
    return (figures.low, figures.high) if figures else None


def _estimate(template: Template, *, tune_type: str, gbs: int, iterations: int, cards: int,
              nodes: int) -> dict | None:
    result = est.estimate(params_billion=template.params_billion, throughput=_throughput(template, tune_type),
                          global_batch_size=gbs, iterations=iterations, cards=cards, nodes=nodes)
    return result.as_dict() if result else None


async def _writable_path(platform: Platform, text: str, *, tenant_id: str, field: str) -> ObjectPath:
    path = ObjectPath.parse(text).as_prefix()
    await check_access(platform, path, tenant_id=tenant_id, field=field, write=True)
    return path


async def _normalise_dataset(platform: Platform, request: JobCreate, *, tenant_id: str, template: Template,
                             dest: ObjectPath) -> ParsedDataset:
    """Validate the user's file and write the trainer's examples to ``dest``, in one streamed pass.

    A .jsonl file is downloaded, checked and uploaded chunk by chunk in one worker thread: the API
    holds one chunk, one line and one upload part, never the file (up to 5 GB). On any error
    nothing is written to ``dest``.
    """
    path = ObjectPath.parse(request.dataset_path)
    await check_access(platform, path, tenant_id=tenant_id, field="dataset_path")
    if not path.key or path.key.endswith("/"):
        raise bad_request("dataset_path: must name a file (bucket/folder/data.jsonl), not a folder",
                          field="dataset_path")
    if file_kind(path.key) is None:
        raise bad_request(f"dataset_path: '{request.dataset_path}' must be a .jsonl, .json, .csv or .xlsx file",
                          field="dataset_path")
    matches = [o for o in await platform.store.list(path) if o.key == path.key]
    if not matches:
        raise bad_request(f"dataset_path: '{request.dataset_path}' does not exist", field="dataset_path")
    if matches[0].size > MAX_DATASET_BYTES:
        raise bad_request(f"dataset_path: the file is {matches[0].size} bytes; at most 5 GB", field="dataset_path")
    summary: list[ParsedDataset] = []

    def examples() -> Iterator[bytes]:
        # Runs in the upload's worker thread (parsing is CPU work: the event loop stays free).
        with closing(platform.store.iter_object(path)) as chunks:
            summary.append((yield from normalise_dataset(
                chunks, filename=path.key, dataset_format=request.dataset_format,
                tune_type=request.tune_type.value, template_id=template.id)))

    try:
        check_whole_file_size(file_kind(path.key), matches[0].size)
        await platform.store.put_iter(dest, examples(), content_type="application/x-ndjson")
        return summary[0]
    except DatasetInvalid as exc:
        raise DatasetError(exc, path=request.dataset_path) from None
    except DatasetRejected as exc:
        raise bad_request(str(exc), field=exc.field) from None


def _check_hyperparameters(request: JobCreate, *, template: Template, gbs: int, samples: int) -> int:
    problem = _too_few_samples(template, samples=samples, gbs=gbs)
    if problem:
        raise bad_request(f"dataset_path: {problem}", field="dataset_path")
    if request.sample_count is not None and request.sample_count != samples:
        raise bad_request(f"sample_count: the dataset has {samples} samples, not {request.sample_count}",
                          field="sample_count")
    hp = request.hyperparameters
    total = est.iterations(samples, gbs, hp.epochs)
    if total > MAX_ITERATIONS:
        raise bad_request(f"hyperparameters.epochs: {hp.epochs} epochs give {total} iterations; at most "
                          f"{MAX_ITERATIONS}", field="hyperparameters.epochs")
    limit = min(total, MAX_CHECKPOINTS)
    if hp.checkpoint_count > limit:
        raise bad_request(f"hyperparameters.checkpoint_count: must be between 1 and {limit} (min(iterations "
                          f"{total}, {MAX_CHECKPOINTS})); got {hp.checkpoint_count}",
                          field="hyperparameters.checkpoint_count")
    return total


async def _check_output_name(platform: Platform, *, tenant_id: str, name: str) -> None:
    await resources.check_output_name(platform, jobs=JOBS, tenant_id=tenant_id, name=name)


# ---------------------------------------------------------------------------------------------
# Use cases
# ---------------------------------------------------------------------------------------------

async def estimate_job(platform: Platform, *, tenant_id: str, request: EstimateRequest) -> dict:
    _, template = await _resolve_source(platform, tenant_id=tenant_id, source=request.source, for_estimate=True)
    _check_tune_type(template, request.tune_type)
    cards = _cards(request.flavor)
    gbs = _global_batch(template, request.global_batch_size, field="global_batch_size")
    _check_nodes(gbs, request.node_count)
    total = est.iterations(request.sample_count, gbs, request.epochs)
    estimate = _estimate(template, tune_type=request.tune_type, gbs=gbs, iterations=total, cards=cards,
                         nodes=request.node_count)
    return {"template_id": template.id, "global_batch_size": gbs,
            "global_batch_size_range": (list(template.global_batch_size_range)
                                        if template.global_batch_size_range else None),
            "iterations": total, "estimate": estimate,
            # Said before the dataset is uploaded: a job with fewer samples than one batch is refused.
            "problem": _too_few_samples(template, samples=request.sample_count, gbs=gbs),
            "note": None if estimate else f"template '{template.name}' has no throughput figures (table 6-6); "
                                          "no duration estimate"}


async def create_job(platform: Platform, *, tenant_id: str, request: JobCreate) -> dict:
    source, template = await _resolve_source(platform, tenant_id=tenant_id, source=request.source)
    _check_tune_type(template, request.tune_type)
    cards = _cards(request.flavor)
    gbs = _global_batch(template, request.hyperparameters.global_batch_size, field="hyperparameters.global_batch_size")
    _check_nodes(gbs, request.node_count)
    await _check_output_name(platform, tenant_id=tenant_id, name=request.output_model_name)
    placement = await pools.placement(
        platform, tenant_id=tenant_id, requested=request.resource_pool,
        resources=node_resources(request.flavor).times(request.node_count), nodes=request.node_count,
        what=f"a tuning job of {request.node_count} x {request.flavor}")
    job_id = new_id()
    output_root = (await _writable_path(platform, request.output_path, tenant_id=tenant_id, field="output_path")
                   if request.output_path else ObjectPath(MANAGED_BUCKET, f"{tenant_id}/"))
    output_root = ObjectPath(output_root.bucket, f"{output_root.key}{job_id}/")
    log_root = None
    if request.permanent_log.enabled:
        log_root = await _writable_path(platform, request.permanent_log.path, tenant_id=tenant_id,
                                        field="permanent_log.path")
    # The normalised examples are the job's own copy: a resume trains on exactly the same data
    # even if the user's file changes later.
    data_root = managed_root(tenant_id, job_id)
    await platform.store.ensure_bucket(MANAGED_BUCKET)
    examples = ObjectPath(data_root.bucket, data_root.key + "examples.jsonl")
    parsed = await _normalise_dataset(platform, request, tenant_id=tenant_id, template=template, dest=examples)
    try:
        total = _check_hyperparameters(request, template=template, gbs=gbs, samples=parsed.sample_count)
    except ApiError:
        await platform.store.remove_prefix(data_root)   # no job will own these examples
        raise
    converted_uri = None
    if parsed.converted_from is not None:
        converted = ObjectPath(data_root.bucket, data_root.key + f"converted-{parsed.dataset_format.value}.jsonl")
        await platform.store.put_bytes(converted, to_jsonl(parsed.converted), content_type="application/x-ndjson")
        converted_uri = converted.uri

    hp = request.hyperparameters
    at = now()
    job = {
        "_id": job_id, "tenant_id": tenant_id, "name": request.name, "description": request.description,
        "status": JobStatus.creating.value, "status_message": None,
        "history": [{"status": JobStatus.creating.value, "at": at, "message": None}],
        "source": source, "template_id": template.id, "template_name": template.name,
        "tune_type": request.tune_type.value,
        "output": {"model_name": request.output_model_name, "description": request.output_model_description,
                   "path": output_root.uri, "weights_uri": None, "model_id": None, "error": None},
        "dataset": {"path": ObjectPath.parse(request.dataset_path).uri, "format": parsed.dataset_format.value,
                    "converted_from": parsed.converted_from.value if parsed.converted_from else None,
                    "converted_uri": converted_uri, "examples_uri": examples.uri,
                    "sample_count": parsed.sample_count},
        "hyperparameters": {"epochs": hp.epochs, "learning_rate": hp.learning_rate,
                            "checkpoint_count": hp.checkpoint_count, "iterations": total,
                            "global_batch_size": gbs,
                            "seq_len": min(est.seq_len_for(gbs), template.context_length)},
        "resources": {"pool": request.resource_pool, "flavor": request.flavor, "flavor_name": FLAVORS[request.flavor][1],
                      "cards": cards, "node_count": request.node_count},
        "placement": placement,
        "permanent_log": {"enabled": request.permanent_log.enabled,
                          "path": log_root.uri if log_root else None},
        "notification": request.notification.model_dump(),
        "auto_stop": request.auto_stop.model_dump(),
        "auto_restart": request.auto_restart.model_dump(),
        "estimate": _estimate(template, tune_type=request.tune_type, gbs=gbs, iterations=total, cards=cards,
                              nodes=request.node_count),
        "progress": {"iteration": 0, "total_iterations": total, "lm_loss": None, "tokens_per_sec_per_card": None},
        "checkpoints": [], "restart_count": 0, "unconditional_streak": 0, "run_seconds": 0.0, "run": None,
        "log_seq": 0, "created_at": at, "updated_at": at, "started_at": None, "finished_at": None,
    }
    async def insert(uow) -> None:
        await uow.collection(JOBS).insert_one(job, session=uow.session)
        uow.emit(TuneRequested(job_id=job_id, reason="submitted"), tenant_id=tenant_id, subject=subject(job_id))
        announce_task_record(uow, job)
        announce_notification_rule(uow, job)
    await transact(platform, insert)
    return job_view(job)


async def job_or_404(platform: Platform, *, tenant_id: str, job_id: str) -> dict:
    return await resources.job_or_404(platform, RESOURCE, tenant_id=tenant_id, job_id=job_id)


def _not_allowed(job: dict, action: str, allowed: str) -> ApiError:
    return conflict(f"tuning job '{job['name']}' is {job['status']}; only {allowed} jobs can be {action}",
                    code="invalid_state")


async def list_checkpoints(platform: Platform, *, tenant_id: str, job_id: str) -> dict:
    job = job_view(await job_or_404(platform, tenant_id=tenant_id, job_id=job_id))
    return {"total": len(job["checkpoints"]), "items": job["checkpoints"]}


async def convert_checkpoint(platform: Platform, *, tenant_id: str, job_id: str, iteration: int,
                             request: ConversionCreate) -> dict:
    """Checkpoint -> a new model, or a new version of the job's output model (guide: 查看Checkpoint).

    Hugging Face checkpoints (full / pretrain) are registered as they are; a LoRA checkpoint is an
    adapter, so the worker first merges it into the base weights (a weight format conversion task).
    """
    job = await job_or_404(platform, tenant_id=tenant_id, job_id=job_id)
    checkpoint = next((c for c in job["checkpoints"] if c["iteration"] == iteration), None)
    if checkpoint is None:
        raise not_found("checkpoint", f"{job['name']}@{iteration}")
    model_id = None
    if request.target == "new_version":
        if job["status"] != JobStatus.completed:
            raise _not_allowed(job, "given new versions from a checkpoint", "completed")
        model_id = job["output"].get("model_id")
        if not model_id:
            raise conflict(f"the output model of '{job['name']}' is not registered yet; try again shortly",
                           code="output_not_ready")
    else:
        await _check_output_name(platform, tenant_id=tenant_id, name=request.model_name)
    conversion_id = new_id()
    merge = checkpoint["format"] == "lora"
    weights_uri = (ObjectPath.parse(job["output"]["path"]).uri + f"converted/{conversion_id}/" if merge
                   else checkpoint["uri"])
    at = now()
    doc = {"_id": conversion_id, "tenant_id": tenant_id, "job_id": job_id, "iteration": iteration,
           "kind": "weight_conversion" if merge else "register", "target": request.target,
           "model_name": request.model_name, "model_id": model_id, "version_id": None,
           "description": request.description, "validate_weights": request.validate_weights,
           "status": "running" if merge else "completed", "message": None, "weights_uri": weights_uri,
           "created_at": at, "updated_at": at}
    async def insert(uow) -> None:
        await uow.collection(CONVERSIONS).insert_one(doc, session=uow.session)
        if merge:
            uow.emit(CheckpointConversionRequested(conversion_id=conversion_id, job_id=job_id, iteration=iteration),
                     tenant_id=tenant_id, subject=subject(job_id))
        else:
            uow.emit(artifact_for(job, doc), tenant_id=tenant_id, subject=subject(job_id))
    await transact(platform, insert)
    return conversion_view(doc)


def artifact_for(job: dict, conversion: dict) -> ModelArtifactProduced:
    return ModelArtifactProduced(
        task_id=conversion["_id"], task_kind="tuning", weights_uri=conversion["weights_uri"],
        target=conversion["target"], model_name=conversion["model_name"], model_id=conversion["model_id"],
        template_id=job["template_id"], description=conversion["description"],
        validate_weights=conversion["validate_weights"])


async def list_conversions(platform: Platform, *, tenant_id: str, job_id: str) -> dict:
    await job_or_404(platform, tenant_id=tenant_id, job_id=job_id)
    docs = [conversion_view(d) async for d in
            platform.mongo[CONVERSIONS].find({"job_id": job_id, "tenant_id": tenant_id}).sort("created_at", ASCENDING)]
    return {"total": len(docs), "items": docs}
