"""Tuning service event handlers: queue submitted jobs, and learn which models the registry made
from the job outputs (so the job shows its output model and conversions get their task record), or
why it could not make one.

Each handler claims the event id inside its transaction, so a redelivered event has no second effect.
"""
from __future__ import annotations

from contracts import Envelope
from contracts.events import ModelArtifactRejected, ModelCreated, ModelVersionCreated, TaskRecordChanged
from contracts.tuning import TuneRequested
from services.lib.common.context import Platform
from services.tuning.jobs import now, transact, transition
from services.tuning.models import CONVERSIONS, JOBS, JobStatus

CONSUMER = "tuning"


async def on_tune_requested(platform: Platform, envelope: Envelope, event: TuneRequested) -> None:
    async def queue(uow) -> None:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        # No-op when a worker already took it (running) or the user stopped it meanwhile.
        await transition(uow, event.job_id, JobStatus.waiting, message="queued for a tuning worker",
                         where={"status": JobStatus.creating.value})
    await transact(platform, queue)


async def _link_output(platform: Platform, envelope: Envelope, *, model_id: str, version_id: str,
                       weights_uri: str) -> None:
    async def link(uow) -> None:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        await uow.collection(JOBS).update_one(
            {"output.weights_uri": weights_uri, "tenant_id": envelope.tenant_id},
            {"$set": {"output.model_id": model_id, "output.version_id": version_id, "updated_at": now()}},
            session=uow.session)
        conversion = await uow.collection(CONVERSIONS).find_one_and_update(
            {"weights_uri": weights_uri, "tenant_id": envelope.tenant_id, "model_id_linked": {"$ne": True}},
            {"$set": {"model_id": model_id, "version_id": version_id, "model_id_linked": True, "updated_at": now()}},
            session=uow.session)
        if conversion is not None and conversion["kind"] == "weight_conversion":
            # Guide 6 (权重格式转换): the new version lists the conversion among its task records.
            uow.emit(TaskRecordChanged(task_id=conversion["_id"], task_kind="weight_conversion",
                                       task_name=f"weight-conversion-{conversion['_id'][:8]}", model_id=model_id,
                                       version_id=version_id, status=conversion["status"]),
                     tenant_id=envelope.tenant_id, subject=f"models/{model_id}")
    await transact(platform, link)


async def on_model_created(platform: Platform, envelope: Envelope, event: ModelCreated) -> None:
    await _link_output(platform, envelope, model_id=event.model_id, version_id=event.version_id,
                       weights_uri=event.weights_uri)


async def on_version_created(platform: Platform, envelope: Envelope, event: ModelVersionCreated) -> None:
    await _link_output(platform, envelope, model_id=event.model_id, version_id=event.version_id,
                       weights_uri=event.weights_uri)


async def on_artifact_rejected(platform: Platform, envelope: Envelope, event: ModelArtifactRejected) -> None:
    if event.task_kind != "tuning":
        return
    async def record(uow) -> None:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        at, where = now(), {"_id": event.task_id, "tenant_id": envelope.tenant_id}
        # The task is the job itself (its output model) or one of its checkpoint conversions.
        await uow.collection(JOBS).update_one(where, {"$set": {"output.error": event.reason, "updated_at": at}},
                                              session=uow.session)
        await uow.collection(CONVERSIONS).update_one(
            where, {"$set": {"status": "failed", "message": event.reason, "updated_at": at}}, session=uow.session)
    await transact(platform, record)


HANDLERS = {
    TuneRequested: on_tune_requested,
    ModelCreated: on_model_created,
    ModelVersionCreated: on_version_created,
    ModelArtifactRejected: on_artifact_rejected,
}
