"""The tuning worker: tuning as a kind of job of the engine (``services.lib.jobs``), plus checkpoint
conversions (a LoRA checkpoint merged into a model of its own).

The engine claims a job (creating/waiting -> running with a fresh ``run_id``), renews its lease,
flushes its logs and records its end; this module says what a tuning run does: download the base
weights and the examples, train in a job process (entries in ``work``) whose messages it serves —
log lines and progress go to MongoDB, checkpoints to object storage, and a stop request (user stop,
delete, auto-stop, shutdown) is answered at the next iteration — then merge, upload and register.

If a worker dies, its lease expires and the tuning service's watchdog (``watchdog``) re-queues the
job (auto-restart); the next worker resumes from the latest checkpoint. Every write of a run is
fenced by its ``run_id``: a worker that lost its job cannot overwrite the new run's state.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from pymongo import ReturnDocument

from contracts import Envelope, new_id
from contracts.events import ModelArtifactProduced
from contracts.tuning import (CheckpointConversionRequested, CheckpointSaved, TuneCompleted, TuneFailed,
                              TuneProgress, TuneRequested, TuneStarted, TuneStopped)
from services.lib.common.cluster import PUBLIC_POOL
from services.lib.common.context import Platform
from services.lib.common.objectstore import ObjectPath
from services.lib.jobs.executor import Executor, Placement, Work, WorkFailed, ignore_messages
from services.lib.jobs.executors import executor_for
from services.lib.jobs.local_process import LocalProcessExecutor
from services.lib.jobs.outages import through_outages
from services.lib.jobs.runner import JobRunner, Outcome, Run, RunnerSettings, flush_run, keep_logs
from services.lib.pools import ledger
from services.lib.pools.service import capacity
from services.lib.pools.specs import rank_resources
from services.tuning import work
from services.tuning.jobs import JOB_LOGS, now, subject, transact, transition
from services.tuning.models import CONVERSIONS, JOBS, JobStatus, managed_root
from services.tuning.settings import TuningSettings
from services.tuning.states import CLAIMABLE, may_auto_restart

log = logging.getLogger(__name__)
CONSUMER = "tuning-worker"
TRAINING_ONLY_PREFIXES = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state_")


class TuningJobs:
    """Tuning as a kind of job of the engine (services.lib.jobs.runner.JobKind)."""
    name = "tuning"
    jobs = JOBS
    logs = JOB_LOGS
    claimable = tuple(s.value for s in CLAIMABLE)

    def __init__(self, platform: Platform, settings: TuningSettings, executor: Executor | None):
        self.platform, self.settings, self.executor = platform, settings, executor

    async def claim(self, uow, *, job_id: str, run: dict) -> dict | None:
        job = await transition(uow, job_id, JobStatus.running, message=f"running on worker {run['worker_id']}",
                               set_={"run": run})
        if job is not None:
            uow.emit(TuneStarted(job_id=job_id, run_id=run["run_id"], worker_id=run["worker_id"],
                                 resume_from_iteration=job["checkpoints"][-1]["iteration"] if job["checkpoints"] else 0,
                                 total_iterations=job["hyperparameters"]["iterations"]),
                     tenant_id=job["tenant_id"], subject=subject(job_id))
        return job

    def on_heartbeat(self, run: Run) -> None:
        auto_stop = run.job.get("auto_stop") or {}
        if not auto_stop.get("enabled"):
            return
        ran = run.job.get("run_seconds", 0.0) + (time.monotonic() - run.started)
        if ran >= auto_stop["hours"] * 3600 and not run.stop.is_set():
            run.say(f"auto-stop: the job has run {ran / 3600:.2f} h, its limit is {auto_stop['hours']} h")
            run.request_stop("auto_stop")

    def failure(self, run: Run, exc: Exception) -> Outcome:
        return Outcome("failed", message=_describe(exc), environmental=_environmental(exc))

    # -- the work -----------------------------------------------------------------------------------

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

    async def execute(self, run: Run) -> Outcome:
        # Imported here, not at the top: the package imports torch, which the tuning API process
        # (it imports this module for the watchdog) never needs.
        from services.lib.mlkit.training import TrainConfig, log_line

        job, hp = run.job, run.job["hyperparameters"]
        run.say(f"job '{job['name']}' ({job['tune_type']}) claimed by worker {run.worker_id}; "
                f"restarts so far: {job['restart_count']}")
        base, examples, resume = await through_outages(run, lambda: self._download_inputs(run))
        config = TrainConfig(tune_type=job["tune_type"], learning_rate=hp["learning_rate"], epochs=hp["epochs"],
                             global_batch_size=hp["global_batch_size"], max_seq_len=hp["seq_len"],
                             checkpoint_count=hp["checkpoint_count"], seed=hp.get("seed", 0),
                             world_size=job["resources"]["node_count"], num_threads=self.settings.num_threads)
        run.say(f"training {len(examples)} samples: {hp['iterations']} iterations, global batch size "
                f"{hp['global_batch_size']}, learning rate {hp['learning_rate']}, world size {config.world_size}")

        def on_message(kind: str, data: dict):   # from the executor's relay thread
            if kind == "log":
                record = data["record"]
                run.log(log_line(record))
                run.set_progress(record)
            elif kind == "checkpoint":   # stored before the training goes on
                asyncio.run_coroutine_threadsafe(
                    self._save_checkpoint(run, data["iteration"], Path(data["folder"])), run.loop).result()
            elif kind == "stop?":
                return run.stop.is_set()
            return None

        placement = run.placement
        ranks = None
        if placement.nodes > 1 and self.platform.cluster.kind == "ray":   # one rank per node of the pool
            ranks = {"pool": placement.pool, "cpus_per_rank": placement.per_node.cpus,
                     "gpus_per_rank": placement.per_node.gpus, "memory_per_rank": placement.per_node.memory_bytes,
                     "node_ids": list(placement.node_ids), "group_name": f"maas-train-{run.job_id}"}
        result = await self.executor.run(Work(entry=work.TRAIN, workdir=run.work / "proc", placement=placement, args={
            "model_dir": base, "examples": examples, "config": dataclasses.asdict(config),
            "output_dir": run.work / "out", "resume_from": resume, "ranks": ranks}), run.relay(on_message))
        if result.get("rank_nodes"):
            run.say("ranks ran on nodes " + ", ".join(f"{rank}: {node}" for rank, node in enumerate(result["rank_nodes"])))
        if result["stopped"]:
            return Outcome("stopped", result={"iterations": result["iterations_done"]})
        final = Path(result["final_dir"])
        if job["tune_type"] == "lora":
            run.say("merging the LoRA adapter into the base weights")
            # On rank 0's node, whose share the run holds (the ranks have ended).
            one_node = dataclasses.replace(placement, resources=placement.per_node, nodes=1,
                                           node_ids=placement.node_ids[:1])
            final = Path(await self.executor.run(Work(entry=work.MERGE, workdir=run.work / "merge-proc",
                                                      placement=one_node, args={
                "base_dir": base, "adapter_dir": final, "out_dir": run.work / "merged"}), run.relay(ignore_messages)))
        target = ObjectPath.parse(job["output"]["path"] + "model/")
        run.say(f"uploading the tuned model to {target.uri}")

        async def upload() -> None:
            await self.platform.store.ensure_bucket(target.bucket)
            await self.platform.store.remove_prefix(target)  # a resumed run may find an earlier partial upload
            await self.platform.store.upload_folder(final, target)
        await through_outages(run, upload)
        return Outcome("completed", result={"weights_uri": target.uri, "iterations": result["iterations_done"],
                                            "final_loss": result["final_loss"]})

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

        async def upload() -> None:
            await store.ensure_bucket(root.bucket)
            await store.remove_prefix(root)
            await store.remove_prefix(state)
            for file in sorted(p for p in folder.iterdir() if p.is_file()):
                dest = state if file.name.startswith(TRAINING_ONLY_PREFIXES) else weights
                await store.put_file(ObjectPath(dest.bucket, dest.key + file.name), file)
        await through_outages(run, upload)
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
        await flush_run(self.platform, self, run)
        await keep_logs(self.platform, self, run)

    # -- progress -----------------------------------------------------------------------------------

    async def save_progress(self, run: Run, progress: dict) -> None:
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

    # -- the end of a run ---------------------------------------------------------------------------

    async def record_end(self, uow, run: Run, outcome: Outcome) -> str | None:
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
            weights_uri, iterations = outcome.result["weights_uri"], outcome.result["iterations"]
            doc = await transition(uow, run.job_id, JobStatus.completed, where=fence,
                                   message=f"completed {iterations} iterations",
                                   set_={**closing, "output.weights_uri": weights_uri})
            if doc is None:
                return None
            out = job["output"]
            uow.emit(TuneCompleted(job_id=run.job_id, iterations=iterations, final_loss=outcome.result["final_loss"],
                                   weights_uri=weights_uri, output_model_name=out["model_name"]),
                     tenant_id=tenant, subject=subj)
            uow.emit(ModelArtifactProduced(task_id=run.job_id, task_kind="tuning", weights_uri=weights_uri,
                                           target="new_model", model_name=out["model_name"],
                                           template_id=job["template_id"], description=out["description"],
                                           validate_weights=True), tenant_id=tenant, subject=subj)
            return f"completed; the tuned model '{out['model_name']}' is being registered"
        if outcome.kind == "stopped":
            iteration = (current.get("progress") or {}).get("iteration", 0)
            if run.stop_reason == "shutdown":
                message = f"released by worker {run.worker_id}, which is shutting down; it resumes on another worker"
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

    # -- the watchdog's part -------------------------------------------------------------------------

    async def recover(self, uow, job: dict, at) -> str | None:
        """Re-queue (auto-restart) or fail a job whose worker stopped renewing its lease; the message,
        or None if its worker came back meanwhile."""
        run = job["run"]
        # The fence: only this run, and only if its lease is still expired (no late renewal won).
        fence = {"run.run_id": run["run_id"], "run.lease_until": {"$lt": at}}
        policy = job.get("auto_restart") or {}
        restarts = job.get("restart_count", 0)
        latest = job["checkpoints"][-1]["iteration"] if job["checkpoints"] else 0
        reason = f"worker {run['worker_id']} stopped responding (no heartbeat since {run['lease_until']:%H:%M:%S})"
        tenant, subj = job["tenant_id"], subject(job["_id"])
        if policy.get("enabled") and restarts < policy.get("max_restarts", 3):
            where_from = f"the checkpoint at iteration {latest}" if latest else "the start (no checkpoint yet)"
            message = f"{reason}; auto-restart {restarts + 1}/{policy['max_restarts']} from {where_from}"
            doc = await transition(uow, job["_id"], JobStatus.waiting, where=fence, message=message,
                                   set_={"run.active": False, "last_error": reason}, inc={"restart_count": 1})
            if doc is None:
                return None
            uow.emit(TuneFailed(job_id=job["_id"], message=reason, restart_count=restarts + 1, will_restart=True),
                     tenant_id=tenant, subject=subj)
            uow.emit(TuneRequested(job_id=job["_id"], reason="restarted", restart_count=restarts + 1),
                     tenant_id=tenant, subject=subj)
            return message
        why = "auto-restart is off" if not policy.get("enabled") else f"it was restarted {restarts} times, the maximum"
        message = f"{reason}; {why}"
        doc = await transition(uow, job["_id"], JobStatus.failed, where=fence, message=message,
                               set_={"run.active": False, "finished_at": at, "last_error": reason})
        if doc is None:
            return None
        uow.emit(TuneFailed(job_id=job["_id"], message=message, restart_count=restarts), tenant_id=tenant,
                 subject=subj)
        return message


class CheckpointConversions:
    """Turns a LoRA checkpoint into merged HF weights (a weight_conversion), one claim per worker.

    A conversion is work like a job's: its claim takes its share of the tuning job's pool (one CPU
    and a rank's memory, on one node) through the ledger in the same unit of work, runs on that node
    and gives the share back with its end — metered as kind ``weight_conversion``. One that does not
    fit stays unclaimed and waits in the pool's queue (the claim loop tries it again each round).
    A worker that dies leaves its claim to run out (``claimed_until``); its share is then freed by the
    sweep (``tidy``) or taken over by the worker that claims the conversion again."""

    kind = "weight_conversion"    # the allocation's and the usage record's kind, as the task is named
    # Renewed while it runs: a dead worker's conversion (and its share) is free again this soon.
    claim_for = timedelta(minutes=5)
    renew_seconds = 60.0

    def __init__(self, platform: Platform, executor: Executor, *, worker_id: str):
        self.platform, self.executor, self.worker_id = platform, executor, worker_id
        self.conversions: dict[str, asyncio.Task] = {}
        self.draining = False

    async def claim_conversions(self) -> None:
        """One round of the worker's poll loop: free what dead claims hold, then claim what waits,
        first come first served per pool (one that does not fit holds back the later ones of its pool)."""
        await self.tidy()
        blocked: dict[str, str] = {}
        waiting: dict[str, list[dict]] = {}
        cursor = self.platform.mongo[CONVERSIONS].find(
            {"status": "running", "kind": "weight_conversion", **_unclaimed()},
            {"_id": 1, "tenant_id": 1, "job_id": 1}, sort=[("created_at", 1)])
        for pending in [d async for d in cursor]:
            pool = await self._pool_of(pending["job_id"])
            if pool not in blocked:
                try:
                    await self.try_convert(pending["_id"], queued=True)
                    continue
                except ledger.NoRoom as no_room:
                    blocked[pool] = no_room.reason
            waiting.setdefault(pool, []).append({**pending, "name": _task_name(pending["_id"])})
        for pool, docs in waiting.items():
            reason = blocked.get(pool, "waiting for a worker")
            await ledger.list_waiting(self.platform.mongo, pool=pool, kind=self.kind, collection=CONVERSIONS,
                                      waiting=docs, reason=reason)
            # The conversion itself says what it waits for too (the job's conversion list shows it).
            for position, doc in enumerate(docs, start=1):
                await self.platform.mongo[CONVERSIONS].update_one(
                    {"_id": doc["_id"], "status": "running", **_unclaimed()},
                    {"$set": {"message": reason if position == 1 else
                              f"behind {position - 1} earlier request(s) in the pool's queue"}})

    async def tidy(self) -> None:
        """Free what dead claims still hold, and drop queue entries of conversions that no longer wait."""
        mongo = self.platform.mongo
        for allocation in await ledger.stale_allocations(mongo, collection=CONVERSIONS, lease_seconds=0):
            await transact(self.platform, lambda uow, a=allocation: ledger.release(uow, key=a["_id"], run_id=a["run_id"]))
        async for entry in mongo[ledger.QUEUE].find({"collection": CONVERSIONS}, {"job_id": 1}):
            # Still waiting: running and unclaimed (another worker may have claimed it meanwhile).
            if not await mongo[CONVERSIONS].count_documents({"_id": entry["job_id"], "status": "running",
                                                            **_unclaimed()}):
                await mongo[ledger.QUEUE].delete_one({"_id": entry["_id"]})

    async def _pool_of(self, job_id: str) -> str:
        """The tuning job's pool (the public pool for a job stored before pools existed)."""
        job = await self.platform.mongo[JOBS].find_one({"_id": job_id}, {"placement": 1})
        return ((job or {}).get("placement") or {}).get("pool") or PUBLIC_POOL

    async def try_convert(self, conversion_id: str, *, queued: bool = False) -> None:
        """Claim and start the conversion if it is claimable and its pool has room. Raises
        ledger.NoRoom when it does not fit if ``queued`` (the poll loop lists it); a request event's
        handler leaves it to that loop."""
        if self.draining or conversion_id in self.conversions:
            return
        try:
            claimed = await self._claim(conversion_id)
        except ledger.NoRoom:
            if queued:
                raise
            return
        if claimed is None:
            return
        doc, placement = claimed
        task = asyncio.create_task(self._convert(doc, placement), name=f"tuning-convert-{conversion_id}")
        self.conversions[conversion_id] = task
        task.add_done_callback(lambda _: self.conversions.pop(conversion_id, None))

    async def _claim(self, conversion_id: str) -> tuple[dict, Placement] | None:
        """The claim and the pool's share, in one unit of work; None if another worker has it."""
        platform = self.platform
        pool = await self._pool_of((await platform.mongo[CONVERSIONS].find_one(
            {"_id": conversion_id}, {"job_id": 1}) or {}).get("job_id"))
        request = rank_resources(cards=0, accelerated=False)   # one CPU and a rank's memory
        total, nodes = await capacity(platform, pool)
        claim_id, given = new_id(), []

        async def claim_and_admit(uow) -> dict | None:
            conversions = uow.collection(CONVERSIONS)
            before = await conversions.find_one_and_update(
                {"_id": conversion_id, "status": "running", **_unclaimed()},
                {"$set": {"claimed_until": now() + self.claim_for, "worker_id": self.worker_id,
                          "claim_id": claim_id, "message": None}},
                return_document=ReturnDocument.BEFORE, session=uow.session)
            if before is None:
                return None
            holder = ledger.Holder(kind=self.kind, collection=CONVERSIONS, job_id=conversion_id, run_id=claim_id,
                                   tenant_id=before["tenant_id"])
            try:
                given[:] = await ledger.admit(uow, holder=holder, pool=pool, request=request, capacity=total,
                                              nodes=nodes)
            except ledger.NoRoom:
                # The transaction aborts; undo the claim here too, so that it holds on any store.
                await conversions.update_one(
                    {"_id": conversion_id, "claim_id": claim_id},
                    {"$set": {k: before.get(k) for k in ("claimed_until", "worker_id", "claim_id", "message")}},
                    session=uow.session)
                raise
            await uow.collection(ledger.QUEUE).delete_one({"_id": holder.key}, session=uow.session)
            return {**before, "claim_id": claim_id, "worker_id": self.worker_id}

        doc = await transact(platform, claim_and_admit)
        if doc is None:
            return None
        placement = Placement(pool=pool, resources=request,
                              node_ids=tuple(given) if platform.cluster.kind != "local" else ())
        return doc, placement

    async def _release(self, uow, conversion: dict) -> None:
        # Fenced by the claim: a conversion claimed again meanwhile keeps its share for that claim.
        await ledger.release(uow, key=f"{CONVERSIONS}:{conversion['_id']}", run_id=conversion["claim_id"])

    async def _convert(self, conversion: dict, placement: Placement) -> None:
        from services.tuning.service import artifact_for

        platform, cid = self.platform, conversion["_id"]
        job = await platform.mongo[JOBS].find_one({"_id": conversion["job_id"]})
        checkpoint = next((c for c in (job or {}).get("checkpoints", []) if c["iteration"] == conversion["iteration"]),
                          None)
        work_root = Path(platform.settings.work_dir) if platform.settings.work_dir else None
        renewing = asyncio.create_task(self._renew(conversion))
        try:
            await self._run(conversion, job, checkpoint, placement, work_root)
        except Exception as exc:
            log.exception("converting checkpoint %s failed", cid)
            message = _describe(exc)

            async def failed(uow) -> None:
                await uow.collection(CONVERSIONS).update_one(
                    {"_id": cid}, {"$set": {"status": "failed", "message": message, "updated_at": now()}},
                    session=uow.session)
                await self._release(uow, conversion)
            await transact(platform, failed)
            return
        finally:
            renewing.cancel()

        async def done(uow) -> None:
            updated = await uow.collection(CONVERSIONS).update_one(
                {"_id": cid, "status": "running"}, {"$set": {"status": "completed", "updated_at": now()}},
                session=uow.session)
            if updated.modified_count == 1:
                uow.emit(artifact_for(job, conversion), tenant_id=conversion["tenant_id"],
                         subject=subject(conversion["job_id"]))
            await self._release(uow, conversion)
        await transact(platform, done)

    async def _renew(self, conversion: dict) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                await self.platform.mongo[CONVERSIONS].update_one(
                    {"_id": conversion["_id"], "claim_id": conversion["claim_id"], "status": "running"},
                    {"$set": {"claimed_until": now() + self.claim_for}})
            except Exception:   # a database hiccup: the next renewal tries again, well within the claim
                log.warning("renewing the claim of conversion %s failed", conversion["_id"], exc_info=True)

    async def _run(self, conversion: dict, job: dict | None, checkpoint: dict | None, placement: Placement,
                   work_root: Path | None) -> None:
        platform, cid = self.platform, conversion["_id"]
        if job is None or checkpoint is None:
            raise ValueError("the job or its checkpoint no longer exists")
        with tempfile.TemporaryDirectory(prefix=f"maas-convert-{cid[:8]}-", dir=work_root) as tmp:
            base, adapter, merged = Path(tmp) / "base", Path(tmp) / "adapter", Path(tmp) / "merged"
            await platform.store.download_prefix(ObjectPath.parse(job["source"]["weights_uri"]), base)
            await platform.store.download_prefix(ObjectPath.parse(checkpoint["uri"]), adapter)
            await self.executor.run(Work(entry=work.MERGE, workdir=Path(tmp) / "proc", placement=placement, args={
                "base_dir": base, "adapter_dir": adapter, "out_dir": merged}), ignore_messages)
            target = ObjectPath.parse(conversion["weights_uri"])
            await platform.store.ensure_bucket(target.bucket)
            await platform.store.upload_folder(merged, target)


def _unclaimed() -> dict:
    """The filter of a conversion no worker holds: never claimed, or its claim ran out."""
    return {"$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now()}}]}


def _task_name(conversion_id: str) -> str:
    return f"weight-conversion-{conversion_id[:8]}"   # as the model version's task record names it


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValueError):
        return str(exc)  # the trainer's input errors name the field already
    if isinstance(exc, WorkFailed):   # raised in the job process: its type and message, as ours would read
        return (exc.message if exc.input_error else str(exc))[:2000]
    return f"{type(exc).__name__}: {exc}"[:2000]


def _environmental(exc: BaseException) -> bool:
    """Failures of the surroundings (object storage, database, network), not of the job itself.

    Auto-restart retries these; anything else (bad weights, a training error) only with
    unconditional restart on, at most 3 times in a row.
    """
    from minio.error import S3Error
    from pymongo.errors import PyMongoError
    from urllib3.exceptions import HTTPError as TransportError

    if isinstance(exc, WorkFailed):   # the job's (or a rank's) node was lost: the cluster failed, not the job
        return exc.kind in ("NodeLost", "RankNodeLost")
    return isinstance(exc, (S3Error, PyMongoError, TransportError, ConnectionError, TimeoutError))


# ---------------------------------------------------------------------------------------------
# One worker per process, wired to the consumer group and the background poll
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TuningWorker:
    runner: JobRunner
    conversions: CheckpointConversions


def build_worker(platform: Platform, settings: TuningSettings | None = None) -> TuningWorker:
    """The tuning worker's component: one per process, built by the composition root."""
    settings = settings or TuningSettings()
    # Trainings and adapter merges run in job processes, never in this process's threads.
    executor = executor_for(platform, max_concurrent=settings.slots + 2,
                            local=lambda: LocalProcessExecutor(max_concurrent=settings.slots + 2))
    runner = JobRunner(platform, TuningJobs(platform, settings, executor), RunnerSettings(
        slots=settings.slots, lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds, log_flush_seconds=settings.log_flush_seconds))
    return TuningWorker(runner=runner, conversions=CheckpointConversions(platform, executor,
                                                                         worker_id=runner.worker_id))


async def run_worker(worker: TuningWorker) -> None:
    # On shutdown, running jobs are handed back (a checkpoint first) rather than left to their leases.
    try:
        await worker.runner.serve(worker.conversions.claim_conversions,
                                  grace_seconds=worker.runner.kind.settings.shutdown_grace_seconds)
    finally:
        worker.conversions.draining = True


async def on_tune_requested(worker: TuningWorker, envelope: Envelope, event: TuneRequested) -> None:
    # Returns at once: the training runs as a task, so the consumer keeps polling Kafka.
    await worker.runner.try_claim(event.job_id)


async def on_conversion_requested(worker: TuningWorker, envelope: Envelope,
                                  event: CheckpointConversionRequested) -> None:
    await worker.conversions.try_convert(event.conversion_id)


HANDLERS = {TuneRequested: on_tune_requested, CheckpointConversionRequested: on_conversion_requested}
