"""A job's storage step waits out its server being briefly unreachable instead of failing the job.

`maas up` restarts a dead embedded server within seconds, and a production MongoDB or S3 fails over in
about as long: a tuning job that has trained for an hour must not fail because its checkpoint upload
met that moment (tests/integration/test_fault_matrix.py found it did). Only "the server cannot be
reached" (``services.lib.common.unavailable``) is waited out; every other error is raised at once.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.lib.common import unavailable
from services.lib.jobs.runner import Run

T = TypeVar("T")

OUTAGE_PATIENCE_S = 300.0   # past this, the step's error fails the job as before


async def through_outages(run: Run, step: Callable[[], Awaitable[T]], *, patience: float = OUTAGE_PATIENCE_S) -> T:
    """``step()``, tried again while the server it needs is unreachable (up to ``patience`` seconds,
    and not once the run is asked to stop). Each step must be safe to run again from its start
    (downloads overwrite, uploads put the same keys). The run's log says so once per step."""
    waited, delay = 0.0, 1.0
    while True:
        try:
            return await step()
        except Exception as exc:
            dependency = unavailable.dependency_of(exc)
            if dependency is None or waited >= patience or run.stop.is_set():
                raise
            if waited == 0:
                run.say(f"{unavailable.message(dependency)} ({type(exc).__name__}); waiting for it")
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 10.0)
