"""The local job-process executor: JSON both ways, questions and answers, failures, reuse, abandon."""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import psutil
import pytest

from services.lib.jobs.child import resolve
from services.lib.jobs.executor import Work, WorkFailed
from services.lib.jobs.local_process import LocalProcessExecutor


def work(tmp_path: Path, entry: str, **args) -> Work:
    return Work(entry=f"tests.unit.job_entries:{entry}", args=args, workdir=tmp_path / "proc")


@pytest.fixture
def executor():
    ex = LocalProcessExecutor(entry_package="tests")
    yield ex
    ex.close()


def test_only_functions_of_the_named_package_can_be_called():
    with pytest.raises(ValueError, match="not a function of the services package"):
        resolve("os:system")
    with pytest.raises(ValueError, match="not a function of the services package"):
        resolve("tests.unit.job_entries:echo")
    with pytest.raises(ValueError, match="not a function of the services package"):
        resolve("services.lib.jobs.child")   # a module, no function


def test_the_entries_of_every_job_kind_resolve():
    from services.compression.work import COMPRESS
    from services.registry.work import VALIDATE
    from services.tuning.work import MERGE, TRAIN

    for entry in (COMPRESS, VALIDATE, MERGE, TRAIN):
        assert callable(resolve(entry)), entry


async def test_work_runs_in_another_process_without_credentials_and_its_messages_arrive(executor, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("MAAS_S3_SECRET_KEY", "platform-secret")
    heard = []
    result = await executor.run(work(tmp_path, "echo", name="ada"), lambda kind, data: heard.append((kind, data)))
    assert result["name"] == "ada" and result["pid"] != os.getpid()
    assert result["env_secret"] is None
    assert heard == [("log", {"line": "hello ada"})]
    assert oct((tmp_path / "proc").stat().st_mode & 0o777) == "0o700"


async def test_questions_get_the_listeners_answers(executor, tmp_path):
    def listener(kind, data):
        if kind == "stop?":
            return len(progress) >= 5
        progress.append(data["done"])
    progress: list[int] = []
    assert await executor.run(work(tmp_path, "count_until_stopped"), listener) == 5
    assert progress == [1, 2, 3, 4, 5]


async def test_an_input_error_and_a_crash_are_told_apart(executor, tmp_path):
    with pytest.raises(WorkFailed) as failed:
        await executor.run(work(tmp_path, "fail_on_input"), lambda *_: None)
    assert failed.value.input_error and failed.value.kind == "ValueError"
    assert failed.value.message == "learning_rate: must be a finite number >= 0"
    with pytest.raises(WorkFailed) as failed:
        await executor.run(work(tmp_path, "crash"), lambda *_: None)
    assert not failed.value.input_error and str(failed.value) == "RuntimeError: boom"
    assert "raise RuntimeError" in failed.value.detail


async def test_a_dying_process_is_reported_with_its_exit_code(executor, tmp_path):
    with pytest.raises(WorkFailed) as failed:
        await executor.run(work(tmp_path, "die"), lambda *_: None)
    assert failed.value.kind == "ProcessExited" and "code 3" in failed.value.message


async def test_only_json_crosses(executor, tmp_path):
    assert await executor.run(work(tmp_path, "send_a_set"), lambda *_: None) == {"tags": ["a"]}
    with pytest.raises(WorkFailed, match="cannot cross to or from a job process"):
        await executor.run(work(tmp_path, "send_an_object"), lambda *_: None)


def _job_processes() -> list[psutil.Process]:
    """This process's job children (the session may also have started other children: servers)."""
    found = []
    for child in psutil.Process().children():
        try:
            if "services.lib.jobs.child" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:   # ended while we looked
            pass
    return found


async def test_a_cancelled_run_kills_its_process(executor, tmp_path):
    started = threading.Event()
    task = asyncio.create_task(executor.run(work(tmp_path, "sleep_forever"), lambda kind, data: started.set()))
    await asyncio.to_thread(started.wait, 60)
    children = _job_processes()
    assert len(children) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gone, alive = await asyncio.to_thread(psutil.wait_procs, children, 15)
    assert not alive


async def test_a_reusing_executor_serves_the_next_work_in_the_same_process(tmp_path):
    executor = LocalProcessExecutor(entry_package="tests", reuse_processes=True)
    try:
        first = await executor.run(work(tmp_path, "echo", name="one"), lambda *_: None)
        with pytest.raises(WorkFailed):
            await executor.run(work(tmp_path, "crash"), lambda *_: None)   # an error keeps the process
        second = await executor.run(work(tmp_path, "echo", name="two"), lambda *_: None)
        assert first["pid"] == second["pid"]
        with pytest.raises(WorkFailed):
            await executor.run(work(tmp_path, "die"), lambda *_: None)     # a dead one is replaced
        third = await executor.run(work(tmp_path, "echo", name="three"), lambda *_: None)
        assert third["pid"] != first["pid"]
    finally:
        executor.close()
    assert not _job_processes()
