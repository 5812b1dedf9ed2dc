"""Weight validation as a kind of job of the engine (``services.lib.jobs``): fetch a version's weights,
run the table 5-4 checks in a job process, keep the platform's copy, and report the outcome.

The registry records a validation job in the same unit of work as the version it validates, so the
job document is the truth: ``WeightValidationRequested`` only wakes a worker, an idle worker polls,
and a worker that dies leaves a lease that the registry's watchdog hands to another one. What this
module supplies is only what differs from tuning and compression: the job document, the work and
what its end means (``WeightValidationCompleted``, which settles the version).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from pymongo import ASCENDING

from contracts import Envelope
from contracts.events import WeightCheck, WeightValidationCompleted, WeightValidationRequested
from services.lib.catalog.templates import default_catalog
from services.lib.common import jobs as common
from services.lib.common.cluster import Resources
from services.lib.common.context import Platform
from services.lib.common.jobs import JobLogs, now
from services.lib.common.objectstore import ObjectPath
from services.lib.jobs.executor import Executor, Work, ignore_messages
from services.lib.jobs.executors import executor_for
from services.lib.jobs.local_process import LocalProcessExecutor
from services.lib.jobs.outages import through_outages
from services.lib.jobs.runner import JobRunner, Outcome, Run, RunnerSettings
from services.lib.jobs.watchdog import watch
from services.registry import work
from services.registry.models import VERSIONS, Status
from services.registry.weight_checks import MSG_TEMPLATE, MSG_UNKNOWN, WeightCheckResult

log = logging.getLogger(__name__)

JOBS = "weight_validation_jobs"
LOGS = "weight_validation_logs"
INDEXES = [(JOBS, [("status", ASCENDING), ("created_at", ASCENDING)], {}),
           (LOGS, [("job_id", ASCENDING), ("seq", ASCENDING)], {"unique": True})]
MAX_ATTEMPTS = 3

# status -> the statuses it may be entered from
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "waiting": ("running",),               # its worker vanished: another one takes it
    "running": ("waiting",),
    "completed": ("running",),
    "failed": ("waiting", "running"),
}


class ValidationSettings(BaseSettings):
    """Worker knobs (env prefix ``MAAS_WEIGHT_VALIDATION_``)."""
    model_config = SettingsConfigDict(env_prefix="MAAS_WEIGHT_VALIDATION_", extra="ignore")

    lease_seconds: float = Field(60.0, gt=0)
    heartbeat_seconds: float = Field(2.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0, description="how often an idle worker looks for waiting validations")
    slots: int = Field(1, ge=1, description="validations one worker process runs at a time")


def new_job(request: WeightValidationRequested, *, tenant_id: str, name: str, at: datetime) -> dict:
    return {"_id": request.task_id, "tenant_id": tenant_id, "name": name, "model_id": request.model_id,
            "version_id": request.version_id, "template_id": request.template_id,
            "weights_uri": request.weights_uri, "target_uri": request.target_uri or request.weights_uri,
            "validate_weights": request.validate_weights, "status": "waiting", "status_message": None,
            "history": [{"status": "waiting", "at": at, "message": "submitted"}], "attempt": 0, "log_seq": 0,
            "run": None, "created_at": at, "updated_at": at, "started_at": None, "finished_at": None}


async def request_validation(uow, *, task_id: str, tenant_id: str, version: dict, template_id: str) -> None:
    """Record the validation job of ``version`` and wake a worker, in the caller's unit of work."""
    request = WeightValidationRequested(
        task_id=task_id, model_id=version["model_id"], version_id=version["_id"], template_id=template_id,
        weights_uri=version["source_uri"], target_uri=version["target_uri"],
        validate_weights=version["validate_weights"])
    job = new_job(request, tenant_id=tenant_id, name=f"weight-validation-V{version['number']}", at=now())
    await uow.collection(JOBS).insert_one(job, session=uow.session)
    uow.emit(request, tenant_id=tenant_id, subject=f"models/{version['model_id']}")


async def _transition(uow, job_id: str, target: str, *, message: str | None = None,
                      where: dict[str, Any] | None = None, set_: dict[str, Any] | None = None,
                      inc: dict[str, Any] | None = None) -> dict | None:
    return await common.transition(uow, collection=JOBS, task_kind=None, job_id=job_id,
                                   target=target, allowed_from=ALLOWED_FROM[target], message=message, where=where,
                                   set_=set_, inc=inc)


def _completed(job: dict, **fields) -> WeightValidationCompleted:
    return WeightValidationCompleted(task_id=job["_id"], model_id=job["model_id"], version_id=job["version_id"],
                                     **fields)


class WeightValidations:
    """Weight validation as a job kind (services.lib.jobs.runner.JobKind and watchdog.Recoverable)."""
    name = "weight-validation"
    jobs = JOBS
    logs = JobLogs(jobs=JOBS, logs=LOGS)
    claimable = ("waiting",)

    def __init__(self, platform: Platform, executor: Executor | None):
        self.platform, self.executor = platform, executor

    async def claim(self, uow, *, job_id: str, run: dict) -> dict | None:
        return await _transition(uow, job_id, "running", message=f"running on worker {run['worker_id']}",
                                 inc={"attempt": 1}, set_={"run": run})

    async def execute(self, run: Run) -> Outcome:
        job = run.job
        run.say(f"{job['name']} of model {job['model_id']} claimed by worker {run.worker_id} (run {job['attempt']})")
        version = await self.platform.mongo[VERSIONS].find_one({"_id": job["version_id"]}, {"status": 1})
        if version is None or version["status"] != Status.creating:
            return Outcome("cancelled", message="the version was deleted or settled meanwhile")
        source, target = ObjectPath.parse(job["weights_uri"]), ObjectPath.parse(job["target_uri"])
        folder = run.work / "weights"
        run.say(f"downloading the weights from {source.uri}")
        await through_outages(run, lambda: self.platform.store.download_prefix(source, folder))
        result = WeightCheckResult(ok=True, message=None, detail=None, checks=[])
        if job["validate_weights"]:
            if default_catalog().get(job["template_id"]) is None:
                result = WeightCheckResult(ok=False, message=MSG_TEMPLATE, checks=[],
                                           detail=f"template '{job['template_id']}' is not in the catalog")
            else:
                run.say("checking the weights against the template (table 5-4)")
                result = WeightCheckResult.model_validate(await self.executor.run(
                    Work(entry=work.VALIDATE, args={"folder": folder, "template_id": job["template_id"]},
                         workdir=run.work / "proc", placement=run.placement), run.relay(ignore_messages)))
        if result.ok and target != source:
            run.say(f"keeping the platform's copy in {target.as_prefix().uri}")
            await through_outages(run, lambda: self.platform.store.ensure_bucket(target.bucket))
            await through_outages(run, lambda: self.platform.store.upload_folder(folder, target))
        return Outcome("completed", message=result.message, result={"checks": result})

    def failure(self, run: Run, exc: Exception) -> Outcome:
        # Storage failing mid-way: the version fails with the guide's unknown-error text.
        return Outcome("failed", message=MSG_UNKNOWN, result={"detail": f"{type(exc).__name__}: {exc}"})

    async def record_end(self, uow, run: Run, outcome: Outcome) -> str | None:
        job, fence = run.job, {"run.run_id": run.run_id}
        if outcome.kind == "cancelled":
            await _transition(uow, run.job_id, "failed", where=fence, message=outcome.message,
                              set_={"finished_at": now()})
            return outcome.message
        if outcome.kind == "completed":
            checks: WeightCheckResult = outcome.result["checks"]
            event = _completed(job, ok=checks.ok, message=checks.message, detail=checks.detail,
                               checks=[WeightCheck(name=n, passed=p) for n, p in checks.checks],
                               storage_uri=ObjectPath.parse(job["target_uri"]).as_prefix().uri if checks.ok else None)
        else:
            event = _completed(job, ok=False, message=outcome.message, detail=outcome.result.get("detail"))
        target = "completed" if outcome.kind == "completed" else "failed"
        doc = await _transition(uow, run.job_id, target, where=fence, message=event.message,
                                set_={"finished_at": now(), "ok": event.ok})
        if doc is None:
            return None
        uow.emit(event, tenant_id=run.tenant_id, subject=f"models/{job['model_id']}")
        return "the weights passed every check" if event.ok else f"failed: {event.message}"

    async def recover(self, uow, job: dict, at: datetime) -> str | None:
        """Hand a validation whose worker stopped renewing its lease to another (or fail it, after
        MAX_ATTEMPTS runs)."""
        fence = {"run.run_id": job["run"]["run_id"], "run.lease_until": {"$lt": at}}
        reason = f"worker {job['run']['worker_id']} stopped responding"
        if job.get("attempt", 1) < MAX_ATTEMPTS:
            message = f"{reason}; another worker takes it (run {job['attempt'] + 1} of at most {MAX_ATTEMPTS})"
            doc = await _transition(uow, job["_id"], "waiting", where=fence, message=message)
        else:
            message = f"{reason}; it already ran {job['attempt']} times, the maximum"
            doc = await _transition(uow, job["_id"], "failed", where=fence, message=message,
                                    set_={"finished_at": at, "ok": False})
            if doc is not None:
                uow.emit(_completed(job, ok=False, message=MSG_UNKNOWN, detail=message),
                         tenant_id=job["tenant_id"], subject=f"models/{job['model_id']}")
        return message if doc is not None else None

    async def save_progress(self, run: Run, progress: dict) -> None:
        pass   # a validation reports its steps in its log

    def on_heartbeat(self, run: Run) -> None:
        pass


# ------------------------------------------------------------------------------------ wiring

def build_runner(platform: Platform, settings: ValidationSettings | None = None) -> JobRunner:
    """The registry worker's component: one runner per process, built by the composition root."""
    settings = settings or ValidationSettings()
    # A warm job process keeps torch imported between models.
    executor = executor_for(platform, max_concurrent=settings.slots, local=lambda: LocalProcessExecutor(
        reuse_processes=True, max_concurrent=settings.slots))
    # The registry's own short work, not a user's compute job: recorded in the public pool, it takes
    # no share of it (a model's registration never waits behind a day-long tuning job).
    return JobRunner(platform, WeightValidations(platform, executor), RunnerSettings(
        slots=settings.slots, lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds, default_resources=Resources()))


async def run_worker(runner: JobRunner) -> None:
    await runner.serve()


async def watch_leases(platform: Platform) -> None:
    """The registry's lease watchdog for validations (``recover`` needs no executor: nothing runs here)."""
    await watch(platform, WeightValidations(platform, executor=None), every_seconds=ValidationSettings().poll_seconds)


async def on_validation_requested(runner: JobRunner, envelope: Envelope, event: WeightValidationRequested) -> None:
    # Returns at once: the validation runs as a task, so the consumer keeps polling Kafka.
    if await runner.try_claim(event.task_id):
        return
    mongo = runner.platform.mongo
    if await mongo[JOBS].find_one({"_id": event.task_id}, {"_id": 1}) is not None:
        return   # taken by another worker, or waiting for a free slot (the poll takes it)
    # Asked for before validations were jobs (a platform upgraded with imports in flight): the
    # request becomes its job, once, while its version still waits for it.
    version = await mongo[VERSIONS].find_one({"_id": event.version_id, "status": Status.creating}, {"number": 1})
    if version is None:
        return
    job = new_job(event, tenant_id=envelope.tenant_id, name=f"weight-validation-V{version['number']}", at=now())
    await mongo[JOBS].update_one({"_id": event.task_id}, {"$setOnInsert": job}, upsert=True)
    await runner.try_claim(event.task_id)


HANDLERS = {WeightValidationRequested: on_validation_requested}

