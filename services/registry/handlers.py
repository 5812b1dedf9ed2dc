"""Registry event handlers: apply validation results, keep task records, clean up deleted models.

Each handler claims the event id inside its transaction, so a redelivered event has no second effect.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from contracts import Envelope
from contracts.events import (ModelArtifactProduced, ModelDeleted, ModelVersionStatusChanged, TaskRecordChanged,
                              WeightValidationCompleted)
from services.lib.common.context import Platform
from services.lib.common.objectstore import ObjectPath
from services.registry.service import register_artifact
from services.registry.models import MANAGED_BUCKET, MODELS, TASK_RECORDS, VERSIONS, Status, TaskStatus

log = logging.getLogger(__name__)
CONSUMER = "registry"


async def on_validation_completed(platform: Platform, envelope: Envelope, event: WeightValidationCompleted) -> None:
    now = datetime.now(UTC)
    status = Status.created if event.ok else Status.failed
    async with platform.uow() as uow:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        version = await uow.collection(VERSIONS).find_one_and_update(
            {"_id": event.version_id, "status": Status.creating},
            {"$set": {"status": status, "message": event.message, "updated_at": now,
                      **({"storage_uri": event.storage_uri} if event.ok and event.storage_uri else {})}},
            session=uow.session)
        if version is None:  # model deleted meanwhile, or already settled
            return
        await uow.collection(TASK_RECORDS).update_one(
            {"_id": event.task_id},
            {"$set": {"status": TaskStatus.succeeded if event.ok else TaskStatus.failed, "message": event.message,
                      "detail": event.detail, "checks": [c.model_dump() for c in event.checks], "updated_at": now}},
            session=uow.session)
        if version["number"] == 1:  # the model's own state is that of its first version
            await uow.collection(MODELS).update_one(
                {"_id": event.model_id}, {"$set": {"status": status, "updated_at": now}}, session=uow.session)
        uow.emit(ModelVersionStatusChanged(model_id=event.model_id, version_id=event.version_id,
                                           version_number=version["number"], status=status.value,
                                           message=event.message),
                 tenant_id=envelope.tenant_id, subject=envelope.subject)


async def on_task_record_changed(platform: Platform, envelope: Envelope, event: TaskRecordChanged) -> None:
    now = datetime.now(UTC)
    async with platform.uow() as uow:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        records = uow.collection(TASK_RECORDS)
        if event.removed:
            await records.delete_one({"_id": event.task_id, "tenant_id": envelope.tenant_id}, session=uow.session)
            return
        await records.update_one(
            {"_id": event.task_id, "tenant_id": envelope.tenant_id},
            {"$set": {"kind": event.task_kind, "name": event.task_name, "status": event.status,
                      "model_id": event.model_id, "version_id": event.version_id, "updated_at": now},
             "$setOnInsert": {"created_at": now, "checks": []}},
            upsert=True, session=uow.session)


async def on_model_deleted(platform: Platform, envelope: Envelope, event: ModelDeleted) -> None:
    # Removing objects is idempotent, so no claim is needed: a redelivery removes nothing more.
    removed = await platform.store.remove_prefix(ObjectPath(MANAGED_BUCKET, f"{envelope.tenant_id}/{event.model_id}/"))
    log.info("model %s deleted: removed %d objects", event.model_id, removed)


async def on_artifact_produced(platform: Platform, envelope: Envelope, event: ModelArtifactProduced) -> None:
    await register_artifact(platform, tenant_id=envelope.tenant_id, event_id=envelope.id, subject=envelope.subject,
                            artifact=event)


HANDLERS = {
    ModelArtifactProduced: on_artifact_produced,
    WeightValidationCompleted: on_validation_completed,
    TaskRecordChanged: on_task_record_changed,
    ModelDeleted: on_model_deleted,
}
