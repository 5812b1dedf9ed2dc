"""Compression service event handlers: learn which model the registry made from a job's output, or why
it could not make one.

Each handler claims the event id inside its transaction, so a redelivered event has no second effect.
"""
from __future__ import annotations

from contracts import Envelope
from contracts.events import ModelArtifactRejected, ModelCreated
from services.lib.common.context import Platform
from services.compression.jobs import now
from services.compression.models import JOBS

CONSUMER = "compression"


async def on_model_created(platform: Platform, envelope: Envelope, event: ModelCreated) -> None:
    async with platform.uow() as uow:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        await uow.collection(JOBS).update_one(
            {"output.weights_uri": event.weights_uri, "tenant_id": envelope.tenant_id},
            {"$set": {"output.model_id": event.model_id, "output.version_id": event.version_id,
                      "updated_at": now()}},
            session=uow.session)


async def on_artifact_rejected(platform: Platform, envelope: Envelope, event: ModelArtifactRejected) -> None:
    if event.task_kind != "compression":
        return
    async with platform.uow() as uow:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        await uow.collection(JOBS).update_one(
            {"_id": event.task_id, "tenant_id": envelope.tenant_id},
            {"$set": {"output.error": event.reason, "updated_at": now()}}, session=uow.session)


HANDLERS = {ModelCreated: on_model_created, ModelArtifactRejected: on_artifact_rejected}
