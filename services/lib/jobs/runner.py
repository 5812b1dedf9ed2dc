"""The worker side of the job engine: what every kind of long job does the same way.

A ``JobRunner`` claims queued jobs of one kind (an atomic transition through the kind's state table,
in the same unit of work as the event that announces it), runs each on an executor, renews the run's
lease, flushes its log lines and progress, and records its end. Every write of a run is fenced by
its ``run_id``: a runner that lost its job (stopped, deleted, re-queued) cannot overwrite the next
run's state. A ``JobKind`` supplies only what differs: its collection and states, what it runs, how
it shows progress and what its end means (events, outputs, restarts).

Scale-out: every worker process is one more member of the kind's consumer group; a request event is
only a wake-up call (the job document is the truth) and an idle runner also polls.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from contracts import new_id
from services.lib.common.cluster import PUBLIC_POOL, Resources
from services.lib.common.context import Platform, transact
from services.lib.common.jobs import JobLogs, now
from services.lib.jobs.executor import JobCancelled, Listener, Placement
from services.lib.pools import ledger
from services.lib.pools.service import capacity

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One claim of a job by a runner. Thread-safe where the executor's relay thread touches it."""
    job: dict
    run_id: str
    worker_id: str
    work: Path
    loop: asyncio.AbstractEventLoop
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None     # the kind's words: lost | cancelled | auto_stop | shutdown ...
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: dict | None = None
    progress_dirty: bool = False
    last_progress_event: float = 0.0
    started: float = field(default_factory=time.monotonic)
    placement: Placement = field(default_factory=Placement)   # the pool and resources it was admitted with
    node: dict | None = None           # where the executor placed the work ("placed" message)

    @property
    def job_id(self) -> str:
        return self.job["_id"]

    @property
    def tenant_id(self) -> str:
        return self.job["tenant_id"]

    def say(self, message: str) -> None:
        """An informational log line."""
        self.log(f"[maas] {message}")

    def log(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def set_progress(self, progress: dict) -> None:
        with self.lock:
            self.progress, self.progress_dirty = progress, True

    def relay(self, listener: Listener) -> Listener:
        """``listener`` plus what the engine itself reads from any work: where it was placed."""
        def relayed(kind: str, data: dict):
            if kind == "placed":
                self.node = data
                self.say(f"running on {data.get('executor', 'a')} node {data['node_id']} ({data.get('address', '')}) "
                         f"in pool '{self.placement.pool}'")
                return None
            return listener(kind, data)
        return relayed

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()


T = TypeVar("T")


async def unless_stopped(run: Run, work: Awaitable[T], *, poll_seconds: float = 0.5) -> T:
    """Await ``work`` (an executor's run), but if ``run`` is asked to stop first, cancel it — the
    executor then ends the job process — and raise JobCancelled. For work with nothing to save when
    it stops (no checkpoints): the stop takes effect within ``poll_seconds``, not at the work's next
    question. Cancelling the caller cancels the work too."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_seconds)
            if done:
                return task.result()
            if run.stop.is_set():
                raise JobCancelled(f"the run was stopped ({run.stop_reason})")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@dataclass
class Outcome:
    kind: str                        # completed | stopped | failed | cancelled
    message: str | None = None
    environmental: bool = False      # storage / network / a lost process: restart rules may retry it
    result: dict[str, Any] = field(default_factory=dict)   # the kind's own: weights_uri, metrics, ...


@dataclass(frozen=True)
class RunnerSettings:
    slots: int = 1
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 2.0
    poll_seconds: float = 5.0
    log_flush_seconds: float = 1.0
    # What a job that names none (one created before pools existed) takes from the public pool.
    default_resources: Resources = Resources(cpus=1.0)


class JobKind(Protocol):
    """What one kind of job supplies to the engine."""
    name: str                        # "tuning", "compression": worker ids, task names, logs
    jobs: str                        # the MongoDB collection of its jobs
    logs: JobLogs
    claimable: tuple[str, ...]       # the statuses a runner may start

    async def claim(self, uow, *, job_id: str, run: dict) -> dict | None:
        """Move the job to running with ``run`` (run_id, worker_id, lease...) through the kind's state
        table and emit its start event, in ``uow``; the job, or None when it is no longer claimable."""

    async def execute(self, run: Run) -> Outcome:
        """Do the job's work (on an executor); raise for a failure."""

    def failure(self, run: Run, exc: Exception) -> Outcome:
        """The outcome of an exception raised by ``execute``."""

    async def record_end(self, uow, run: Run, outcome: Outcome) -> str | None:
        """The run's end (status, events, outputs, restarts) in ``uow``; a line for the log, or None."""

    async def save_progress(self, run: Run, progress: dict) -> None:
        """Store what ``run.progress`` last said (called by the flusher when it changed)."""

    def on_heartbeat(self, run: Run) -> None:
        """Called after each lease renewal (e.g. to stop a job that ran past its time limit)."""


class JobRunner:
    """Runs jobs of one kind in this process, up to ``settings.slots`` at a time."""

    def __init__(self, platform: Platform, kind: JobKind, settings: RunnerSettings):
        self.platform, self.kind, self.settings = platform, kind, settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:6]}"
        self.runs: dict[str, asyncio.Task] = {}
        self.active: dict[str, Run] = {}
        self.draining = False           # a draining runner finishes what it runs and claims nothing new
        self._wake = asyncio.Event()

    # -- claiming ---------------------------------------------------------------------------------

    def has_capacity(self) -> bool:
        return not self.draining and len(self.runs) < self.settings.slots

    def nudge(self) -> None:
        self._wake.set()

    async def poll_forever(self, *also) -> None:
        """Claim queued jobs whenever woken (or every poll_seconds); ``also``: more async callables to
        run on each round (a kind's side work)."""
        while True:
            try:
                await self.tidy_pools()
                await self.claim_queued()
                for extra in also:
                    await extra()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s runner poll failed; retrying", self.kind.name)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    def placement_of(self, job: dict) -> Placement:
        stored = job.get("placement")
        if not stored:
            return Placement(pool=PUBLIC_POOL, resources=self.settings.default_resources)
        return Placement(pool=stored["pool"], resources=Resources.from_dict(stored), nodes=stored.get("nodes", 1))

    async def claim_queued(self) -> None:
        """Claim the oldest claimable jobs that fit their pools, first come first served per pool: a
        job that does not fit holds back the later jobs of its pool (no starvation of large jobs);
        the waiting ones are listed in the pool's queue with their position and what they wait for."""
        if not self.has_capacity():
            return
        blocked: dict[str, str] = {}          # pool -> why its head waits
        waiting: dict[str, list[dict]] = {}   # pool -> its jobs behind that head, in order
        cursor = self.platform.mongo[self.kind.jobs].find(
            {"status": {"$in": list(self.kind.claimable)}},
            {"_id": 1, "placement": 1, "name": 1, "tenant_id": 1, "created_at": 1},
            sort=[("created_at", 1)]).limit(200)
        async for candidate in cursor:
            pool = self.placement_of(candidate).pool
            if pool not in blocked:
                if not self.has_capacity():
                    break
                try:
                    await self._claim(candidate["_id"], self.placement_of(candidate))
                    continue
                except ledger.NoRoom as no_room:
                    blocked[pool] = no_room.reason
            waiting.setdefault(pool, []).append(candidate)
        for pool, jobs in waiting.items():
            await ledger.list_waiting(self.platform.mongo, pool=pool, kind=self.kind.name, collection=self.kind.jobs,
                                      waiting=jobs, reason=blocked.get(pool, "waiting for a worker"))

    async def tidy_pools(self) -> None:
        """Free what dead runs of this kind still hold, and drop queue entries of jobs that no longer wait."""
        for allocation in await ledger.stale_allocations(self.platform.mongo, collection=self.kind.jobs,
                                                         lease_seconds=self.settings.lease_seconds):
            await transact(self.platform, lambda uow, a=allocation: ledger.release(uow, key=a["_id"], run_id=a["run_id"]))
        queue = self.platform.mongo[ledger.QUEUE]
        async for entry in queue.find({"collection": self.kind.jobs}, {"job_id": 1}):
            job = await self.platform.mongo[self.kind.jobs].find_one({"_id": entry["job_id"]}, {"status": 1})
            if job is None or job["status"] not in self.kind.claimable:
                await queue.delete_one({"_id": entry["_id"]})

    async def try_claim(self, job_id: str) -> bool:
        """Claim the job if it is still claimable and its pool has room (a request event's handler);
        a job that does not fit is left to the poll loop, which queues it."""
        doc = await self.platform.mongo[self.kind.jobs].find_one({"_id": job_id}, {"placement": 1})
        if doc is None:
            return False
        try:
            return await self._claim(job_id, self.placement_of(doc))
        except ledger.NoRoom:
            self.nudge()
            return False

    async def _claim(self, job_id: str, placement: Placement) -> bool:
        """Claim the job if it is still claimable; raises ledger.NoRoom when its pool lacks room
        (nothing changed then: the admission is part of the claim's unit of work)."""
        if not self.has_capacity() or job_id in self.runs:
            return False
        total, nodes = await capacity(self.platform, placement.pool)
        # Each share runs on a node of its own (a job's work, a training rank); the local machine is
        # one node that runs every rank of a job, so there the job takes its total from that node.
        spread = placement.nodes if self.platform.cluster.kind != "local" else 1
        run_id, at = new_id(), now()
        run = {"run_id": run_id, "worker_id": self.worker_id, "started_at": at, "active": True,
               "lease_until": at + timedelta(seconds=self.settings.lease_seconds)}
        given: list[str] = []

        async def claim_and_admit(uow) -> dict | None:
            job = await self.kind.claim(uow, job_id=job_id, run=run)
            if job is not None:
                holder = ledger.Holder(kind=self.kind.name, collection=self.kind.jobs, job_id=job_id, run_id=run_id,
                                       tenant_id=job["tenant_id"])
                given[:] = await ledger.admit(uow, holder=holder, pool=placement.pool, request=placement.resources,
                                              capacity=total, nodes=nodes, spread=spread)
                await uow.collection(ledger.QUEUE).delete_one({"_id": holder.key}, session=uow.session)
            return job

        job = await transact(self.platform, claim_and_admit)
        if job is None:
            return False   # another runner was faster, or the job was stopped or deleted meanwhile
        if self.platform.cluster.kind != "local":   # placed on the nodes it was given (cluster mode)
            placement = dataclasses.replace(placement, node_ids=tuple(given))
        await self.platform.mongo[self.kind.jobs].update_one({"_id": job_id, "started_at": None},
                                                             {"$set": {"started_at": at}})
        task = asyncio.create_task(self._run(job, run_id, placement), name=f"{self.kind.name}-{job_id}")
        self.runs[job_id] = task
        task.add_done_callback(lambda _: (self.runs.pop(job_id, None), self.nudge()))
        return True

    async def serve(self, *also, grace_seconds: float = 0.0) -> None:
        """A worker's background task: claim and run jobs until cancelled (``also``: as in
        ``poll_forever``); then hand running jobs back (``shutdown``) and close the executor."""
        try:
            await self.poll_forever(*also)
        finally:
            await self.shutdown(grace_seconds=grace_seconds)
            self.kind.executor.close()

    async def shutdown(self, *, grace_seconds: float) -> None:
        """Stop claiming and ask every run to stop (``shutdown``); wait up to ``grace_seconds``, then
        cancel the runs still going and wait for them to end. No run outlives its runner: a cancelled
        run's executor ends its process or Ray task while it still can (a run left behind once called
        Ray after its cluster was gone), and its job, still leased, is re-queued by the watchdog."""
        self.draining = True
        for run in list(self.active.values()):
            run.request_stop("shutdown")
        if self.runs:
            await asyncio.wait(list(self.runs.values()), timeout=grace_seconds)
        left = list(self.runs.values())
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    # -- one run ------------------------------------------------------------------------------------

    async def _run(self, job: dict, run_id: str, placement: Placement) -> None:
        work_root = Path(self.platform.settings.work_dir) if self.platform.settings.work_dir else None
        if work_root:
            work_root.mkdir(parents=True, exist_ok=True)
        prefix = f"maas-{self.kind.name}-{job['_id'][:8]}-"
        with tempfile.TemporaryDirectory(prefix=prefix, dir=work_root) as tmp:
            run = Run(job=job, run_id=run_id, worker_id=self.worker_id, work=Path(tmp),
                      loop=asyncio.get_running_loop(), placement=placement)
            self.active[job["_id"]] = run
            heartbeat = asyncio.create_task(self._heartbeat(run))
            flushing = asyncio.Event()   # set: the flusher ends after the flush it is in (never mid-write)
            flusher = asyncio.create_task(self._flush_forever(run, flushing))
            try:
                outcome = await self.kind.execute(run)
            except Exception as exc:
                outcome = self.kind.failure(run, exc)
                if outcome.kind == "failed":
                    log.exception("%s job %s failed", self.kind.name, job["_id"])
            finally:
                heartbeat.cancel()
                flushing.set()
                await asyncio.gather(heartbeat, flusher, return_exceptions=True)
            if outcome.kind == "failed":
                run.say(f"ERROR {outcome.message}")
            with run.lock:
                pending = list(run.lines)

            async def end(uow) -> str | None:
                line = await self.kind.record_end(uow, run, outcome)
                # The run's resources go back to its pool with its end (tidy_pools frees them if not).
                await ledger.release(uow, key=f"{self.kind.jobs}:{run.job_id}", run_id=run_id)
                # Its last lines (the ERROR, what the end did) commit with the end: whoever sees the
                # job ended finds them in its log (they were written after it, and read too early).
                await self.kind.logs.append(self.platform, job_id=run.job_id, tenant_id=run.tenant_id,
                                            lines=pending + ([f"[maas] {line}"] if line else []), session=uow.session)
                return line

            try:
                await transact(self.platform, end)
                with run.lock:
                    del run.lines[:len(pending)]   # written; whatever came after them is flushed below
            except Exception:
                log.exception("recording the end of %s job %s failed", self.kind.name, job["_id"])
            await self.flush(run)
            await self.keep_logs(run)
            self.active.pop(job["_id"], None)

    async def _heartbeat(self, run: Run) -> None:
        jobs = self.platform.mongo[self.kind.jobs]
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                renewed = await jobs.update_one(
                    {"_id": run.job_id, "run.run_id": run.run_id, "status": "running"},
                    {"$set": {"run.lease_until": now() + timedelta(seconds=self.settings.lease_seconds)}})
            except Exception:  # a database hiccup: the lease is long enough to try again
                log.warning("lease renewal of %s failed", run.job_id, exc_info=True)
                continue
            if renewed.matched_count == 0:   # stopped, deleted, or re-queued to another runner
                run.request_stop("lost")
                return
            self.kind.on_heartbeat(run)

    # -- logs and progress ----------------------------------------------------------------------

    async def _flush_forever(self, run: Run, done: asyncio.Event) -> None:
        """Flush every ``log_flush_seconds`` until ``done``. Not cancelled: a flush cancelled mid-write
        had taken its lines from the run, and they reached the log only later, if at all."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=self.settings.log_flush_seconds)
            if done.is_set():
                return   # what is left is written with the run's end
            try:
                await self.flush(run)
            except Exception:
                log.warning("flushing logs of %s failed", run.job_id, exc_info=True)

    async def flush(self, run: Run) -> None:
        await flush_run(self.platform, self.kind, run)

    async def keep_logs(self, run: Run) -> None:
        await keep_logs(self.platform, self.kind, run)


async def flush_run(platform: Platform, kind: JobKind, run: Run) -> None:
    """Store the run's new log lines and, when it changed, its progress (also called by a kind, e.g.
    right after a checkpoint)."""
    with run.lock:
        lines, run.lines = run.lines, []
        progress, dirty = run.progress, run.progress_dirty
        run.progress_dirty = False
    await kind.logs.append(platform, job_id=run.job_id, tenant_id=run.tenant_id, lines=lines)
    if dirty and progress is not None:
        await kind.save_progress(run, progress)


async def keep_logs(platform: Platform, kind: JobKind, run: Run) -> None:
    """The permanent copy of the log in the user's bucket (永久保存日志), when the job asks for it."""
    job = await platform.mongo[kind.jobs].find_one({"_id": run.job_id})
    if job is None or not (job.get("permanent_log") or {}).get("enabled"):
        return
    try:
        await kind.logs.upload_permanent(platform, job=job)
    except Exception:
        log.warning("copying the log of %s to %s failed", run.job_id, job["permanent_log"]["path"], exc_info=True)
