"""The deployer's reconciler against an in-memory backend and database: the order of its actions.

What matters for "no dropped request": an instance is marked ready (and so routable) only after its
health check passes, an instance is marked draining before it is stopped, and a rolling upgrade
never has fewer ready instances than the instance count while old ones are retired.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from mongomock_motor import AsyncMongoMockClient

from contracts.serving import InstanceChanged, ServiceStatusReported
from services.lib.readmodels.serving_refs import INSTANCES, SERVICES
from services.deployer.backend import Health, InstanceBackend, InstanceHandle, InstanceLaunch
from services.deployer.reconciler import Reconciler
from services.deployer.settings import DeployerSettings


class FakeUow:
    def __init__(self, platform):
        self.platform, self.session = platform, None

    def collection(self, name):
        return self.platform.mongo[name]

    def emit(self, data, *, tenant_id, subject):
        self.platform.log.append(("event", data))


class FakeMongo:
    def __init__(self):
        self.db = AsyncMongoMockClient()["maas"]

    def __getitem__(self, name):
        return self.db[name]


class FakePlatform:
    def __init__(self):
        self.mongo = FakeMongo()
        self.log: list[tuple] = []

    @asynccontextmanager
    async def _uow(self):
        yield FakeUow(self)

    def uow(self):
        return self._uow()


class FakeBackend(InstanceBackend):
    name = "fake"

    def __init__(self, log: list):
        self.log = log
        self.running: dict[str, dict] = {}
        self.ready_after = 1          # probes before an instance answers ready
        self.fail_starts = 0          # next N instances exit while loading

    async def start(self, launch: InstanceLaunch) -> InstanceHandle:
        fail = self.fail_starts > 0
        self.fail_starts -= 1 if fail else 0
        self.running[launch.instance_id] = {"probes": 0, "fail": fail, "uri": launch.model_uri, "sick": False}
        self.log.append(("start", launch.instance_id, launch.model_uri))
        return InstanceHandle(instance_id=launch.instance_id, url=f"http://fake/{launch.instance_id}", node="n")

    async def stop(self, handle: InstanceHandle, *, grace_seconds: float) -> None:
        if self.running.pop(handle.instance_id, None) is not None:
            self.log.append(("stop", handle.instance_id))

    async def health(self, handle: InstanceHandle) -> Health:
        state = self.running.get(handle.instance_id)
        if state is None:
            return Health.exited
        if state["fail"]:
            del self.running[handle.instance_id]
            return Health.exited
        state["probes"] += 1
        if state["sick"]:
            return Health.not_ready
        return Health.ready if state["probes"] > self.ready_after else Health.not_ready

    async def list(self) -> list[InstanceHandle]:
        return [InstanceHandle(instance_id=i, url=f"http://fake/{i}", node="n") for i in self.running]

    async def read_logs(self, handle, *, offset):
        return [], offset


SETTINGS = DeployerSettings(drain_seconds=0.01, probe_interval_seconds=0.01, start_timeout_seconds=5,
                            stop_grace_seconds=1, unhealthy_after=2, start_attempts=2)


@pytest.fixture
def world():
    platform = FakePlatform()
    backend = FakeBackend(platform.log)
    return platform, backend, Reconciler(platform, backend, SETTINGS)


async def _service(platform, *, count=1, version="v1", desired="running", generation=1) -> dict:
    now = datetime.now(UTC)
    doc = {"_id": "svc", "tenant_id": "t", "name": "chat", "model": {"version_id": version,
           "storage_uri": f"s3://b/{version}/", "template_id": "x"}, "instance_count": count, "desired": desired,
           "status": "deploying", "generation": generation, "max_model_len": 2048, "instance_spec": "cpu.1u4g",
           "created_at": now}
    await platform.mongo[SERVICES].replace_one({"_id": "svc"}, doc, upsert=True)
    return doc


async def _update(platform, **changes):
    await platform.mongo[SERVICES].update_one({"_id": "svc"}, {"$set": changes, "$inc": {"generation": 1}})


def _reports(platform) -> list[ServiceStatusReported]:
    return [e[1] for e in platform.log if e[0] == "event" and isinstance(e[1], ServiceStatusReported)]


def _instance_events(platform, status: str) -> list[str]:
    return [e[1].instance_id for e in platform.log
            if e[0] == "event" and isinstance(e[1], InstanceChanged) and e[1].status == status]


async def _instances(platform) -> list[dict]:
    return [d async for d in platform.mongo[INSTANCES].find({})]


async def test_deploy_starts_every_instance_and_reports_running_only_when_all_are_ready(world):
    platform, backend, reconciler = world
    await _service(platform, count=2)
    await reconciler.reconcile("svc")
    docs = await _instances(platform)
    assert len(docs) == 2 and all(d["status"] == "ready" for d in docs)
    # Each instance became routable (ready) only after it had been started and probed.
    for doc in docs:
        start = platform.log.index(("start", doc["_id"], "s3://b/v1/"))
        ready = next(i for i, (k, *rest) in enumerate(platform.log)
                     if k == "event" and isinstance(rest[0], InstanceChanged) and rest[0].instance_id == doc["_id"]
                     and rest[0].status == "ready")
        assert start < ready
    report = _reports(platform)[-1]
    assert (report.status, report.ready_instances, report.generation) == ("running", 2, 1)


async def test_scale_down_drains_before_stopping_and_keeps_the_rest(world):
    platform, backend, reconciler = world
    await _service(platform, count=3)
    await reconciler.reconcile("svc")
    await _update(platform, instance_count=1)
    await reconciler.reconcile("svc")
    stopped = [entry[1] for entry in platform.log if entry[0] == "stop"]
    assert len(stopped) == 2
    for instance_id in stopped:
        draining_at = next(i for i, (k, *rest) in enumerate(platform.log) if k == "event"
                           and isinstance(rest[0], InstanceChanged) and rest[0].instance_id == instance_id
                           and rest[0].status == "draining")
        assert draining_at < platform.log.index(("stop", instance_id))
    assert len(await _instances(platform)) == 1 and len(backend.running) == 1
    assert _reports(platform)[-1].status == "running" and _reports(platform)[-1].generation == 2


async def test_scale_up_adds_instances_without_touching_the_running_ones(world):
    platform, backend, reconciler = world
    await _service(platform, count=1)
    await reconciler.reconcile("svc")
    first = set(backend.running)
    await _update(platform, instance_count=3)
    await reconciler.reconcile("svc")
    assert first <= set(backend.running) and len(backend.running) == 3
    assert not [e for e in platform.log if e[0] == "stop"]


async def test_rolling_upgrade_starts_each_new_instance_before_retiring_an_old_one(world):
    platform, backend, reconciler = world
    await _service(platform, count=2, version="v1")
    await reconciler.reconcile("svc")
    old = set(backend.running)
    await _update(platform, model={"version_id": "v2", "storage_uri": "s3://b/v2/", "template_id": "x"})
    await reconciler.reconcile("svc")
    actions = [(e[0], e[1]) for e in platform.log if e[0] in ("start", "stop")][2:]
    assert [a for a, _ in actions] == ["start", "stop", "start", "stop"]
    assert {i for a, i in actions if a == "stop"} == old
    assert {d["version_id"] for d in await _instances(platform)} == {"v2"}
    # Capacity never dropped: before each old instance stopped, a new one had been reported ready.
    for position, (action, instance_id) in enumerate(actions):
        if action == "stop":
            new_started = [i for a, i in actions[:position] if a == "start"]
            assert all(i in _instance_events(platform, "ready") for i in new_started)
    assert _reports(platform)[-1].status == "running"


async def test_instances_that_never_get_ready_make_the_service_failed(world):
    platform, backend, reconciler = world
    backend.fail_starts = 10
    await _service(platform, count=1)
    await reconciler.reconcile("svc")
    assert len([e for e in platform.log if e[0] == "start"]) == SETTINGS.start_attempts
    report = _reports(platform)[-1]
    assert report.status == "failed" and "exited while loading" in report.message
    assert await _instances(platform) == []
    # The same generation is not retried by a resync; a new start (retry) is.
    await reconciler.resync()
    await reconciler.idle()
    assert len([e for e in platform.log if e[0] == "start"]) == SETTINGS.start_attempts


async def test_a_redelivered_start_request_does_not_start_a_failed_service_again(world):
    """Duplicate and reordered delivery (issue 18): the request event of a generation that already
    failed, delivered again (a consumer-group rewind), must not retry; a new request does."""
    platform, backend, reconciler = world
    reconciler.leading = True
    backend.fail_starts = 10
    await _service(platform, count=1)
    await reconciler.request("svc", retry=True, generation=1)      # ServiceDeployRequested
    await reconciler.idle()
    assert _reports(platform)[-1].status == "failed"
    starts = len([e for e in platform.log if e[0] == "start"])
    for generation in (1, 1):                                       # the same event, twice
        await reconciler.request("svc", retry=True, generation=generation)
        await reconciler.idle()
    assert len([e for e in platform.log if e[0] == "start"]) == starts
    # The user starts it again: a new generation, new attempts.
    await _update(platform, status="deploying")
    await reconciler.request("svc", retry=True, generation=2)
    await reconciler.idle()
    assert len([e for e in platform.log if e[0] == "start"]) == starts + SETTINGS.start_attempts


async def test_a_partial_start_is_an_alarm(world):
    platform, backend, reconciler = world
    await _service(platform, count=1)
    await reconciler.reconcile("svc")
    backend.fail_starts = 10
    await _update(platform, instance_count=2)
    await reconciler.reconcile("svc")
    report = _reports(platform)[-1]
    assert report.status == "alarm" and report.ready_instances == 1


async def test_stop_and_delete_stop_every_instance(world):
    platform, backend, reconciler = world
    await _service(platform, count=2)
    await reconciler.reconcile("svc")
    await _update(platform, desired="stopped")
    await reconciler.reconcile("svc")
    assert backend.running == {} and await _instances(platform) == []
    assert _reports(platform)[-1].status == "stopped"
    await _update(platform, desired="running")
    await reconciler.reconcile("svc")
    assert len(backend.running) == 2
    await platform.mongo[SERVICES].delete_one({"_id": "svc"})
    await reconciler.reconcile("svc")
    assert backend.running == {} and await _instances(platform) == []


async def test_health_checks_raise_and_clear_the_alarm_and_replace_dead_instances(world):
    platform, backend, reconciler = world
    await _service(platform, count=2)
    await reconciler.reconcile("svc")
    sick = next(iter(backend.running))
    backend.running[sick]["sick"] = True
    for _ in range(SETTINGS.unhealthy_after):
        await reconciler.check_health()
    assert _reports(platform)[-1].status == "alarm"
    assert sick in _instance_events(platform, "unhealthy")
    backend.running[sick]["sick"] = False
    await reconciler.check_health()
    assert _reports(platform)[-1].status == "running"
    # A crashed instance is replaced.
    del backend.running[sick]
    await reconciler.check_health()
    await reconciler.idle()
    assert len(backend.running) == 2 and sick not in backend.running
    assert sick in _instance_events(platform, "failed")


async def test_a_nudge_during_a_pass_runs_another_pass(world):
    platform, backend, reconciler = world
    await _service(platform, count=1)
    reconciler.nudge("svc")
    await _update(platform, instance_count=2)
    reconciler.nudge("svc")
    await reconciler.idle()
    assert len(backend.running) == 2
