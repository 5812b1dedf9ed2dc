"""A job's storage step waits out object storage (or MongoDB) being unreachable instead of failing the
job (found by tests/integration/test_fault_matrix.py: checkpoint uploads, weight validations)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymongo.errors import ServerSelectionTimeoutError
from urllib3.exceptions import MaxRetryError

from services.lib.jobs import outages
from services.lib.jobs.runner import Run


@pytest.fixture
async def run(monkeypatch, tmp_path: Path) -> Run:
    async def no_wait(_seconds):
        return None
    monkeypatch.setattr(outages.asyncio, "sleep", no_wait)
    return Run(job={"_id": "j1", "tenant_id": "t1"}, run_id="r1", worker_id="w1", work=tmp_path,
               loop=asyncio.get_running_loop())


def _failing(times: int, exc: Exception):
    calls = []

    async def step():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "done"
    return step, calls


@pytest.mark.parametrize("exc", [MaxRetryError(None, "/bucket/key", "connection refused"),
                                 ServerSelectionTimeoutError("no servers")])
async def test_a_step_is_tried_again_while_its_server_is_unreachable(run, exc):
    step, calls = _failing(3, exc)
    assert await outages.through_outages(run, step) == "done"
    assert len(calls) == 4
    assert sum("unavailable right now" in line for line in run.lines) == 1   # said once, not per try


async def test_other_errors_fail_at_once(run):
    step, calls = _failing(1, ValueError("bad key"))
    with pytest.raises(ValueError):
        await outages.through_outages(run, step)
    assert len(calls) == 1


async def test_an_outage_longer_than_the_patience_fails_the_step(run):
    step, calls = _failing(100, MaxRetryError(None, "/bucket/key", "connection refused"))
    with pytest.raises(MaxRetryError):
        await outages.through_outages(run, step, patience=5)
    assert 1 < len(calls) < 100


async def test_a_stopped_run_stops_waiting(run):
    run.stop.set()
    step, calls = _failing(100, MaxRetryError(None, "/bucket/key", "connection refused"))
    with pytest.raises(MaxRetryError):
        await outages.through_outages(run, step)
    assert len(calls) == 1
