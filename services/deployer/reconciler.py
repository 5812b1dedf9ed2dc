"""Reconciles each service's instances toward its desired state (level-triggered, like a controller).

Events only nudge a service; a pass re-reads the desired state (the serving API's document) and
what actually runs (instance documents probed through the backend), then acts:

- stopped or deleted: drain and stop every instance, report ``stopped``;
- too many instances: drain and stop the surplus (not-ready ones first) while the rest serve;
- too few: start the missing ones; they receive traffic only once ``/health`` answers (``ready``);
- another model version (upgrade): start one new instance, wait until it is ready, then drain and
  stop one old one, and repeat (rolling: capacity never drops below the instance count).

Draining = the instance is marked ``draining`` (gateways stop routing to it within their refresh
interval), then told to stop, which lets its in-flight requests finish. One pass per service runs
at a time; a nudge during a pass makes another pass follow. Several deployers may run: only the one
holding the lead acts (``services.deployer.runtime``, docs/operations.md).

Resource pools: on a backend that reserves pool capacity (Ray), an instance is admitted in its
service's pool (``services.lib.pools.ledger``) in the same unit of work that records it, and released
in the one that forgets it. The ledger picks the node (one with the instance's CPUs and memory
free) and the backend starts the instance there. An instance that does not fit is not recorded: the
service says what it waits for (status message), is listed in the pool's queue, and the pass is
repeated when an instance of that pool goes away, or on the next resync.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contracts import new_id
from contracts.serving import InstanceChanged, ServiceStatusReported
from services.lib.common.cluster import PUBLIC_POOL, Resources
from services.lib.common.context import Platform, transact
from services.lib.pools import ledger
from services.lib.pools.service import capacity
from services.lib.pools.specs import inference_spec, instance_resources
from services.lib.readmodels.serving_refs import INSTANCES, SERVICE_LOGS, SERVICES
from services.deployer.backend import Health, InstanceBackend, InstanceHandle, InstanceLaunch
from services.deployer.models import NUDGES
from services.deployer.settings import DeployerSettings

log = logging.getLogger(__name__)

def _now() -> datetime:
    return datetime.now(UTC)


def placement_of(svc: dict) -> tuple[str, Resources]:
    """The pool and what one instance takes from it, as the serving API stored them at deploy;
    services recorded before pools existed (and presets) use the public pool."""
    stored = svc.get("placement")
    if stored:
        return stored["pool"], Resources.from_dict(stored)
    return PUBLIC_POOL, instance_resources(svc.get("instance_spec", ""))


def allocation_key(instance_id: str) -> str:
    return f"{INSTANCES}:{instance_id}"


def handle_of(doc: dict) -> InstanceHandle:
    return InstanceHandle(instance_id=doc["_id"], url=doc.get("url") or "", node=doc.get("node", ""),
                          details=doc.get("details") or {})


@dataclass
class _Outcome:
    ok: bool
    message: str = ""
    aborted: bool = False
    waiting: bool = False          # not started: its pool has no room now (message: for what)


@dataclass
class _State:
    """What this deployer remembers about a service between passes."""
    gave_up: int | None = None                 # generation whose missing instances failed to start
    last_report: tuple | None = None
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Wait:
    """A service whose missing instances wait for room in its pool (listed in the pool's queue)."""
    pool: str
    reason: str
    entry: dict          # _id, name, tenant_id: what the queue shows


class Reconciler:
    def __init__(self, platform: Platform, backend: InstanceBackend, settings: DeployerSettings):
        self.platform, self.backend, self.settings = platform, backend, settings
        self._tasks: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._state: dict[str, _State] = {}
        self._misses: dict[str, int] = {}
        self._log_offsets: dict[str, int] = {}
        self._waiting: dict[str, _Wait] = {}   # service id -> what its missing instances wait for, first come first
        self._seq = 0
        # Only the leading deployer acts (services.deployer.runtime holds the lease); a standby hands
        # the service events it receives over to the leader.
        self.leading = False

    # ------------------------------------------------------------------------------------ scheduling

    def nudge(self, service_id: str, *, retry: bool = False, generation: int | None = None) -> None:
        """Reconcile this service soon; ``retry`` also retries starts that failed for this generation.

        ``generation``: that of the request event asking for the retry. Every request bumps the
        generation, so one about a generation this deployer already gave up on is a redelivery (or
        an older event after a newer one): it must not start a failed service again."""
        if retry:
            state = self._state.setdefault(service_id, _State())
            if generation is None or state.gave_up is None or generation > state.gave_up:
                state.gave_up = None
        self._dirty.add(service_id)
        task = self._tasks.get(service_id)
        if task is None or task.done():
            self._tasks[service_id] = asyncio.create_task(self._run(service_id), name=f"reconcile-{service_id}")

    async def request(self, service_id: str, *, retry: bool, generation: int | None = None) -> None:
        """A service event arrived: act on it here if this deployer leads, else hand it to the leader
        (its consumer group shares the topic's partitions with standbys). ``generation``: the event's."""
        if self.leading:
            self.nudge(service_id, retry=retry, generation=generation)
            return
        # A retry stays a retry when a plain nudge follows it (for the newest generation asked for).
        update = {"$set": {"at": _now(), "retry": True}} if retry else \
            {"$set": {"at": _now()}, "$setOnInsert": {"retry": False}}
        if retry and generation is not None:
            update["$max"] = {"generation": generation}
        await self.platform.mongo[NUDGES].update_one({"_id": service_id}, update, upsert=True)

    async def take_handed_nudges(self) -> None:
        """The leader acts on what standbys were told."""
        async for doc in self.platform.mongo[NUDGES].find({}):
            if (await self.platform.mongo[NUDGES].delete_one({"_id": doc["_id"]})).deleted_count:
                self.nudge(doc["_id"], retry=bool(doc.get("retry")), generation=doc.get("generation"))

    async def step_down(self) -> None:
        """Another deployer leads now: stop acting and stop the instances this one runs (the leader
        finds them gone and starts its own), so no service is served twice over."""
        self.leading = False
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._dirty.clear()
        self._state.clear()
        self._waiting.clear()
        handles = await self.backend.list()
        await asyncio.gather(*(self.backend.stop(h, grace_seconds=self.settings.stop_grace_seconds) for h in handles),
                             return_exceptions=True)

    def busy(self, service_id: str) -> bool:
        task = self._tasks.get(service_id)
        return task is not None and not task.done()

    async def _run(self, service_id: str) -> None:
        while service_id in self._dirty:
            self._dirty.discard(service_id)
            try:
                await self.reconcile(service_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the periodic resync tries again
                log.exception("reconciling service %s failed", service_id)

    async def idle(self) -> None:
        """Wait until no pass is running (tests and shutdown)."""
        while any(not t.done() for t in self._tasks.values()):
            await asyncio.gather(*[t for t in self._tasks.values() if not t.done()], return_exceptions=True)

    # ------------------------------------------------------------------------------------ documents

    async def _service(self, service_id: str) -> dict | None:
        return await self.platform.mongo[SERVICES].find_one({"_id": service_id})

    async def _instances(self, service_id: str) -> list[dict]:
        return [d async for d in self.platform.mongo[INSTANCES].find({"service_id": service_id})]

    async def _set_instance(self, doc: dict, status: str, *, message: str | None = None, **fields) -> None:
        async with self.platform.uow() as uow:
            await uow.collection(INSTANCES).update_one(
                {"_id": doc["_id"]}, {"$set": {"status": status, "message": message, **fields}}, session=uow.session)
            self._emit_instance(uow, doc, status, message)
        doc.update(status=status, message=message, **fields)

    def _emit_instance(self, uow, doc: dict, status: str, message: str | None) -> None:
        uow.emit(InstanceChanged(service_id=doc["service_id"], instance_id=doc["_id"],
                                 version_id=doc.get("version_id", ""), status=status, message=message),
                 tenant_id=doc["tenant_id"], subject=f"services/{doc['service_id']}")

    async def _drop_instance(self, doc: dict, status: str, message: str | None) -> None:
        async def drop(uow) -> bool:
            await uow.collection(INSTANCES).delete_one({"_id": doc["_id"]}, session=uow.session)
            self._emit_instance(uow, doc, status, message)
            if not self.backend.reserves_pool_capacity:
                return False
            return await ledger.release(uow, key=allocation_key(doc["_id"]))
        released = await transact(self.platform, drop)
        self._log_offsets.pop(doc["_id"], None)
        self._misses.pop(doc["_id"], None)
        if released:
            self._room_freed(doc.get("pool") or PUBLIC_POOL)

    def _room_freed(self, pool: str) -> None:
        """Capacity came back to ``pool``: services waiting for it try again now."""
        for service_id, wait in list(self._waiting.items()):
            if wait.pool == pool:
                self.nudge(service_id)

    async def _wait_for_room(self, svc: dict, reason: str) -> None:
        """List the service in its pool's queue (keeping its place if it already waits)."""
        pool, before = placement_of(svc)[0], self._waiting.get(svc["_id"])
        self._waiting[svc["_id"]] = _Wait(pool=pool, reason=reason, entry={
            "_id": svc["_id"], "name": svc.get("name", ""), "tenant_id": svc["tenant_id"]})
        if before is None or before.reason != reason:
            await self._list_queue(pool)

    async def _stop_waiting(self, service_id: str) -> None:
        wait = self._waiting.pop(service_id, None)
        # Also when this deployer did not know it waited: an entry may survive a restart.
        await ledger.unlist(self.platform.mongo, collection=SERVICES, ids=[service_id])
        if wait is not None:
            await self._list_queue(wait.pool)   # the ones behind it move up

    async def _list_queue(self, pool: str) -> None:
        waits = [w for w in self._waiting.values() if w.pool == pool]
        if waits:
            await ledger.list_waiting(self.platform.mongo, pool=pool, kind="service", collection=SERVICES,
                                      waiting=[w.entry for w in waits], reason=waits[0].reason)

    async def _report(self, svc: dict, status: str, ready: int, message: str | None) -> None:
        state = self._state.setdefault(svc["_id"], _State())
        key = (svc.get("generation", 1), status, ready, message)
        if state.last_report == key:
            return
        async with self.platform.uow() as uow:
            uow.emit(ServiceStatusReported(service_id=svc["_id"], generation=svc.get("generation", 1), status=status,
                                           ready_instances=ready, desired_instances=svc["instance_count"],
                                           message=message),
                     tenant_id=svc["tenant_id"], subject=f"services/{svc['_id']}")
        state.last_report = key

    # ------------------------------------------------------------------------------------ one pass

    async def reconcile(self, service_id: str) -> None:
        svc = await self._service(service_id)
        live: list[dict] = []
        for doc in await self._instances(service_id):
            if doc["status"] == "starting" and not doc.get("url"):
                # A pass was interrupted between recording and launching; launch never happened.
                await self._drop_instance(doc, "failed", "interrupted before launch")
                continue
            if await self.backend.health(handle_of(doc)) is Health.exited:
                expected = doc["status"] == "draining"
                await self._forget(doc, "stopped" if expected else "failed",
                                   None if expected else f"exited unexpectedly{self._tail(doc)}")
                continue
            live.append(doc)

        if svc is None or svc.get("desired") == "stopped":
            await self._stop_waiting(service_id)
            await asyncio.gather(*(self._retire(d) for d in live))
            if svc is None:
                self._state.pop(service_id, None)
            else:
                await self._report(svc, "stopped", 0, None)
            return

        state = self._state.setdefault(service_id, _State())
        generation = svc.get("generation", 1)
        want, count = svc["model"]["version_id"], svc["instance_count"]
        retire = [d for d in live if d["status"] == "draining"]
        serving = [d for d in live if d["status"] != "draining"]
        current = [d for d in serving if d.get("version_id") == want]
        old = [d for d in serving if d.get("version_id") != want]
        if len(current) > count:
            # Remove instances that serve nothing first, then the newest ready ones.
            order = sorted(current, key=lambda d: (d["status"] == "ready", d.get("started_at") or _now()))
            surplus = order[:len(current) - count]
            current = [d for d in current if d not in surplus]
            retire += surplus
        await asyncio.gather(*(self._retire(d) for d in retire))
        if service_id in self._dirty:
            return  # the desired state changed meanwhile: the next pass starts from it

        # Instances a previous (interrupted) pass launched may still be loading.
        pending = [d for d in current if d["status"] == "starting"]
        outcomes = await asyncio.gather(*(self._await_ready(svc, d) for d in pending))
        current = [d for d, o in zip(pending, outcomes) if o.ok or o.aborted] + \
                  [d for d in current if d["status"] != "starting"]
        failures = [o.message for o in outcomes if not o.ok and not o.aborted]
        if any(o.aborted for o in outcomes):
            return

        missing = count - len(current)
        waiting: str | None = None
        if missing > 0 and state.gave_up != generation:
            if old:  # rolling upgrade: capacity never drops below the instance count
                for _ in range(missing):
                    outcome = await self._start_with_retries(svc)
                    if outcome.waiting:
                        waiting = outcome.message
                        break
                    if not outcome.ok:
                        failures.append(outcome.message)
                        break
                    if old:
                        await self._retire(old.pop(0))
            else:
                outcomes = await asyncio.gather(*(self._start_with_retries(svc) for _ in range(missing)))
                failures += [o.message for o in outcomes if not o.ok and not o.aborted and not o.waiting]
                waiting = next((o.message for o in outcomes if o.waiting), None)
            if failures:
                state.gave_up = generation
        if waiting and not failures:
            await self._wait_for_room(svc, waiting)
        else:
            await self._stop_waiting(service_id)
        docs = await self._instances(service_id)
        ready_new = sum(1 for d in docs if d["status"] == "ready" and d.get("version_id") == want)
        if ready_new >= count:  # the new version carries the full load: old instances can go
            olds = [d for d in docs if d.get("version_id") != want and d["status"] != "draining"]
            await asyncio.gather(*(self._retire(d) for d in olds))
        if failures:
            state.failures = failures
        await self._report_status(svc, message=failures[-1] if failures else waiting,
                                  waiting=bool(waiting and not failures))

    async def _report_status(self, svc: dict, *, message: str | None = None, waiting: bool = False) -> None:
        """running: every wanted instance ready; alarm: some ready; deploying: none ready yet, the
        missing ones wait for room in the pool (``message`` says for what); failed: none."""
        docs = await self._instances(svc["_id"])
        want, count = svc["model"]["version_id"], svc["instance_count"]
        ready_new = sum(1 for d in docs if d["status"] == "ready" and d.get("version_id") == want)
        ready_all = sum(1 for d in docs if d["status"] == "ready")
        starting = any(d["status"] == "starting" for d in docs)
        if ready_new >= count:
            status, message = "running", None
        elif ready_all > 0:
            status = "alarm"
            if message is None:
                unhealthy = [d for d in docs if d["status"] == "unhealthy"]
                message = (f"{len(unhealthy)} instance(s) unhealthy" if unhealthy else
                           f"{ready_all} of {count} instance(s) ready")
        elif starting and message is None:
            return  # still deploying: nothing new to say
        elif waiting:
            status = "deploying"
        else:
            status = "failed"
            message = message or "no instance is ready"
        await self._report(svc, status, ready_all, message)

    # ------------------------------------------------------------------------------------ instances

    async def _start_with_retries(self, svc: dict) -> _Outcome:
        outcome = _Outcome(ok=False, message="not started")
        for _ in range(self.settings.start_attempts):
            outcome = await self._start_one(svc)
            if outcome.ok or outcome.aborted or outcome.waiting:
                return outcome
        return outcome

    async def _start_one(self, svc: dict) -> _Outcome:
        model = svc["model"]
        pool, resources = placement_of(svc)
        # The instance's secret lives only here and in the instance: the gateway reads it from this
        # document, and no API response shows the field (services.serving.models.instance_view).
        secret = secrets.token_urlsafe(32)
        doc = {"_id": new_id(), "service_id": svc["_id"], "tenant_id": svc["tenant_id"],
               "version_id": model["version_id"], "version_number": model.get("version_number"),
               "status": "starting", "url": None, "node": None, "details": {}, "secret": secret,
               "backend": self.backend.name, "pool": pool, "started_at": _now(), "ready_at": None, "message": None}
        try:
            node_ids = await self._record_and_admit(doc, pool=pool, resources=resources)
        except ledger.NoRoom as no_room:
            return _Outcome(ok=False, waiting=True, message=no_room.reason)
        launch = InstanceLaunch(instance_id=doc["_id"], service_id=svc["_id"], served_model_name=svc["name"],
                                model_uri=model["storage_uri"], max_model_len=svc["max_model_len"],
                                secret=secret, cpus=inference_spec(svc.get("instance_spec", "")).cpus, pool=pool,
                                memory_bytes=resources.memory_bytes, node_id=node_ids[0] if node_ids else None)
        try:
            handle = await self.backend.start(launch)
        except Exception as exc:
            log.exception("starting an instance of %s failed", svc["_id"])
            await self._drop_instance(doc, "failed", f"could not start: {type(exc).__name__}: {exc}")
            return _Outcome(ok=False, message=f"instance could not start: {exc}")
        fields = {"url": handle.url, "node": handle.node, "details": handle.details}
        await self.platform.mongo[INSTANCES].update_one({"_id": doc["_id"]}, {"$set": fields})
        doc.update(fields)
        return await self._await_ready(svc, doc)

    async def _record_and_admit(self, doc: dict, *, pool: str, resources: Resources) -> list[str]:
        """Record the instance and, where instances reserve capacity, take its share of the pool
        on one of its nodes in the same unit of work (raises ledger.NoRoom, recording nothing, when
        no node has room); the node's id (none where nothing is reserved)."""
        room = await capacity(self.platform, pool) if self.backend.reserves_pool_capacity else None
        given: list[str] = []

        async def record(uow) -> None:
            if room is not None:
                holder = ledger.Holder(kind="instance", collection=INSTANCES, job_id=doc["_id"], run_id=doc["_id"],
                                       tenant_id=doc["tenant_id"], leased=False)
                given[:] = await ledger.admit(uow, holder=holder, pool=pool, request=resources, capacity=room[0],
                                              nodes=room[1])
                doc["assigned_node"] = given[0] if given else None
            await uow.collection(INSTANCES).insert_one(doc, session=uow.session)
            self._emit_instance(uow, doc, "starting", None)
        await transact(self.platform, record)
        return given

    async def _await_ready(self, svc: dict, doc: dict) -> _Outcome:
        handle = handle_of(doc)
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        while True:
            health = await self.backend.health(handle)
            if health is Health.ready:
                await self._set_instance(doc, "ready", ready_at=_now())
                return _Outcome(ok=True)
            if health is Health.exited or time.monotonic() > deadline:
                why = "exited while loading" if health is Health.exited else "did not become ready in time"
                message = f"instance {why}{self._tail(doc)}"
                await self._forget(doc, "failed", message)
                return _Outcome(ok=False, message=message)
            if svc["_id"] in self._dirty and not await self._still_wanted(svc, doc):
                return _Outcome(ok=False, aborted=True)  # the next pass stops it
            await asyncio.sleep(self.settings.probe_interval_seconds)

    async def _still_wanted(self, svc: dict, doc: dict) -> bool:
        now = await self._service(svc["_id"])
        return bool(now and now.get("desired") == "running" and now["model"]["version_id"] == doc["version_id"])

    async def _retire(self, doc: dict) -> None:
        """Drain (no new requests), stop (in-flight ones finish), forget."""
        if doc["status"] == "ready" or doc["status"] == "unhealthy":
            await self._set_instance(doc, "draining")
            await asyncio.sleep(self.settings.drain_seconds)
        elif doc["status"] != "draining":
            await self._set_instance(doc, "draining")
        await self.backend.stop(handle_of(doc), grace_seconds=self.settings.stop_grace_seconds)
        await self.ship_logs(doc)
        await self._drop_instance(doc, "stopped", None)

    async def _forget(self, doc: dict, status: str, message: str | None) -> None:
        await self.backend.stop(handle_of(doc), grace_seconds=5)
        await self.ship_logs(doc)
        await self._drop_instance(doc, status, message)

    def _tail(self, doc: dict, lines: int = 5) -> str:
        path = (doc.get("details") or {}).get("log")
        if not path:
            return ""
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 4096))
                tail = deque(f.read().decode("utf-8", errors="replace").splitlines(), maxlen=lines)
        except OSError:
            return ""
        return (": " + " | ".join(line.strip() for line in tail if line.strip())) if tail else ""

    # ------------------------------------------------------------------------------------ loops

    async def check_health(self) -> None:
        """Probe ready/unhealthy instances: dead ones are replaced, flapping ones flip alarm on and off."""
        changed: set[str] = set()
        docs = [d async for d in self.platform.mongo[INSTANCES].find({"status": {"$in": ["ready", "unhealthy"]}})]
        for doc in docs:
            service_id = doc["service_id"]
            if self.busy(service_id):
                continue
            health = await self.backend.health(handle_of(doc))
            if health is Health.exited:
                self.nudge(service_id, retry=True)
            elif health is Health.ready:
                self._misses.pop(doc["_id"], None)
                if doc["status"] == "unhealthy":
                    await self._set_instance(doc, "ready")
                    changed.add(service_id)
            else:
                misses = self._misses[doc["_id"]] = self._misses.get(doc["_id"], 0) + 1
                if doc["status"] == "ready" and misses >= self.settings.unhealthy_after:
                    await self._set_instance(doc, "unhealthy", message=f"{misses} failed health checks in a row")
                    changed.add(service_id)
        for service_id in changed:
            svc = await self._service(service_id)
            if svc is not None and svc.get("desired") == "running":
                await self._report_status(svc)

    async def resync(self) -> None:
        """Nudge every service whose instances do not match its desired state (startup, lost events)."""
        if self.backend.reserves_pool_capacity:
            await self.release_orphans()
        instances: dict[str, list[dict]] = {}
        async for doc in self.platform.mongo[INSTANCES].find({}):
            instances.setdefault(doc["service_id"], []).append(doc)
        seen = set()
        async for svc in self.platform.mongo[SERVICES].find({}):
            service_id = svc["_id"]
            seen.add(service_id)
            if self.busy(service_id):
                continue
            docs = instances.get(service_id, [])
            state = self._state.get(service_id, _State())
            if svc.get("desired") == "stopped":
                if docs or svc["status"] != "stopped":
                    self.nudge(service_id)
                continue
            want = svc["model"]["version_id"]
            ready = [d for d in docs if d["status"] == "ready" and d.get("version_id") == want]
            settled = (len(ready) == svc["instance_count"] and len(docs) == len(ready)
                       and svc["status"] == "running")
            if not settled and state.gave_up != svc.get("generation", 1):
                self.nudge(service_id)
            elif state.gave_up == svc.get("generation", 1) and svc["status"] == "deploying":
                self.nudge(service_id)  # our report was lost: say it again
        for service_id in set(instances) - seen:
            self.nudge(service_id)   # instances of a deleted service

    async def release_orphans(self) -> None:
        """Give back pool shares whose instance document is gone (a deployer that died between
        forgetting an instance and releasing cannot happen — one unit of work — but a document
        removed by hand can)."""
        for allocation in await ledger.stale_allocations(self.platform.mongo, collection=INSTANCES, lease_seconds=0):
            if await transact(self.platform, lambda uow, a=allocation: ledger.release(uow, key=a["_id"])):
                self._room_freed(allocation["pool"])

    async def ship_logs(self, doc: dict | None = None) -> int:
        """Copy new instance log lines into the searchable ``service_logs`` collection."""
        docs = [doc] if doc is not None else [d async for d in self.platform.mongo[INSTANCES].find({})]
        shipped = 0
        for d in docs:
            if not d.get("url"):
                continue
            offset = self._log_offsets.get(d["_id"], 0)
            lines, new_offset = await self.backend.read_logs(handle_of(d), offset=offset)
            self._log_offsets[d["_id"]] = new_offset
            if not lines:
                continue
            now = _now()
            rows = []
            for line in lines:
                self._seq = max(self._seq + 1, time.time_ns())
                rows.append({"service_id": d["service_id"], "tenant_id": d["tenant_id"], "instance_id": d["_id"],
                             "seq": self._seq, "at": now, "line": line[:4000]})
            await self.platform.mongo[SERVICE_LOGS].insert_many(rows)
            shipped += len(rows)
        return shipped

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        try:
            await self.ship_logs()
        except Exception:
            log.exception("shipping the last log lines failed")
        await self.backend.close()
        if not self.leading:
            return   # a standby's node may be the leader's: the instance documents are the leader's
        # What ran here is gone; the next start reconciles every service from scratch.
        handles = {h.instance_id for h in await self.backend.list()}
        await self.platform.mongo[INSTANCES].delete_many({"node": self.node_name(), "_id": {"$nin": list(handles)}})

    def node_name(self) -> str:
        return getattr(self.backend, "node", "")
