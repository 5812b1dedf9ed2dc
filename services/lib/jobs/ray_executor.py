"""Run a job's work as a Ray task on a node of its resource pool and relay what it says.

The same contract as ``LocalProcessExecutor``: the work's entry (a function of the ``services``
package, named by code) gets its JSON arguments and a channel; ``send`` and ``ask`` reach the
listener here. The channel is a small actor (``Mailbox``) created for the run: the task posts its
messages to it, the executor takes them and posts answers back. Everything in the messages is JSON
text — Ray pickles only our own code's calls, never anything a user wrote.

Placement: the task asks for the placement's CPUs, accelerators and memory (Ray enforces the same
reservation as the platform's ledger) and runs on the node the pool's ledger gave it (a hard node
affinity: ``services.lib.pools.ledger`` admitted it there, so Ray finds the room free on that node,
never a fragment spread over several). Work without a node of its own (it takes no share, or it
only coordinates ranks that have theirs) may only run on a node labelled ``openmaas.io/pool=<pool>``
(a hard label constraint), so nothing lands outside its pool.
Ray's own retries are off: a lost node fails the run (``WorkFailed("NodeLost")``) and the job
engine's restart rules decide, as for a local process that died.

Files: the work's arguments name paths under the platform's work folder, which every node must
mount at the same path (docs/cluster.md) — weights are downloaded once, by the runner.
"""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from services.lib.common.cluster import RayCluster, Resources, placed_on
from services.lib.jobs.child import resolve
from services.lib.jobs.executor import NOT_OVER, Listener, Work, WorkFailed, ending, error_report
from services.lib.jobs.local_process import encode

_TAKE_SECONDS = 0.5
_LOST_GRACE_SECONDS = 10
# Ray's errors that mean "the process or its machine went away", not "the code raised".
# Unschedulable: the node the ledger gave the task died before Ray placed it there.
_LOST = (ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError, ray.exceptions.ActorDiedError,
         ray.exceptions.ObjectLostError, ray.exceptions.RaySystemError, ray.exceptions.TaskUnschedulableError,
         ray.exceptions.ActorUnschedulableError)


@ray.remote(num_cpus=0, max_restarts=0)
class Mailbox:
    """The channel between a running task and the executor: messages one way, answers the other.

    An async actor runs calls concurrently, in no promised order: each message carries the sender's
    sequence number and is handed on only after every earlier one (logs stay in order, and ``done``
    comes after all the news)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[str] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future] = {}
        self.early: dict[int, str] = {}
        self.next = 0

    def _arrive(self, seq: int, message: str) -> None:
        self.early[seq] = message
        while self.next in self.early:
            self.messages.put_nowait(self.early.pop(self.next))
            self.next += 1

    async def put(self, seq: int, message: str) -> None:
        self._arrive(seq, message)

    async def ask(self, seq: int, message: str) -> str:
        answer = asyncio.get_running_loop().create_future()
        self.waiting[seq] = answer
        self._arrive(seq, json.dumps({**json.loads(message), "question": seq}))
        return await answer

    async def take(self, timeout: float) -> str | None:
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            return None

    async def answer(self, question: int, answer: str) -> None:
        waiting = self.waiting.pop(question, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)


class _MailboxChannel:
    """The work's side of the channel (inside the Ray task)."""

    def __init__(self, mailbox):
        self.mailbox = mailbox
        self.seq = -1

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, kind: str, **data: Any) -> None:
        self.mailbox.put.remote(self._next(), encode({"kind": kind, "data": data}).decode())

    def ask(self, kind: str, **data: Any) -> Any:
        asked = self.mailbox.ask.remote(self._next(), encode({"kind": kind, "data": data}).decode())
        return json.loads(ray.get(asked))["answer"]

    def finish(self, kind: str, **data: Any) -> None:
        ray.get(self.mailbox.put.remote(self._next(), encode({"kind": kind, "data": data}).decode()))


@ray.remote(max_retries=0)
def _run_work(entry: str, args: str, mailbox, package: str) -> None:
    """The task: call the entry with its arguments and a channel; report done or error through the
    mailbox (so the executor reads every message before the end)."""
    channel = _MailboxChannel(mailbox)
    context = ray.get_runtime_context()
    channel.send("placed", node_id=context.get_node_id(), executor="ray",
                 address=ray.util.get_node_ip_address())
    try:
        result = resolve(entry, package)(json.loads(args), channel)
    except Exception as exc:
        channel.finish("error", **error_report(exc))
        return
    channel.finish("done", result=result)


def _near_the_driver() -> dict[str, Any]:
    """Options placing a run's mailbox on this process's node when it is one (it should outlive the
    work's node, not share its fate); elsewhere (a Ray client) Ray chooses. The affinity is hard: a
    soft one sent about half the mailboxes to other nodes (measured on a test cluster), and a pool
    node's loss then took a healthy run's channel with it."""
    try:
        node = ray.get_runtime_context().get_node_id()
    except Exception:
        return {}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False)} if node else {}


class RayExecutor:
    """Runs each work item as a Ray task in its placement's pool."""

    def __init__(self, cluster: RayCluster, *, max_concurrent: int = 4, entry_package: str = "services"):
        self.cluster, self.entry_package = cluster, entry_package
        # Listeners may block (they hand work to the event loop and wait): threads of their own.
        self._threads = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="ray-relay")

    def task_options(self, work: Work) -> dict[str, Any]:
        placement = work.placement
        # Work over several nodes: this task only coordinates; its ranks reserve the resources.
        resources = placement.resources if placement.nodes == 1 else Resources()
        options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus,
                                   "scheduling_strategy": placed_on(placement.pool, placement.node_ids
                                                                    if placement.nodes == 1 else ())}
        if resources.memory_bytes:
            options["memory"] = resources.memory_bytes
        if work.env:
            options["runtime_env"] = {"env_vars": dict(work.env)}
        return options

    async def run(self, work: Work, listener: Listener) -> Any:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, self.cluster.connect)
        mailbox = Mailbox.options(**_near_the_driver()).remote()
        task = _run_work.options(**self.task_options(work)).remote(
            work.entry, encode(work.args).decode(), mailbox, self.entry_package)
        ended = asyncio.wrap_future(task.future())
        try:
            while True:
                raw = await self._through(mailbox.take.remote(_TAKE_SECONDS), ended)
                if raw is None:
                    if ended.done():
                        raise self._lost(ended)
                    continue
                message = json.loads(raw)
                kind, data = message["kind"], message.get("data") or {}
                if (result := ending(kind, data)) is not NOT_OVER:
                    return result
                answer = await loop.run_in_executor(self._threads, listener, kind, data)
                if "question" in message:
                    await self._through(mailbox.answer.remote(message["question"],
                                                              encode({"answer": answer}).decode()), ended)
        finally:
            if ended.done():
                ended.exception()   # read: an error is reported above, not as "never retrieved"
            # Stopped, cancelled or failed: end the task's process on whichever node, and the mailbox.
            # Not once this driver is disconnected: Ray's calls would start a local Ray of their own.
            elif ray.is_initialized():
                ray.cancel(task, force=True)
            if ray.is_initialized():
                ray.kill(mailbox)

    @classmethod
    async def _through(cls, call, ended: asyncio.Future) -> Any:
        """A call to the run's mailbox. Any Ray error there means the channel is gone — its node or the
        task's went away (a node's loss can also reach a live actor as a reset connection): the run
        is over, lost unless the task itself ended otherwise within a grace."""
        try:
            return await call
        except ray.exceptions.RayError as exc:
            await asyncio.wait({ended}, timeout=_LOST_GRACE_SECONDS)
            raise (cls._lost(ended) if ended.done() else
                   WorkFailed("NodeLost", f"the job's channel was lost: {type(exc).__name__}")) from None

    @staticmethod
    def _lost(ended: asyncio.Future) -> WorkFailed:
        exc = ended.exception()
        if exc is None:
            return WorkFailed("ProcessExited", "the job's task ended without reporting its result")
        if isinstance(exc, _LOST):
            return WorkFailed("NodeLost", f"the node running the job's task was lost: {type(exc).__name__}",
                              detail=str(exc)[-3000:])
        return WorkFailed("ProcessExited", f"the job's task failed: {type(exc).__name__}", detail=str(exc)[-3000:])

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
