"""The compression worker: claims queued jobs, runs SmoothQuant-W8A8 / AWQ-W4A16, publishes the result.

Scale-out: every worker process is a member of the ``compression-worker`` consumer group and runs up
to ``MAAS_COMPRESSION_SLOTS`` jobs at once. ``CompressionRequested`` is only a wake-up call: the job
document is the truth and a worker takes a job with one atomic update (pending → running with a
fresh ``run_id``). An idle worker also polls for queued jobs.

While a job runs, the worker renews a lease on it. If the process dies, the lease expires and the
compression service's watchdog re-queues the job (a compression restarts from the beginning; it has
no checkpoints), up to ``MAX_ATTEMPTS`` runs. Every write of a run is fenced by its ``run_id``; a deleted job stops its run
at the next progress report. The compression itself runs in a job process (``services.lib.jobs``,
entry in ``work``): model code never shares this process's GIL with its event loop.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import Envelope
from contracts.compression import (CompressionCompleted, CompressionFailed, CompressionMetrics, CompressionRequested,
                                   CompressionStarted)
from contracts.events import ModelArtifactProduced
from services.lib.common.context import Platform
from services.lib.common.objectstore import ObjectPath
from services.compression import work
from services.compression.jobs import JOB_LOGS, now, subject, transition
from services.compression.models import JOBS, MAX_ATTEMPTS, STRATEGY_LABELS, JobStatus, Strategy
from services.lib.jobs.executor import Executor, JobCancelled, Work, WorkFailed
from services.lib.jobs.executors import executor_for
from services.lib.jobs.local_process import LocalProcessExecutor
from services.lib.jobs.outages import through_outages
from services.lib.jobs.runner import JobRunner, Outcome, Run, RunnerSettings, unless_stopped
from services.lib.jobs.watchdog import watch
from services.lib.mlkit.quantize.calibration import parse_calibration_file
from services.lib.mlkit.quantize.pipeline import CompressionConfig, CompressionOutcome

log = logging.getLogger(__name__)


class CompressionSettings(BaseSettings):
    """Worker knobs (env prefix ``MAAS_COMPRESSION_``), read when a worker starts."""
    model_config = SettingsConfigDict(env_prefix="MAAS_COMPRESSION_", extra="ignore")

    lease_seconds: float = Field(60.0, gt=0, description="a running job whose worker misses heartbeats this long "
                                                          "is re-queued (or failed after MAX_ATTEMPTS runs)")
    heartbeat_seconds: float = Field(2.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0, description="how often an idle worker looks for queued jobs")
    slots: int = Field(1, ge=1, description="jobs one worker process runs at a time")
    log_flush_seconds: float = Field(1.0, gt=0)
    calibration_tokens: int = Field(4096, ge=64, description="calibration tokens used by SmoothQuant / AWQ")
    seq_len: int = Field(512, ge=16, description="calibration and evaluation window")
    awq_grid: int = Field(10, ge=2, description="α grid points of the AWQ scale search")
    awq_clip: bool = True
    awq_search_tokens: int = Field(1024, ge=16, description="tokens the AWQ grid search compares outputs on")
    awq_duo: bool = False
    awq_float_zero: bool = Field(True, description="float zero points for the linears they help most, within "
                                                   "the size budget (false: integer zero points everywhere)")
    awq_size_budget: float = Field(0.195, gt=0, le=1, description="W4A16 output size at most this share of the "
                                                                  "float32 size")
    eval_tokens: int | None = Field(None, ge=64, description="cap on held-out tokens (default: all ~1.4k)")


def describe(exc: BaseException) -> str:
    if isinstance(exc, MemoryError) or (isinstance(exc, WorkFailed) and exc.kind == "MemoryError"):
        return "out of memory while compressing; use an instance spec with more memory"
    if isinstance(exc, ValueError):   # a calibration file we could not read: the message names the line
        return str(exc)
    if isinstance(exc, WorkFailed):   # raised in the job process: our input errors read as ours do
        return exc.message if exc.input_error else str(exc)
    return f"{type(exc).__name__}: {exc}"


class CompressionJobs:
    """Compression as a kind of job of the engine (services.lib.jobs.runner.JobKind)."""
    name = "compression"
    jobs = JOBS
    logs = JOB_LOGS
    claimable = (JobStatus.pending.value,)

    def __init__(self, platform: Platform, settings: CompressionSettings, executor: Executor | None):
        self.platform, self.settings, self.executor = platform, settings, executor

    async def claim(self, uow, *, job_id: str, run: dict) -> dict | None:
        job = await transition(uow, job_id, JobStatus.running, message=f"running on worker {run['worker_id']}",
                               inc={"attempt": 1}, set_={"run": run, "progress": {"fraction": 0.0, "step": "starting"}})
        if job is not None:
            uow.emit(CompressionStarted(job_id=job_id, worker_id=run["worker_id"], attempt=job["attempt"]),
                     tenant_id=job["tenant_id"], subject=subject(job_id))
        return job

    async def recover(self, uow, job: dict, at) -> str | None:
        """Re-queue (or fail, after MAX_ATTEMPTS runs) a job whose worker stopped renewing its lease."""
        run = job["run"]
        fence = {"run.run_id": run["run_id"], "run.lease_until": {"$lt": at}}
        reason = f"worker {run['worker_id']} stopped responding"
        if job.get("attempt", 1) < MAX_ATTEMPTS:
            message = f"{reason}; restarting (run {job['attempt'] + 1} of at most {MAX_ATTEMPTS})"
            doc = await transition(uow, job["_id"], JobStatus.pending, where=fence, message=message)
            if doc is not None:
                uow.emit(CompressionRequested(job_id=job["_id"], strategy=job["strategy"], reason="restarted",
                                              attempt=job["attempt"] + 1),
                         tenant_id=job["tenant_id"], subject=subject(job["_id"]))
        else:
            message = f"{reason}; it already ran {job['attempt']} times, the maximum"
            doc = await transition(uow, job["_id"], JobStatus.failed, where=fence, message=message,
                                   set_={"finished_at": at})
            if doc is not None:
                uow.emit(CompressionFailed(job_id=job["_id"], message=message, attempt=job["attempt"]),
                         tenant_id=job["tenant_id"], subject=subject(job["_id"]))
        return message if doc is not None else None

    def on_heartbeat(self, run: Run) -> None:
        pass

    def failure(self, run: Run, exc: Exception) -> Outcome:
        if run.stop.is_set():   # stopped or deleted while it ran: whatever broke, there is nothing to record
            return Outcome("cancelled")
        return Outcome("failed", message=describe(exc))

    async def save_progress(self, run: Run, progress: dict) -> None:
        await self.platform.mongo[JOBS].update_one(
            {"_id": run.job_id, "run.run_id": run.run_id, "status": JobStatus.running.value},
            {"$set": {"progress": {**progress, "updated_at": now()}}})

    # -- the work -----------------------------------------------------------------------------------

    async def _calibration_texts(self, run: Run) -> list[str] | None:
        calibration = run.job["calibration"]
        if calibration["kind"] == "builtin":
            run.say("calibration: the built-in set (English and Chinese prose, chat, code, maths)")
            return None
        path = ObjectPath.parse(calibration["path"])
        run.say(f"calibration: {calibration['path']}")
        data = await self.platform.store.get_bytes(path)
        return await asyncio.to_thread(parse_calibration_file, path.key.rsplit("/", 1)[-1], data)

    async def execute(self, run: Run) -> Outcome:
        job, settings = run.job, self.settings
        run.say(f"job '{job['name']}' ({STRATEGY_LABELS[Strategy(job['strategy'])]}) claimed by worker "
                f"{run.worker_id} (run {job['attempt']})")
        source = run.work / "source"
        run.say(f"downloading the source weights from {job['source']['weights_uri']}")
        await through_outages(run, lambda: self.platform.store.download_prefix(
            ObjectPath.parse(job["source"]["weights_uri"]), source))
        texts = await self._calibration_texts(run)
        config = CompressionConfig(strategy=job["strategy"], alpha=(job["params"] or {}).get("alpha") or 0.0,
                                   n_grid=settings.awq_grid, clip=settings.awq_clip,
                                   search_tokens=settings.awq_search_tokens, duo=settings.awq_duo,
                                   float_zero=settings.awq_float_zero, size_budget=settings.awq_size_budget,
                                   seq_len=settings.seq_len, max_calibration_tokens=settings.calibration_tokens,
                                   max_eval_tokens=settings.eval_tokens)

        def on_message(kind: str, data: dict):   # from the executor's relay thread
            if kind == "progress":
                run.set_progress({"fraction": round(data["fraction"], 4), "step": data["step"]})
                return run.stop.is_set()        # the answer stops a stopped or deleted job at its next step
            if kind == "log":
                run.log(data["line"])
            return None

        # A stop (the job left "running": stopped or deleted) ends the job process at once: there is
        # no checkpoint to save, a continued job starts again from the beginning.
        if run.stop.is_set():
            raise JobCancelled("the job was stopped or deleted before it started compressing")
        result = await unless_stopped(run, self.executor.run(Work(
            entry=work.COMPRESS, workdir=run.work / "proc", placement=run.placement, args={
                "model_dir": source, "out_dir": run.work / "out", "work_dir": run.work / "work",
                "config": dataclasses.asdict(config), "calibration_texts": texts}), run.relay(on_message)))
        outcome = CompressionOutcome(**{**result, "out_dir": Path(result["out_dir"])})
        if run.stop.is_set():   # stopped or deleted while it computed: upload nothing
            raise JobCancelled("the job was stopped or deleted before its upload")
        target = ObjectPath.parse(job["output"]["path"]).as_prefix()
        target = ObjectPath(target.bucket, target.key + "model/")
        run.say(f"uploading the compressed model to {target.uri}")
        run.set_progress({"fraction": 0.95, "step": "upload"})

        async def upload() -> None:
            await self.platform.store.ensure_bucket(target.bucket)
            await self.platform.store.remove_prefix(target)   # a restarted run may find an earlier partial upload
            await self.platform.store.upload_folder(outcome.out_dir, target)
        await through_outages(run, upload)
        metrics = CompressionMetrics(
            size_before_bytes=outcome.size_before_bytes, size_after_bytes=outcome.size_after_bytes,
            size_ratio=round(outcome.size_ratio, 4), perplexity_before=round(outcome.perplexity_before, 4),
            perplexity_after=round(outcome.perplexity_after, 4), perplexity_ratio=round(outcome.perplexity_ratio, 4),
            duration_seconds=round(time.monotonic() - run.started, 1))
        return Outcome("completed", result={"weights_uri": target.uri, "metrics": metrics,
                                            "details": outcome.details})

    # -- the end of a run ---------------------------------------------------------------------------

    async def record_end(self, uow, run: Run, outcome: Outcome) -> str | None:
        job, fence, at = run.job, {"run.run_id": run.run_id}, now()
        # This run lets the job go (a continue waits for that, or for its lease to expire).
        released = await uow.collection(JOBS).find_one_and_update(
            {"_id": run.job_id, **fence}, {"$set": {"run.active": False}}, session=uow.session)
        if outcome.kind == "cancelled":
            if released is None or released["status"] != JobStatus.stopped.value:
                log.info("compression job %s was deleted or re-queued while running; its run ended", run.job_id)
                return None
            return "stopped: the job process was ended; continuing the job runs it again from the beginning"
        if outcome.kind == "completed":
            m, weights_uri = outcome.result["metrics"], outcome.result["weights_uri"]
            message = (f"perplexity {m.perplexity_before:.3f} → {m.perplexity_after:.3f} "
                       f"({m.perplexity_ratio:.3f}x), size {m.size_ratio:.3f}x")
            doc = await transition(uow, run.job_id, JobStatus.completed, where=fence, message=message, set_={
                "finished_at": at, "metrics": m.model_dump(), "details": outcome.result["details"],
                "output.weights_uri": weights_uri, "progress": {"fraction": 1.0, "step": "done"}})
            if doc is None:
                return None
            out = job["output"]
            uow.emit(CompressionCompleted(job_id=run.job_id, strategy=job["strategy"], weights_uri=weights_uri,
                                          output_model_name=out["model_name"], metrics=m),
                     tenant_id=run.tenant_id, subject=subject(run.job_id))
            # The output is an ONNX folder, not transformers weights, and its template is the
            # (float) source's: the registry imports it without the table 5-4 checks, which
            # this job has already done its own way (the quantized model ran on held-out text).
            uow.emit(ModelArtifactProduced(
                task_id=run.job_id, task_kind="compression", weights_uri=weights_uri,
                target="new_model", model_name=out["model_name"], template_id=job["template_id"],
                quantization=job["strategy"], description=out["description"], validate_weights=False),
                tenant_id=run.tenant_id, subject=subject(run.job_id))
            return f"completed: {message}; the compressed model '{out['model_name']}' is being registered"
        doc = await transition(uow, run.job_id, JobStatus.failed, where=fence, message=outcome.message,
                               set_={"finished_at": at})
        if doc is not None:
            uow.emit(CompressionFailed(job_id=run.job_id, message=outcome.message or "failed",
                                       attempt=doc.get("attempt", 1)),
                     tenant_id=run.tenant_id, subject=subject(run.job_id))
        return None


def build_runner(platform: Platform, settings: CompressionSettings | None = None) -> JobRunner:
    """The compression worker's component: one runner per process, built by the composition root."""
    settings = settings or CompressionSettings()
    executor = executor_for(platform, local=lambda: LocalProcessExecutor(max_concurrent=settings.slots),
                            max_concurrent=settings.slots)
    kind = CompressionJobs(platform, settings, executor)
    return JobRunner(platform, kind, RunnerSettings(
        slots=settings.slots, lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds, log_flush_seconds=settings.log_flush_seconds))


async def watch_leases(platform: Platform) -> None:
    """The compression service's lease watchdog (the engine's; ``CompressionJobs.recover`` decides)."""
    settings = CompressionSettings()
    # recover() needs no executor: nothing runs here.
    await watch(platform, CompressionJobs(platform, settings, executor=None), every_seconds=settings.poll_seconds)


async def run_worker(runner: JobRunner) -> None:
    await runner.serve()


async def on_compression_requested(runner: JobRunner, envelope: Envelope, event: CompressionRequested) -> None:
    # Returns at once: the compression runs as a task, so the consumer keeps polling Kafka.
    await runner.try_claim(event.job_id)


HANDLERS = {CompressionRequested: on_compression_requested}
