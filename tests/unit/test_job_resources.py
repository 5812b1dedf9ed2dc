"""The job engine's resource layer (services.lib.jobs.resources), the same for every kind of job: list,
detail, stop, continue and delete against an in-memory database, and the engine's ``unless_stopped``
that ends a job process as soon as its run is asked to stop.

The same HTTP behaviour with the real servers and workers: tests/integration/test_job_resources.py.
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from mongomock_motor import AsyncMongoMockClient

from services.lib.common.errors import ApiError
from services.compression.jobs import RESOURCE as COMPRESSION
from services.lib.jobs import resources as uc
from services.lib.jobs.executor import JobCancelled, Work
from services.lib.jobs.local_process import LocalProcessExecutor
from services.lib.jobs.runner import Run, unless_stopped
from services.lib.common.jobs import now
from services.tuning.jobs import RESOURCE as TUNING

KINDS = [TUNING, COMPRESSION]


class FakeUow:
    def __init__(self, platform):
        self.platform, self.session = platform, None

    def collection(self, name):
        return self.platform.mongo[name]

    def emit(self, data, *, tenant_id, subject):
        self.platform.events.append((type(data).__name__, data.model_dump(), tenant_id, subject))


class FakeMongo:
    def __init__(self):
        self.db = AsyncMongoMockClient(tz_aware=True)["maas"]   # as the platform's client

    def __getitem__(self, name):
        return self.db[name]


class FakePlatform:
    def __init__(self):
        self.mongo = FakeMongo()
        self.events: list[tuple] = []

    @asynccontextmanager
    async def _uow(self):
        yield FakeUow(self)

    def uow(self):
        return self._uow()

    def types(self) -> list[str]:
        return [e[0] for e in self.events]


def a_job(kind, *, job_id: str, status: str, tenant_id: str = "t1", name: str = "job", **extra) -> dict:
    """The fields the resource layer and both kinds' views and hooks read."""
    at = now()
    return {"_id": job_id, "tenant_id": tenant_id, "name": name, "status": status, "status_message": None,
            "history": [{"status": status, "at": at, "message": None}],
            "source": {"kind": "model", "model_id": "m1", "version_id": "v1"},
            "notification": {"enabled": True, "topic_name": "alerts", "events": ["stopped"]},
            "progress": {"iteration": 3}, "checkpoints": [], "restart_count": 0, "attempt": 1,
            "strategy": "awq-w4a16", "run": None, "log_seq": 0, "created_at": at, "updated_at": at, **extra}


async def insert(platform, kind, *jobs: dict) -> None:
    for job in jobs:
        await platform.mongo[kind.jobs].insert_one(job)


@pytest.fixture
def platform():
    return FakePlatform()


# ---- list and detail -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.task_kind)
async def test_list_is_the_callers_only_newest_first_and_matches_part_of_the_name_literally(platform, kind):
    base = now()
    await insert(platform, kind,
                 a_job(kind, job_id="a", status="running", name="alpha.v1", created_at=base),
                 a_job(kind, job_id="b", status="completed", name="Alphax", created_at=base + timedelta(seconds=1)),
                 a_job(kind, job_id="c", status="running", name="alpha-other", tenant_id="t2"))
    listed = await uc.list_jobs(platform, kind, tenant_id="t1")
    assert listed["total"] == 2 and [j["id"] for j in listed["items"]] == ["b", "a"]
    assert all(j["history"] == [] and "tenant_id" not in j for j in listed["items"])
    # "." is a character of the name, not a pattern; the match ignores case.
    assert [j["id"] for j in (await uc.list_jobs(platform, kind, tenant_id="t1", name="A.V"))["items"]] == ["a"]
    assert [j["id"] for j in (await uc.list_jobs(platform, kind, tenant_id="t1", name="ALPHA"))["items"]] == ["b", "a"]
    assert (await uc.list_jobs(platform, kind, tenant_id="t1", status="completed"))["total"] == 1
    page = await uc.list_jobs(platform, kind, tenant_id="t1", offset=1, limit=1)
    assert page["total"] == 2 and [j["id"] for j in page["items"]] == ["a"]
    # A kind's own filter narrows, never widens past the caller's account.
    filtered = await uc.list_jobs(platform, kind, tenant_id="t1", filters={"tenant_id": "t2", "name": "alpha-other"})
    assert filtered["total"] == 0
    with pytest.raises(ApiError) as error:
        await uc.list_jobs(platform, kind, tenant_id="t1", status="sleeping")
    assert error.value.status == 400 and "status: must be one of" in error.value.message


async def test_compression_lists_by_strategy_and_tuning_has_no_extra_filter():
    from services.compression.models import Strategy

    assert await COMPRESSION.list_filters(Strategy.awq_w4a16) == {"strategy": "awq-w4a16"}
    assert await COMPRESSION.list_filters(None) == {} and await TUNING.list_filters() == {}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.task_kind)
async def test_another_accounts_job_is_a_404_for_every_use_case(platform, kind):
    await insert(platform, kind, a_job(kind, job_id="j", status="running", tenant_id="t2"))
    for use_case in (uc.get_job, uc.stop_job, uc.continue_job, uc.delete_job):
        with pytest.raises(ApiError) as error:
            await use_case(platform, kind, tenant_id="t1", job_id="j")
        assert error.value.status == 404 and error.value.message == f"{kind.label} 'j' does not exist"
    assert (await platform.mongo[kind.jobs].find_one({"_id": "j"}))["status"] == "running"
    assert platform.events == []


# ---- stop and continue ---------------------------------------------------------------------------

STOP_EVENT = {"tuning": "TuneStopped", "compression": "CompressionStopped"}
REQUEST_EVENT = {"tuning": "TuneRequested", "compression": "CompressionRequested"}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.task_kind)
async def test_stop_then_continue_moves_through_the_kinds_state_table_with_its_events(platform, kind):
    await insert(platform, kind, a_job(kind, job_id="j", status="running"))
    stopped = await uc.stop_job(platform, kind, tenant_id="t1", job_id="j")
    assert stopped["status"] == "stopped" and stopped["status_message"] == "stopped by the user"
    assert [h["status"] for h in stopped["history"]] == ["running", "stopped"]
    assert platform.types() == ["TaskRecordChanged", STOP_EVENT[kind.task_kind]]
    assert platform.events[-1][1]["reason"] == "user" and platform.events[-1][3] == f"{kind.path}/j"

    continued = await uc.continue_job(platform, kind, tenant_id="t1", job_id="j")
    assert continued["status"] == kind.rules.resumed.value
    assert [h["status"] for h in continued["history"]] == ["running", "stopped", kind.rules.resumed.value]
    name, data, tenant, _ = platform.events[-1]
    assert name == REQUEST_EVENT[kind.task_kind] and data["reason"] == "continued" and tenant == "t1"


async def test_a_continued_compression_says_it_starts_again_with_a_fresh_budget_of_runs(platform):
    await insert(platform, COMPRESSION, a_job(COMPRESSION, job_id="j", status="stopped", attempt=2,
                                              progress={"fraction": 0.4, "step": "awq search"}))
    continued = await uc.continue_job(platform, COMPRESSION, tenant_id="t1", job_id="j")
    assert "no checkpoints" in continued["status_message"] and "from the beginning" in continued["status_message"]
    assert continued["attempt"] == 0 and continued["progress"] == {"fraction": 0.0, "step": "queued"}
    assert platform.events[-1][1]["attempt"] == 1


async def test_a_continued_tuning_job_names_its_checkpoint(platform):
    await insert(platform, TUNING, a_job(TUNING, job_id="j", status="stopped", unconditional_streak=2,
                                         checkpoints=[{"iteration": 4, "format": "lora", "uri": "s3://b/c/",
                                                       "state_uri": "s3://m/s/", "created_at": now()}]))
    continued = await uc.continue_job(platform, TUNING, tenant_id="t1", job_id="j")
    assert continued["status_message"] == "continued from the checkpoint at iteration 4"
    assert continued["unconditional_streak"] == 0


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.task_kind)
async def test_stopping_a_finished_job_or_continuing_a_running_one_is_a_409_naming_the_rule(platform, kind):
    await insert(platform, kind, a_job(kind, job_id="done", status="completed", name="finished"),
                 a_job(kind, job_id="busy", status="running", name="busy"))
    with pytest.raises(ApiError) as error:
        await uc.stop_job(platform, kind, tenant_id="t1", job_id="done")
    allowed = {"tuning": "creating, waiting or running", "compression": "pending or running"}[kind.task_kind]
    assert error.value.status == 409 and error.value.code == "invalid_state"
    assert error.value.message == f"{kind.label} 'finished' is completed; only {allowed} jobs can be stopped"
    with pytest.raises(ApiError) as error:
        await uc.continue_job(platform, kind, tenant_id="t1", job_id="busy")
    assert error.value.status == 409
    assert error.value.message == f"{kind.label} 'busy' is running; only stopped jobs can be continued"
    assert platform.events == []   # nothing half-written


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.task_kind)
async def test_continue_waits_until_the_stopped_run_has_let_the_job_go(platform, kind):
    live = {"run_id": "r1", "worker_id": "w", "active": True, "lease_until": now() + timedelta(seconds=60)}
    await insert(platform, kind, a_job(kind, job_id="j", status="stopped", run=live))
    with pytest.raises(ApiError) as error:
        await uc.continue_job(platform, kind, tenant_id="t1", job_id="j")
    assert error.value.status == 409 and error.value.code == "still_stopping"
    assert error.value.message.startswith(f"{kind.label} 'job' {kind.rules.still_stopping}")
    # Its worker vanished: once the lease has expired the job can be continued.
    await platform.mongo[kind.jobs].update_one({"_id": "j"}, {"$set": {"run.lease_until": now() - timedelta(seconds=1)}})
    assert (await uc.continue_job(platform, kind, tenant_id="t1", job_id="j"))["status"] == kind.rules.resumed.value


# ---- delete --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.task_kind)
async def test_delete_removes_the_job_and_only_its_own_logs_and_tells_the_others(platform, kind):
    await insert(platform, kind, a_job(kind, job_id="j", status="running"))
    logs = platform.mongo[kind.logs.logs]
    await logs.insert_many([{"job_id": "j", "tenant_id": "t1", "seq": 1, "line": "mine"},
                            {"job_id": "other", "tenant_id": "t1", "seq": 1, "line": "another job's"}])
    removed: list[str] = []
    if kind.after_delete is not None:   # tuning also removes its platform-owned files
        class Store:
            async def remove_prefix(self, path):
                removed.append(path.uri)
        platform.store = Store()
    await uc.delete_job(platform, kind, tenant_id="t1", job_id="j")
    assert await platform.mongo[kind.jobs].find_one({"_id": "j"}) is None
    assert [d["line"] async for d in logs.find({})] == ["another job's"]
    deleted = {"tuning": "TuneDeleted", "compression": "CompressionDeleted"}[kind.task_kind]
    assert sorted(platform.types()) == sorted(["TaskRecordChanged", "NotificationRuleChanged", deleted])
    record = next(e for e in platform.events if e[0] == "TaskRecordChanged")[1]
    rule = next(e for e in platform.events if e[0] == "NotificationRuleChanged")[1]
    assert record["removed"] and rule["removed"] and rule["subject"] == f"{kind.path}/j"
    assert removed == (["s3://maas-tuning/t1/j/"] if kind is TUNING else [])


# ---- the engine ends a stopped run's job process ---------------------------------------------------

def _run(tmp_path: Path) -> Run:
    return Run(job={"_id": "j", "tenant_id": "t1"}, run_id="r", worker_id="w", work=tmp_path,
               loop=asyncio.get_running_loop())


def _job_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "services.lib.jobs.child" in " ".join(p.cmdline())]


async def test_a_stop_request_ends_the_job_process_at_once(tmp_path):
    executor = LocalProcessExecutor(entry_package="tests")
    try:
        run, started = _run(tmp_path), threading.Event()
        work = Work(entry="tests.unit.job_entries:sleep_forever", args={}, workdir=tmp_path / "proc")
        task = asyncio.create_task(unless_stopped(run, executor.run(work, lambda kind, data: started.set()),
                                                  poll_seconds=0.05))
        await asyncio.to_thread(started.wait, 60)
        children = _job_processes()
        assert len(children) == 1
        run.request_stop("lost")   # what the heartbeat does when the job is no longer running
        with pytest.raises(JobCancelled, match="stopped"):
            await task
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 15)
        assert not alive
    finally:
        executor.close()


async def test_unless_stopped_returns_the_result_and_a_cancelled_caller_cancels_the_work(tmp_path):
    run = _run(tmp_path)

    async def quick():
        return 42
    assert await unless_stopped(run, quick(), poll_seconds=0.01) == 42

    cancelled = asyncio.Event()

    async def endless():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
    task = asyncio.create_task(unless_stopped(run, endless(), poll_seconds=0.01))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
