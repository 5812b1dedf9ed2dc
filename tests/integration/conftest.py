"""Helpers of the integration tests. The ``running_platform``, ``api`` and ``anonymous`` fixtures live in
tests/conftest.py (shared with the browser tests)."""
from __future__ import annotations

import asyncio


async def wait_for(predicate, *, timeout: float = 90, interval: float = 0.3):
    """Poll an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
