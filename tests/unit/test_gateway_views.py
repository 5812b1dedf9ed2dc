"""The gateway's read-through views: bounded staleness, refreshed in the background, not on calls."""
from __future__ import annotations

import pytest

from services.gateway import views
from services.gateway.views import ReadThroughView


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(views.time, "monotonic", c)
    return c


class Source:
    """A database row whose reads are counted."""
    def __init__(self, value):
        self.value, self.reads = value, 0

    async def load(self):
        self.reads += 1
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


async def test_a_value_is_read_once_then_again_only_when_too_old(clock):
    view, row = ReadThroughView(max_age=1.0), Source("v1")
    assert await view.get("k", row.load) == "v1"
    clock.now += 0.9
    row.value = "v2"
    assert await view.get("k", row.load) == "v1" and row.reads == 1
    clock.now += 0.2   # 1.1 s old: past max_age, the call re-reads
    assert await view.get("k", row.load) == "v2" and row.reads == 2
    assert await view.get("k", row.load, fresh=True) == "v2" and row.reads == 3


async def test_the_refresher_keeps_used_entries_fresh_so_calls_never_read(clock):
    view, row = ReadThroughView(max_age=1.0), Source(1)
    await view.get("k", row.load)
    for step in range(2, 10):
        clock.now += 0.25
        await view.refresh_due()   # the background task, every max_age / 4
        row.value = step
        clock.now += 0.25
        await view.refresh_due()
        reads = row.reads
        value = await view.get("k", row.load)
        assert row.reads == reads            # the call itself did not wait on the database
        assert value == step                 # ... and saw the row as of at most max_age ago


async def test_unused_entries_are_forgotten_and_failed_refreshes_dropped(clock):
    view = ReadThroughView(max_age=1.0, keep=10.0)
    idle, broken = Source("idle"), Source("ok")
    await view.get("idle", idle.load)
    await view.get("broken", broken.load)
    clock.now += 0.6
    broken.value = ConnectionError("db down")
    await view.refresh_due()
    broken.value = "back"
    assert await view.get("broken", broken.load) == "back"   # dropped, so the call re-read it
    clock.now += 11
    await view.refresh_due()
    reads = idle.reads
    await view.get("idle", idle.load)
    assert idle.reads == reads + 1   # it had been forgotten, not refreshed forever


async def test_forget_makes_the_next_call_read(clock):
    view, row = ReadThroughView(max_age=60), Source("a")
    await view.get("k", row.load)
    row.value = "b"
    view.forget("k")
    assert await view.get("k", row.load) == "b"


async def test_a_view_that_does_not_remember_missing_values_reads_them_on_every_call(clock):
    view, row = ReadThroughView(max_age=1.0, remember_missing=False), Source(None)
    assert await view.get("k", row.load) is None
    assert await view.get("k", row.load) is None and row.reads == 2
    row.value = "v1"
    assert await view.get("k", row.load) == "v1" and row.reads == 3
    row.value = None   # deleted meanwhile: the background refresh drops it instead of keeping None
    clock.now += 0.6
    await view.refresh_due()
    assert await view.get("k", row.load) is None and row.reads == 5
