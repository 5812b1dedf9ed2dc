"""Weight import worker: fetch a version's weights, run the table 5-4 checks, keep a platform copy.

Runs as its own consumer group, so more worker processes validate more models in parallel. The
checks run in a job process (``services.jobs``, entry in ``work``); a warm one is reused.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from contracts import Envelope
from contracts.events import WeightCheck, WeightValidationCompleted, WeightValidationRequested
from services.common.context import Platform
from services.common.objectstore import ObjectPath
from services.catalog.templates import default_catalog
from services.registry.models import VERSIONS, Status
from services.registry.weight_checks import MSG_TEMPLATE as TEMPLATE_ERROR
from services.registry.weight_checks import MSG_UNKNOWN as UNKNOWN_ERROR
from services.registry.weight_checks import WeightCheckResult
from services.registry import work
from services.jobs.executor import Executor, Work, ignore_messages

log = logging.getLogger(__name__)
CONSUMER = "registry-weights"


async def _check(executor: Executor, folder: Path, template_id: str) -> WeightValidationCompleted:
    template = default_catalog().get(template_id)
    if template is None:
        return WeightValidationCompleted(task_id="", model_id="", version_id="", ok=False, message=TEMPLATE_ERROR,
                                         detail=f"template '{template_id}' is not in the catalog")
    result = WeightCheckResult.model_validate(await executor.run(
        Work(entry=work.VALIDATE, args={"folder": folder / "weights", "template_id": template_id},
             workdir=folder / "proc"), ignore_messages))
    return WeightValidationCompleted(
        task_id="", model_id="", version_id="", ok=result.ok, message=result.message, detail=result.detail,
        checks=[WeightCheck(name=name, passed=passed) for name, passed in result.checks])



class WeightImporter:
    """The handler of WeightValidationRequested; ``executor`` runs the checks."""

    def __init__(self, executor: Executor):
        self.executor = executor

    async def __call__(self, platform: Platform, envelope: Envelope, event: WeightValidationRequested) -> None:
        await import_weights(platform, envelope, event, executor=self.executor)


async def import_weights(platform: Platform, envelope: Envelope, event: WeightValidationRequested, *,
                         executor: Executor) -> None:
    version = await platform.mongo[VERSIONS].find_one({"_id": event.version_id}, {"status": 1})
    if version is None or version["status"] != Status.creating:
        return  # deleted, or a redelivery of a request that was already settled
    source, target = ObjectPath.parse(event.weights_uri), ObjectPath.parse(event.target_uri or event.weights_uri)
    work_dir = platform.settings.work_dir or None
    try:
        with tempfile.TemporaryDirectory(prefix="maas-weights-", dir=work_dir) as tmp:
            folder = Path(tmp) / "weights"
            await platform.store.download_prefix(source, folder)
            outcome = (await _check(executor, Path(tmp), event.template_id) if event.validate_weights
                       else WeightValidationCompleted(task_id="", model_id="", version_id="", ok=True))
            if outcome.ok and target != source:
                await platform.store.ensure_bucket(target.bucket)
                await platform.store.upload_folder(folder, target)
    except Exception as exc:  # storage failure mid-way: the job fails with the guide's unknown-error text
        log.exception("weight import of %s failed", event.version_id)
        outcome = WeightValidationCompleted(task_id="", model_id="", version_id="", ok=False, message=UNKNOWN_ERROR,
                                            detail=f"{type(exc).__name__}: {exc}")
    completed = outcome.model_copy(update={
        "task_id": event.task_id, "model_id": event.model_id, "version_id": event.version_id,
        "storage_uri": target.as_prefix().uri if outcome.ok else None})
    async with platform.uow() as uow:
        await uow.mark_processed(consumer=CONSUMER, event_id=envelope.id)
        uow.emit(completed, tenant_id=envelope.tenant_id, subject=envelope.subject)

