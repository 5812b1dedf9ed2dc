"""The compression worker: claims queued jobs, runs SmoothQuant-W8A8 / AWQ-W4A16, publishes the result.

Scale-out: every worker process is a member of the ``compression-worker`` consumer group and runs up
to ``MAAS_COMPRESSION_SLOTS`` jobs at once. ``CompressionRequested`` is only a wake-up call: the job
document is the truth and a worker takes a job with one atomic update (pending → running with a
fresh ``run_id``). An idle worker also polls for queued jobs.

While a job runs, the worker renews a lease on it. If the process dies, the lease expires and any
worker re-queues the job (a compression restarts from the beginning; it has no checkpoints), up to
``MAX_ATTEMPTS`` runs. Every write of a run is fenced by its ``run_id``; a deleted job stops its run
at the next progress report.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import Envelope, new_id
from contracts.compression import (CompressionCompleted, CompressionFailed, CompressionMetrics, CompressionRequested,
                                   CompressionStarted)
from contracts.events import ModelArtifactProduced
from services.common.context import Platform
from services.common.objectstore import ObjectPath
from services.compression.jobs import append_lines, now, permanent_log_path, render_logs, subject, transition
from services.compression.models import JOBS, MAX_ATTEMPTS, STRATEGY_LABELS, JobStatus, Strategy

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


@dataclass
class Run:
    job: dict
    run_id: str
    work: Path
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: dict | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def job_id(self) -> str:
        return self.job["_id"]

    @property
    def tenant_id(self) -> str:
        return self.job["tenant_id"]

    def say(self, message: str) -> None:
        with self.lock:
            self.lines.append(f"[maas] {message}")


@dataclass
class Outcome:
    kind: str                 # completed | failed | cancelled
    message: str | None = None
    weights_uri: str | None = None
    metrics: CompressionMetrics | None = None
    details: dict | None = None


def describe(exc: BaseException) -> str:
    from services.mlkit.quantize.calibration import CalibrationDataError
    from services.mlkit.quantize.modules import UnsupportedModel
    from services.mlkit.quantize.pipeline import CompressionInputError

    if isinstance(exc, (CompressionInputError, CalibrationDataError, UnsupportedModel)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while compressing; use an instance spec with more memory"
    return f"{type(exc).__name__}: {exc}"


class CompressionWorker:
    def __init__(self, platform: Platform, settings: CompressionSettings | None = None):
        self.platform = platform
        self.settings = settings or CompressionSettings()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:6]}"
        self.runs: dict[str, asyncio.Task] = {}
        self.draining = False
        self._wake = asyncio.Event()
        # Compression gets its own threads: the default pool serves short I/O calls.
        self._executor = ThreadPoolExecutor(max_workers=self.settings.slots, thread_name_prefix="compression")

    # -- claiming ---------------------------------------------------------------------------------

    def has_capacity(self) -> bool:
        return not self.draining and len(self.runs) < self.settings.slots

    def nudge(self) -> None:
        self._wake.set()

    async def poll_forever(self) -> None:
        while True:
            try:
                await self.recover_expired()
                await self.claim_queued()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("compression worker poll failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    async def claim_queued(self) -> None:
        while self.has_capacity():
            candidate = await self.platform.mongo[JOBS].find_one(
                {"status": JobStatus.pending.value}, {"_id": 1}, sort=[("created_at", 1)])
            if candidate is None or not await self.try_claim(candidate["_id"]):
                return

    async def try_claim(self, job_id: str) -> bool:
        if not self.has_capacity() or job_id in self.runs:
            return False
        run_id, at = new_id(), now()
        message = f"running on worker {self.worker_id}"
        async with self.platform.uow() as uow:
            job = await transition(uow, job_id, JobStatus.running, message=message, inc={"attempt": 1},
                                   set_={"run": {"run_id": run_id, "worker_id": self.worker_id, "started_at": at,
                                                 "lease_until": at + timedelta(seconds=self.settings.lease_seconds)},
                                         "progress": {"fraction": 0.0, "step": "starting"}})
            if job is not None:
                uow.emit(CompressionStarted(job_id=job_id, worker_id=self.worker_id, attempt=job["attempt"]),
                         tenant_id=job["tenant_id"], subject=subject(job_id))
        if job is None:
            return False   # another worker was faster, or the job was deleted meanwhile
        await self.platform.mongo[JOBS].update_one({"_id": job_id, "started_at": None}, {"$set": {"started_at": at}})
        task = asyncio.create_task(self._run(job, run_id), name=f"compression-{job_id}")
        self.runs[job_id] = task
        task.add_done_callback(lambda _: (self.runs.pop(job_id, None), self.nudge()))
        return True

    async def recover_expired(self) -> int:
        """Re-queue (or fail, after MAX_ATTEMPTS runs) jobs whose worker stopped renewing its lease."""
        at, handled = now(), 0
        async for job in self.platform.mongo[JOBS].find({"status": JobStatus.running.value,
                                                         "run.lease_until": {"$lt": at}}):
            run = job["run"]
            fence = {"run.run_id": run["run_id"], "run.lease_until": {"$lt": at}}
            reason = f"worker {run['worker_id']} stopped responding"
            async with self.platform.uow() as uow:
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
            if doc is not None:
                handled += 1
                await append_lines(self.platform, job_id=job["_id"], tenant_id=job["tenant_id"],
                                   lines=[f"[maas] {message}"])
        return handled

    # -- one run ------------------------------------------------------------------------------------

    async def _run(self, job: dict, run_id: str) -> None:
        work_root = Path(self.platform.settings.work_dir) if self.platform.settings.work_dir else None
        if work_root:
            work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"maas-compress-{job['_id'][:8]}-", dir=work_root) as tmp:
            run = Run(job=job, run_id=run_id, work=Path(tmp), loop=asyncio.get_running_loop())
            run.say(f"job '{job['name']}' ({STRATEGY_LABELS[Strategy(job['strategy'])]}) claimed by worker "
                    f"{self.worker_id} (run {job['attempt']})")
            heartbeat = asyncio.create_task(self._heartbeat(run))
            flusher = asyncio.create_task(self._flush_forever(run))
            try:
                outcome = await self._compress(run)
            except Exception as exc:
                from services.mlkit.quantize.pipeline import Cancelled

                if isinstance(exc, Cancelled) or run.cancel.is_set():
                    outcome = Outcome("cancelled")
                else:
                    log.exception("compression job %s failed", job["_id"])
                    outcome = Outcome("failed", message=describe(exc))
            finally:
                heartbeat.cancel()
                flusher.cancel()
                await asyncio.gather(heartbeat, flusher, return_exceptions=True)
            if outcome.kind == "failed":
                run.say(f"ERROR {outcome.message}")
            try:
                await self._finish(run, outcome)
            except Exception:
                log.exception("recording the end of compression job %s failed", job["_id"])
            await self._flush(run)
            await self._keep_logs(run)

    async def _heartbeat(self, run: Run) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                renewed = await self.platform.mongo[JOBS].update_one(
                    {"_id": run.job_id, "run.run_id": run.run_id, "status": JobStatus.running.value},
                    {"$set": {"run.lease_until": now() + timedelta(seconds=self.settings.lease_seconds)}})
            except Exception:   # a database hiccup: the lease is long enough to try again
                log.warning("lease renewal of %s failed", run.job_id, exc_info=True)
                continue
            if renewed.matched_count == 0:   # deleted, or re-queued to another worker
                run.cancel.set()
                return

    async def _calibration_texts(self, run: Run) -> list[str] | None:
        from services.mlkit.quantize.calibration import parse_calibration_file

        calibration = run.job["calibration"]
        if calibration["kind"] == "builtin":
            run.say("calibration: the built-in set (English and Chinese prose, chat, code, maths)")
            return None
        path = ObjectPath.parse(calibration["path"])
        run.say(f"calibration: {calibration['path']}")
        data = await self.platform.store.get_bytes(path)
        return await asyncio.to_thread(parse_calibration_file, path.key.rsplit("/", 1)[-1], data)

    async def _compress(self, run: Run) -> Outcome:
        from services.mlkit.quantize.pipeline import Cancelled, CompressionConfig, compress

        job, settings = run.job, self.settings
        source = run.work / "source"
        run.say(f"downloading the source weights from {job['source']['weights_uri']}")
        await self.platform.store.download_prefix(ObjectPath.parse(job["source"]["weights_uri"]), source)
        texts = await self._calibration_texts(run)
        config = CompressionConfig(strategy=job["strategy"], alpha=(job["params"] or {}).get("alpha") or 0.0,
                                   n_grid=settings.awq_grid, clip=settings.awq_clip,
                                   search_tokens=settings.awq_search_tokens, duo=settings.awq_duo,
                                   float_zero=settings.awq_float_zero, size_budget=settings.awq_size_budget, seq_len=settings.seq_len,
                                   max_calibration_tokens=settings.calibration_tokens,
                                   max_eval_tokens=settings.eval_tokens)

        def on_progress(fraction: float, step: str) -> None:
            if run.cancel.is_set():
                raise Cancelled
            with run.lock:
                run.progress = {"fraction": round(fraction, 4), "step": step}

        def on_log(line: str) -> None:
            with run.lock:
                run.lines.append(line)

        outcome = await run.loop.run_in_executor(self._executor, lambda: compress(
            model_dir=source, out_dir=run.work / "out", config=config, work_dir=run.work / "work",
            calibration_texts=texts, on_progress=on_progress, on_log=on_log))
        target = ObjectPath.parse(job["output"]["path"]).as_prefix()
        target = ObjectPath(target.bucket, target.key + "model/")
        run.say(f"uploading the compressed model to {target.uri}")
        on_progress(0.95, "upload")
        await self.platform.store.ensure_bucket(target.bucket)
        await self.platform.store.remove_prefix(target)   # a restarted run may find an earlier partial upload
        await self.platform.store.upload_folder(outcome.out_dir, target)
        metrics = CompressionMetrics(
            size_before_bytes=outcome.size_before_bytes, size_after_bytes=outcome.size_after_bytes,
            size_ratio=round(outcome.size_ratio, 4), perplexity_before=round(outcome.perplexity_before, 4),
            perplexity_after=round(outcome.perplexity_after, 4), perplexity_ratio=round(outcome.perplexity_ratio, 4),
            duration_seconds=round(time.monotonic() - run.started, 1))
        return Outcome("completed", weights_uri=target.uri, metrics=metrics, details=outcome.details)

    # -- logs and progress ----------------------------------------------------------------------

    async def _flush_forever(self, run: Run) -> None:
        while True:
            await asyncio.sleep(self.settings.log_flush_seconds)
            try:
                await self._flush(run)
            except Exception:
                log.warning("flushing logs of %s failed", run.job_id, exc_info=True)

    async def _flush(self, run: Run) -> None:
        with run.lock:
            lines, run.lines = run.lines, []
            progress, run.progress = run.progress, None
        await append_lines(self.platform, job_id=run.job_id, tenant_id=run.tenant_id, lines=lines)
        if progress is not None:
            await self.platform.mongo[JOBS].update_one(
                {"_id": run.job_id, "run.run_id": run.run_id, "status": JobStatus.running.value},
                {"$set": {"progress": {**progress, "updated_at": now()}}})

    async def _keep_logs(self, run: Run) -> None:
        job = await self.platform.mongo[JOBS].find_one({"_id": run.job_id})
        if job is None or not (job.get("permanent_log") or {}).get("enabled"):
            return
        try:
            text = await render_logs(self.platform, job_id=run.job_id)
            await self.platform.store.put_bytes(permanent_log_path(job), text.encode(),
                                                content_type="text/plain; charset=utf-8")
        except Exception:
            log.warning("copying the log of %s failed", run.job_id, exc_info=True)

    # -- the end of a run -----------------------------------------------------------------------

    async def _finish(self, run: Run, outcome: Outcome) -> None:
        if outcome.kind == "cancelled":
            log.info("compression job %s was deleted while running; stopped", run.job_id)
            return
        job, fence, at = run.job, {"run.run_id": run.run_id}, now()
        async with self.platform.uow() as uow:
            if outcome.kind == "completed":
                m = outcome.metrics
                message = (f"perplexity {m.perplexity_before:.3f} → {m.perplexity_after:.3f} "
                           f"({m.perplexity_ratio:.3f}x), size {m.size_ratio:.3f}x")
                doc = await transition(uow, run.job_id, JobStatus.completed, where=fence, message=message, set_={
                    "finished_at": at, "metrics": m.model_dump(), "details": outcome.details,
                    "output.weights_uri": outcome.weights_uri, "progress": {"fraction": 1.0, "step": "done"}})
                if doc is None:
                    return
                out = job["output"]
                uow.emit(CompressionCompleted(job_id=run.job_id, strategy=job["strategy"],
                                              weights_uri=outcome.weights_uri, output_model_name=out["model_name"],
                                              metrics=m), tenant_id=run.tenant_id, subject=subject(run.job_id))
                # The output is an ONNX folder, not transformers weights, and its template is the
                # (float) source's: the registry imports it without the table 5-4 checks, which
                # this job has already done its own way (the quantized model ran on held-out text).
                uow.emit(ModelArtifactProduced(
                    task_id=run.job_id, task_kind="compression", weights_uri=outcome.weights_uri,
                    target="new_model", model_name=out["model_name"], template_id=job["template_id"],
                    quantization=job["strategy"], description=out["description"], validate_weights=False),
                    tenant_id=run.tenant_id, subject=subject(run.job_id))
                run.say(f"completed: {message}; the compressed model '{out['model_name']}' is being registered")
                return
            doc = await transition(uow, run.job_id, JobStatus.failed, where=fence, message=outcome.message,
                                   set_={"finished_at": at})
            if doc is not None:
                uow.emit(CompressionFailed(job_id=run.job_id, message=outcome.message or "failed",
                                           attempt=doc.get("attempt", 1)),
                         tenant_id=run.tenant_id, subject=subject(run.job_id))


_WORKERS: dict[int, CompressionWorker] = {}


def worker_for(platform: Platform) -> CompressionWorker:
    worker = _WORKERS.get(id(platform))
    if worker is None:
        worker = _WORKERS[id(platform)] = CompressionWorker(platform)
    return worker


async def run_worker(platform: Platform) -> None:
    worker = worker_for(platform)
    try:
        await worker.poll_forever()
    finally:
        worker.draining = True
        _WORKERS.pop(id(platform), None)


async def on_compression_requested(platform: Platform, envelope: Envelope, event: CompressionRequested) -> None:
    # Returns at once: the compression runs as a task, so the consumer keeps polling Kafka.
    await worker_for(platform).try_claim(event.job_id)


HANDLERS = {CompressionRequested: on_compression_requested}
