"""The tuning worker: claims queued jobs, trains them, checkpoints to object storage, resumes.

Scale-out: every worker process is a member of the ``tuning-worker`` consumer group and trains up
to ``MAAS_TUNING_SLOTS`` jobs at once. A ``TuneRequested`` event is only a wake-up call; the job
document is the truth and a worker takes a job with one atomic update (status creating/waiting ->
running with a fresh ``run_id``), so two workers never train one job. An idle worker also polls for
queued jobs, which covers events that arrived while it was busy.

The training itself runs in a child process (``trainproc``) whose callbacks this worker serves:
log lines and progress go to MongoDB, checkpoints to object storage, and a stop request (user stop,
delete, auto-stop, shutdown) is answered at the next iteration.

While training, the worker renews a lease on the job every few seconds. If it dies, the lease
expires and the tuning service's watchdog re-queues the job (auto-restart); the next worker
resumes from the latest checkpoint. Every write of a run is fenced by its ``run_id``: a worker that
lost its job (stopped, deleted, re-queued) cannot overwrite the new run's state.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pymongo import ReturnDocument

from contracts import Envelope, new_id
from contracts.events import ModelArtifactProduced
from contracts.tuning import (CheckpointConversionRequested, CheckpointSaved, TuneCompleted, TuneFailed,
                              TuneProgress, TuneRequested, TuneStarted, TuneStopped)
from services.common.context import Platform
from services.common.objectstore import ObjectPath
from services.tuning.jobs import announce_task_record, now, subject, transact, transition
from services.tuning.logstore import append_lines, upload_permanent_log
from services.tuning.models import CONVERSIONS, JOBS, JobStatus, managed_root
from services.tuning.settings import TuningSettings
from services.tuning.trainproc import run_training
from services.tuning.states import CLAIMABLE, may_auto_restart

log = logging.getLogger(__name__)
CONSUMER = "tuning-worker"
TRAINING_ONLY_PREFIXES = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state_")


@dataclass
class Run:
    """One claim of a job by this worker."""
    job: dict
    run_id: str
    work: Path
    loop: asyncio.AbstractEventLoop
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None            # lost (stopped, deleted, re-queued) | auto_stop | shutdown
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: dict | None = None
    progress_dirty: bool = False
    last_progress_event: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def job_id(self) -> str:
        return self.job["_id"]

    @property
    def tenant_id(self) -> str:
        return self.job["tenant_id"]

    def say(self, message: str) -> None:
        """An informational log line (thread-safe)."""
        with self.lock:
            self.lines.append(f"[maas] {message}")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()


@dataclass
class Outcome:
    kind: str                       # completed | stopped | failed
    message: str | None = None
    environmental: bool = False     # storage / network / a lost process: auto-restart applies
    weights_uri: str | None = None
    iterations: int = 0
    final_loss: float | None = None


class TuningWorker:
    def __init__(self, platform: Platform, settings: TuningSettings | None = None):
        self.platform = platform
        self.settings = settings or TuningSettings()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:6]}"
        self.runs: dict[str, asyncio.Task] = {}
        self.active: dict[str, Run] = {}
        self.conversions: dict[str, asyncio.Task] = {}
        self.draining = False           # a draining worker finishes what it runs and claims nothing new
        self._wake = asyncio.Event()
        # Relaying a training and merging adapters get their own threads: the default pool serves
        # short I/O calls and must not be starved by hour-long jobs.
        self._executor = ThreadPoolExecutor(max_workers=self.settings.slots + 2, thread_name_prefix="tuning")

    # -- claiming ---------------------------------------------------------------------------------

    def has_capacity(self) -> bool:
        return not self.draining and len(self.runs) < self.settings.slots

    def nudge(self) -> None:
        self._wake.set()

    async def poll_forever(self) -> None:
        while True:
            try:
                await self.claim_queued()
                await self.claim_conversions()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tuning worker poll failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    async def claim_queued(self) -> None:
        while self.has_capacity():
            candidate = await self.platform.mongo[JOBS].find_one(
                {"status": {"$in": [s.value for s in CLAIMABLE]}}, {"_id": 1}, sort=[("created_at", 1)])
            if candidate is None or not await self.try_claim(candidate["_id"]):
                return

    async def try_claim(self, job_id: str) -> bool:
        if not self.has_capacity() or job_id in self.runs:
            return False
        run_id, at = new_id(), now()
        lease = at + timedelta(seconds=self.settings.lease_seconds)
        job = await self.platform.mongo[JOBS].find_one_and_update(
            {"_id": job_id, "status": {"$in": [s.value for s in CLAIMABLE]}},
            {"$set": {"status": JobStatus.running.value, "status_message": f"running on worker {self.worker_id}",
                      "updated_at": at, "run": {"run_id": run_id, "worker_id": self.worker_id, "started_at": at,
                                                "lease_until": lease, "active": True}},
             "$push": {"history": {"status": JobStatus.running.value, "at": at,
                                   "message": f"running on worker {self.worker_id}"}}},
            return_document=ReturnDocument.AFTER)
        if job is None:
            return False  # another worker was faster, or the job was stopped/deleted meanwhile
        await self.platform.mongo[JOBS].update_one({"_id": job_id, "started_at": None}, {"$set": {"started_at": at}})

        async def started(uow) -> None:
            announce_task_record(uow, job)
            uow.emit(TuneStarted(job_id=job_id, run_id=run_id, worker_id=self.worker_id,
                                 resume_from_iteration=job["checkpoints"][-1]["iteration"] if job["checkpoints"] else 0,
                                 total_iterations=job["hyperparameters"]["iterations"]),
                     tenant_id=job["tenant_id"], subject=subject(job_id))
        await transact(self.platform, started)
        task = asyncio.create_task(self._run(job, run_id), name=f"tuning-{job_id}")
        self.runs[job_id] = task
        task.add_done_callback(lambda _: (self.runs.pop(job_id, None), self.nudge()))
        return True

    # -- one run ------------------------------------------------------------------------------------

    async def _run(self, job: dict, run_id: str) -> None:
        work_root = Path(self.platform.settings.work_dir) if self.platform.settings.work_dir else None
        with tempfile.TemporaryDirectory(prefix=f"maas-tune-{job['_id'][:8]}-", dir=work_root) as tmp:
            run = Run(job=job, run_id=run_id, work=Path(tmp), loop=asyncio.get_running_loop())
            self.active[job["_id"]] = run
            run.say(f"job '{job['name']}' ({job['tune_type']}) claimed by worker {self.worker_id}; "
                    f"restarts so far: {job['restart_count']}")
            heartbeat = asyncio.create_task(self._heartbeat(run))
            flusher = asyncio.create_task(self._flush_forever(run))
            try:
                outcome = await self._train(run)
            except Exception as exc:
                log.exception("tuning job %s failed", job["_id"])
                outcome = Outcome("failed", message=_describe(exc), environmental=_environmental(exc))
            finally:
                heartbeat.cancel()
                flusher.cancel()
                await asyncio.gather(heartbeat, flusher, return_exceptions=True)
            if outcome.kind == "failed":
                run.say(f"ERROR {outcome.message}")
            try:
                await self._finish(run, outcome)
            except Exception:
                log.exception("recording the end of tuning job %s failed", job["_id"])
            await self._flush(run)
            await self._keep_logs(run)
            self.active.pop(job["_id"], None)

    async def shutdown(self, *, grace_seconds: float) -> None:
        """Stop claiming, ask every run to stop at its next iteration (each saves a checkpoint) and
        hand the jobs back to the queue, so another worker resumes them without counting a restart."""
        self.draining = True
        for run in list(self.active.values()):
            run.request_stop("shutdown")
        if self.runs:
            await asyncio.wait(list(self.runs.values()), timeout=grace_seconds)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _heartbeat(self, run: Run) -> None:
        jobs = self.platform.mongo[JOBS]
        auto_stop = run.job.get("auto_stop") or {}
        limit = auto_stop.get("hours") * 3600 if auto_stop.get("enabled") else None
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                renewed = await jobs.update_one(
                    {"_id": run.job_id, "run.run_id": run.run_id, "status": JobStatus.running.value},
                    {"$set": {"run.lease_until": now() + timedelta(seconds=self.settings.lease_seconds)}})
            except Exception:  # a database hiccup: the lease is long enough to try again
                log.warning("lease renewal of %s failed", run.job_id, exc_info=True)
                continue
            if renewed.matched_count == 0:
                run.request_stop("lost")
                return
            ran = run.job.get("run_seconds", 0.0) + (time.monotonic() - run.started)
            if limit is not None and ran >= limit:
                run.say(f"auto-stop: the job has run {ran / 3600:.2f} h, its limit is {auto_stop['hours']} h")
                run.request_stop("auto_stop")
                return

    async def _download_inputs(self, run: Run) -> tuple[Path, list[dict], Path | None]:
        store, job = self.platform.store, run.job
        base = run.work / "base"
        run.say(f"downloading the model weights from {job['source']['weights_uri']}")
        await store.download_prefix(ObjectPath.parse(job["source"]["weights_uri"]), base)
        raw = await store.get_bytes(ObjectPath.parse(job["dataset"]["examples_uri"]))
        examples = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        resume = None
        if job["checkpoints"]:
            latest = job["checkpoints"][-1]
            resume = run.work / "resume" / f"checkpoint-{latest['iteration']}"
            run.say(f"resuming from the checkpoint at iteration {latest['iteration']} ({latest['uri']})")
            await store.download_prefix(ObjectPath.parse(latest["uri"]), resume)
            await store.download_prefix(ObjectPath.parse(latest["state_uri"]), resume)
        return base, examples, resume

    async def _train(self, run: Run) -> Outcome:
        from services.mlkit.training import TrainConfig, log_line, merge_lora

        job, hp = run.job, run.job["hyperparameters"]
        base, examples, resume = await self._download_inputs(run)
        config = TrainConfig(tune_type=job["tune_type"], learning_rate=hp["learning_rate"], epochs=hp["epochs"],
                             global_batch_size=hp["global_batch_size"], max_seq_len=hp["seq_len"],
                             checkpoint_count=hp["checkpoint_count"], seed=hp.get("seed", 0),
                             world_size=job["resources"]["node_count"], num_threads=self.settings.num_threads)
        run.say(f"training {len(examples)} samples: {hp['iterations']} iterations, global batch size "
                f"{hp['global_batch_size']}, learning rate {hp['learning_rate']}, world size {config.world_size}")

        def on_log(record: dict) -> None:
            line = log_line(record)
            with run.lock:
                run.lines.append(line)
                run.progress = record
                run.progress_dirty = True

        def on_checkpoint(iteration: int, folder: Path) -> None:
            future = asyncio.run_coroutine_threadsafe(self._save_checkpoint(run, iteration, folder), run.loop)
            future.result()

        payload = {"model_dir": base, "examples": examples, "config": config, "output_dir": run.work / "out",
                   "resume_from": resume}
        # The training runs in a child process (see trainproc); this executor thread only relays.
        result = await run.loop.run_in_executor(self._executor, lambda: run_training(
            payload=payload, work=run.work / "proc", on_log=on_log, on_checkpoint=on_checkpoint,
            should_stop=run.stop.is_set))
        if result.stopped:
            return Outcome("stopped", iterations=result.iterations_done, final_loss=result.final_loss)
        final = result.final_dir
        if job["tune_type"] == "lora":
            run.say("merging the LoRA adapter into the base weights")
            final = await run.loop.run_in_executor(self._executor, lambda: merge_lora(
                base_dir=base, adapter_dir=result.final_dir, out_dir=run.work / "merged"))
        target = ObjectPath.parse(job["output"]["path"] + "model/")
        run.say(f"uploading the tuned model to {target.uri}")
        await self.platform.store.ensure_bucket(target.bucket)
        await self.platform.store.remove_prefix(target)  # a resumed run may find an earlier partial upload
        await self.platform.store.upload_folder(final, target)
        return Outcome("completed", weights_uri=target.uri, iterations=result.iterations_done,
                       final_loss=result.final_loss)

    async def _save_checkpoint(self, run: Run, iteration: int, folder: Path) -> None:
        job = run.job
        fmt = "lora" if job["tune_type"] == "lora" else "huggingface"
        root = ObjectPath.parse(job["output"]["path"] + f"checkpoints/iter_{iteration:07d}/")
        weights = ObjectPath(root.bucket, root.key + "model/")
        # The resume state (optimizer, scheduler, RNG, data position) is kept in the platform's own
        # bucket, never in the user's output path: a resume must not read what a tenant can write.
        # Keeping it apart also means a checkpoint turned into a model carries no optimizer moments.
        managed = managed_root(run.tenant_id, run.job_id)
        state = ObjectPath(managed.bucket, managed.key + f"resume-state/iter_{iteration:07d}/")
        store = self.platform.store
        await store.ensure_bucket(root.bucket)
        await store.remove_prefix(root)
        await store.remove_prefix(state)
        for file in sorted(p for p in folder.iterdir() if p.is_file()):
            dest = state if file.name.startswith(TRAINING_ONLY_PREFIXES) else weights
            await store.put_file(ObjectPath(dest.bucket, dest.key + file.name), file)
        entry = {"iteration": iteration, "format": fmt, "uri": weights.uri, "state_uri": state.uri,
                 "created_at": now()}

        async def record(uow) -> bool:
            jobs = uow.collection(JOBS)
            fence = {"_id": run.job_id, "run.run_id": run.run_id}
            await jobs.update_one(fence, {"$pull": {"checkpoints": {"iteration": iteration}}}, session=uow.session)
            updated = await jobs.update_one(fence, {"$push": {"checkpoints": entry},
                                                    "$set": {"unconditional_streak": 0, "updated_at": now()}},
                                            session=uow.session)
            if updated.matched_count == 1:
                uow.emit(CheckpointSaved(job_id=run.job_id, iteration=iteration, uri=weights.uri, format=fmt),
                         tenant_id=run.tenant_id, subject=subject(run.job_id))
            return updated.matched_count == 1
        if not await transact(self.platform, record):
            run.request_stop("lost")
            return
        run.say(f"saved checkpoint at iteration {iteration} to {root.uri}")
        for older in folder.parent.glob("checkpoint-*"):  # uploaded: the local copies can go
            if older != folder and older.is_dir():
                shutil.rmtree(older, ignore_errors=True)
        await self._flush(run)
        await self._keep_logs(run)

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
            progress, dirty = run.progress, run.progress_dirty
            run.progress_dirty = False
        if lines:
            await append_lines(self.platform, job_id=run.job_id, tenant_id=run.tenant_id, lines=lines)
        if not dirty or progress is None:
            return
        view = {"iteration": progress["iteration"], "total_iterations": progress["total_iterations"],
                "lm_loss": progress["lm_loss"], "tokens_per_sec_per_card": progress["tokens_per_sec_per_card"],
                "elapsed_time_per_iteration_s": progress["elapsed_time_per_iteration_s"],
                "learning_rate": progress["learning_rate"], "world_size": progress.get("world_size", 1),
                "rank_tokens": progress.get("rank_tokens"), "updated_at": now()}
        await self.platform.mongo[JOBS].update_one({"_id": run.job_id, "run.run_id": run.run_id},
                                                   {"$set": {"progress": view, "hang_reported": False}})
        last = progress["iteration"] == progress["total_iterations"]
        if last or time.monotonic() - run.last_progress_event >= self.settings.progress_event_seconds:
            run.last_progress_event = time.monotonic()
            async with self.platform.uow() as uow:  # only an outbox insert: nothing to conflict with
                uow.emit(TuneProgress(job_id=run.job_id, iteration=view["iteration"],
                                      total_iterations=view["total_iterations"], lm_loss=view["lm_loss"],
                                      tokens_per_sec_per_card=view["tokens_per_sec_per_card"]),
                         tenant_id=run.tenant_id, subject=subject(run.job_id))

    async def _keep_logs(self, run: Run) -> None:
        if (run.job.get("permanent_log") or {}).get("enabled"):
            try:
                await upload_permanent_log(self.platform, job=run.job)
            except Exception:
                log.warning("copying the logs of %s to %s failed", run.job_id, run.job["permanent_log"]["path"],
                            exc_info=True)

    # -- the end of a run -----------------------------------------------------------------------

    async def _finish(self, run: Run, outcome: Outcome) -> None:
        message = await transact(self.platform, lambda uow: self._record_end(uow, run, outcome))
        if message:
            run.say(message)

    async def _record_end(self, uow, run: Run, outcome: Outcome) -> str | None:
        """The run's end in one transaction; a line for the job log, or None."""
        job, fence = run.job, {"run.run_id": run.run_id}
        closing = {"run.active": False, "finished_at": now()}
        jobs = uow.collection(JOBS)
        current = await jobs.find_one({"_id": run.job_id}, session=uow.session)
        if current is None or (current.get("run") or {}).get("run_id") != run.run_id:
            return None  # deleted, or already re-queued to another worker: nothing of ours to record
        await jobs.update_one({"_id": run.job_id, **fence},
                              {"$inc": {"run_seconds": time.monotonic() - run.started},
                               "$set": {"run.active": False}}, session=uow.session)
        tenant, subj = run.tenant_id, subject(run.job_id)
        if outcome.kind == "completed":
            doc = await transition(uow, run.job_id, JobStatus.completed, where=fence,
                                   message=f"completed {outcome.iterations} iterations",
                                   set_={**closing, "output.weights_uri": outcome.weights_uri})
            if doc is None:
                return None
            out = job["output"]
            uow.emit(TuneCompleted(job_id=run.job_id, iterations=outcome.iterations, final_loss=outcome.final_loss,
                                   weights_uri=outcome.weights_uri, output_model_name=out["model_name"]),
                     tenant_id=tenant, subject=subj)
            uow.emit(ModelArtifactProduced(task_id=run.job_id, task_kind="tuning", weights_uri=outcome.weights_uri,
                                           target="new_model", model_name=out["model_name"],
                                           template_id=job["template_id"], description=out["description"],
                                           validate_weights=True), tenant_id=tenant, subject=subj)
            return f"completed; the tuned model '{out['model_name']}' is being registered"
        if outcome.kind == "stopped":
            iteration = (current.get("progress") or {}).get("iteration", 0)
            if run.stop_reason == "shutdown":
                message = f"released by worker {self.worker_id}, which is shutting down; it resumes on another worker"
                doc = await transition(uow, run.job_id, JobStatus.waiting, where=fence, message=message,
                                       set_={"run.active": False})
                if doc is not None:
                    uow.emit(TuneRequested(job_id=run.job_id, reason="restarted",
                                           restart_count=current.get("restart_count", 0)),
                             tenant_id=tenant, subject=subj)
                return message
            if run.stop_reason == "auto_stop":
                limit = job["auto_stop"]["hours"]
                doc = await transition(uow, run.job_id, JobStatus.stopped, where=fence, set_=closing,
                                       message=f"auto-stopped after its running time limit of {limit} h")
                if doc is not None:
                    uow.emit(TuneStopped(job_id=run.job_id, reason="auto_stop", iteration=iteration),
                             tenant_id=tenant, subject=subj)
            return f"stopped at iteration {iteration}"
        return await self._fail_or_restart(uow, run, current, outcome)

    async def _fail_or_restart(self, uow, run: Run, current: dict, outcome: Outcome) -> str | None:
        policy = current.get("auto_restart") or {}
        restarts, streak = current.get("restart_count", 0), current.get("unconditional_streak", 0)
        unconditional = not outcome.environmental
        may_restart = may_auto_restart(policy, restarts=restarts, streak=streak, environmental=outcome.environmental)
        fence, tenant, subj = {"run.run_id": run.run_id}, run.tenant_id, subject(run.job_id)
        if may_restart:
            doc = await transition(uow, run.job_id, JobStatus.waiting, where=fence,
                                   message=f"restarting after a failure ({restarts + 1}/{policy['max_restarts']}): "
                                           f"{outcome.message}",
                                   set_={"run.active": False, "last_error": outcome.message},
                                   inc={"restart_count": 1, **({"unconditional_streak": 1} if unconditional else {})})
            if doc is None:
                return None
            uow.emit(TuneFailed(job_id=run.job_id, message=outcome.message, restart_count=restarts + 1,
                                will_restart=True), tenant_id=tenant, subject=subj)
            uow.emit(TuneRequested(job_id=run.job_id, reason="restarted", restart_count=restarts + 1),
                     tenant_id=tenant, subject=subj)
            return f"auto-restart {restarts + 1}/{policy['max_restarts']} from the latest checkpoint"
        doc = await transition(uow, run.job_id, JobStatus.failed, where=fence, message=outcome.message,
                               set_={"run.active": False, "finished_at": now(), "last_error": outcome.message})
        if doc is None:
            return None
        uow.emit(TuneFailed(job_id=run.job_id, message=outcome.message, restart_count=restarts),
                 tenant_id=tenant, subject=subj)
        return None

    # -- checkpoint conversion (LoRA adapter -> merged HF weights) -----------------------------

    async def claim_conversions(self) -> None:
        pending = [d["_id"] async for d in self.platform.mongo[CONVERSIONS].find(
            {"status": "running", "kind": "weight_conversion",
             "$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now()}}]}, {"_id": 1})]
        for conversion_id in pending:
            await self.try_convert(conversion_id)

    async def try_convert(self, conversion_id: str) -> None:
        if self.draining or conversion_id in self.conversions:
            return
        doc = await self.platform.mongo[CONVERSIONS].find_one_and_update(
            {"_id": conversion_id, "status": "running",
             "$or": [{"claimed_until": None}, {"claimed_until": {"$exists": False}}, {"claimed_until": {"$lt": now()}}]},
            {"$set": {"claimed_until": now() + timedelta(minutes=30), "worker_id": self.worker_id}},
            return_document=ReturnDocument.AFTER)
        if doc is None:
            return
        task = asyncio.create_task(self._convert(doc), name=f"tuning-convert-{conversion_id}")
        self.conversions[conversion_id] = task
        task.add_done_callback(lambda _: self.conversions.pop(conversion_id, None))

    async def _convert(self, conversion: dict) -> None:
        from services.mlkit.training import merge_lora
        from services.tuning.service import artifact_for

        platform, cid = self.platform, conversion["_id"]
        job = await platform.mongo[JOBS].find_one({"_id": conversion["job_id"]})
        checkpoint = next((c for c in (job or {}).get("checkpoints", []) if c["iteration"] == conversion["iteration"]),
                          None)
        work_root = Path(platform.settings.work_dir) if platform.settings.work_dir else None
        try:
            if job is None or checkpoint is None:
                raise ValueError("the job or its checkpoint no longer exists")
            with tempfile.TemporaryDirectory(prefix=f"maas-convert-{cid[:8]}-", dir=work_root) as tmp:
                base, adapter, merged = Path(tmp) / "base", Path(tmp) / "adapter", Path(tmp) / "merged"
                await platform.store.download_prefix(ObjectPath.parse(job["source"]["weights_uri"]), base)
                await platform.store.download_prefix(ObjectPath.parse(checkpoint["uri"]), adapter)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, lambda: merge_lora(base_dir=base, adapter_dir=adapter,
                                                                              out_dir=merged))
                target = ObjectPath.parse(conversion["weights_uri"])
                await platform.store.ensure_bucket(target.bucket)
                await platform.store.upload_folder(merged, target)
        except Exception as exc:
            log.exception("converting checkpoint %s failed", cid)
            await platform.mongo[CONVERSIONS].update_one(
                {"_id": cid}, {"$set": {"status": "failed", "message": _describe(exc), "updated_at": now()}})
            return

        async def done(uow) -> None:
            updated = await uow.collection(CONVERSIONS).update_one(
                {"_id": cid, "status": "running"}, {"$set": {"status": "completed", "updated_at": now()}},
                session=uow.session)
            if updated.modified_count == 1:
                uow.emit(artifact_for(job, conversion), tenant_id=conversion["tenant_id"],
                         subject=subject(conversion["job_id"]))
        await transact(platform, done)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValueError):
        return str(exc)  # the trainer's input errors name the field already
    return f"{type(exc).__name__}: {exc}"[:2000]


def _environmental(exc: BaseException) -> bool:
    """Failures of the surroundings (object storage, database, network), not of the job itself.

    Auto-restart retries these; anything else (bad weights, a training error) only with
    unconditional restart on, at most 3 times in a row.
    """
    from minio.error import S3Error
    from pymongo.errors import PyMongoError
    from urllib3.exceptions import HTTPError as TransportError

    return isinstance(exc, (S3Error, PyMongoError, TransportError, ConnectionError, TimeoutError))


# ---------------------------------------------------------------------------------------------
# One worker per process, wired to the consumer group and the background poll
# ---------------------------------------------------------------------------------------------

_WORKERS: dict[int, TuningWorker] = {}


def worker_for(platform: Platform) -> TuningWorker:
    worker = _WORKERS.get(id(platform))
    if worker is None:
        worker = _WORKERS[id(platform)] = TuningWorker(platform)
    return worker


def local_workers() -> list[TuningWorker]:
    """The workers of this process (e.g. to drain them before a shutdown)."""
    return list(_WORKERS.values())


async def run_worker(platform: Platform) -> None:
    worker = worker_for(platform)
    try:
        await worker.poll_forever()
    finally:  # the process is shutting down: hand running jobs back rather than let their leases expire
        try:
            await worker.shutdown(grace_seconds=worker.settings.shutdown_grace_seconds)
        finally:
            _WORKERS.pop(id(platform), None)


async def on_tune_requested(platform: Platform, envelope: Envelope, event: TuneRequested) -> None:
    # Returns at once: the training runs as a task, so the consumer keeps polling Kafka.
    await worker_for(platform).try_claim(event.job_id)


async def on_conversion_requested(platform: Platform, envelope: Envelope, event: CheckpointConversionRequested) -> None:
    await worker_for(platform).try_convert(event.conversion_id)


HANDLERS = {TuneRequested: on_tune_requested, CheckpointConversionRequested: on_conversion_requested}
