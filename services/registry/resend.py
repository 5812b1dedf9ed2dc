"""Weight imports that never finished are asked for again.

A version waits in "creating" for its ``WeightValidationRequested`` to be handled. The version
document is the truth and the event only a wake-up call (as for every job): if that one delivery is
lost or stuck, the registry sends the request again once the import has been quiet for a while. A
repeat is harmless: the import worker does nothing for a version that is no longer creating.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument

from contracts.events import WeightValidationRequested
from services.common.context import Platform
from services.registry.models import TASK_RECORDS, VERSIONS, Status, TaskStatus
from services.registry.service import WEIGHT_VALIDATION

log = logging.getLogger(__name__)
QUIET = timedelta(minutes=2)     # longer than an import normally waits for its worker
EVERY_SECONDS = 15.0


async def resend_stale_imports(platform: Platform, *, quiet: timedelta = QUIET) -> int:
    """Send again the request of every import quiet for ``quiet``; the number sent."""
    now = datetime.now(UTC)
    sent = 0
    async for task in platform.mongo[TASK_RECORDS].find(
            {"kind": WEIGHT_VALIDATION, "status": TaskStatus.running, "updated_at": {"$lte": now - quiet}}):
        version = await platform.mongo[VERSIONS].find_one({"_id": task["version_id"], "status": Status.creating})
        if version is None:
            continue
        async with platform.uow() as uow:
            # The claim: one registry process resends, once per quiet period.
            claimed = await uow.collection(TASK_RECORDS).find_one_and_update(
                {"_id": task["_id"], "updated_at": task["updated_at"]}, {"$set": {"updated_at": now}},
                return_document=ReturnDocument.AFTER, session=uow.session)
            if claimed is None:
                continue
            uow.emit(WeightValidationRequested(
                task_id=task["_id"], model_id=version["model_id"], version_id=version["_id"],
                template_id=version["template_id"], weights_uri=version["source_uri"],
                target_uri=version["target_uri"], validate_weights=version["validate_weights"]),
                tenant_id=version["tenant_id"], subject=f"models/{version['model_id']}")
        sent += 1
        log.warning("weight import of version %s was quiet for %s: its request was sent again", version["_id"], quiet)
    return sent


async def resend_forever(platform: Platform) -> None:
    while True:
        try:
            await resend_stale_imports(platform)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("resending quiet weight imports failed; retrying")
        await asyncio.sleep(EVERY_SECONDS)
