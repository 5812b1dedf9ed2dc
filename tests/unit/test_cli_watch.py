"""`--watch` on tuning and compression jobs: it ends once the job ended and its output model exists."""
from __future__ import annotations

import time

import pytest

from services.apps.cli import compress_cmds, output, tuning_cmds
from services.apps.cli.jobs_cmds import watch


class JobFeed:
    """A client whose GET answers the given job documents in turn (the last one from then on)."""

    def __init__(self, *docs: dict):
        self.docs, self.gets = list(docs), 0

    def get(self, path: str) -> dict:
        self.gets += 1
        return self.docs[min(self.gets, len(self.docs)) - 1]


def job(status: str, model_id: str | None = None) -> dict:
    return {"id": "j1", "name": "job-1", "status": status, "progress": {},
            "output": {"model_name": "out", "model_id": model_id}}


WATCHES = [pytest.param(compress_cmds.KIND, id="compress"), pytest.param(tuning_cmds.KIND, id="tune")]


@pytest.mark.parametrize("kind", WATCHES)
def test_watch_waits_for_the_registry_to_make_the_output_model(kind):
    feed = JobFeed(job("running"), job("completed"), job("completed"), job("completed", "m1"))
    ended = watch(feed, kind, "j1", quiet=True, interval=0)
    assert ended["output"]["model_id"] == "m1" and feed.gets == 4


@pytest.mark.parametrize("kind", WATCHES)
def test_a_model_the_registry_refused_ends_the_watch(kind):
    refused = job("completed")
    refused["output"]["error"] = "model_id: the model m9 no longer exists"
    feed = JobFeed(job("completed"), refused, job("completed", "m1"))
    assert watch(feed, kind, "j1", quiet=True, interval=0)["output"]["error"] and feed.gets == 2


@pytest.mark.parametrize("kind", WATCHES)
def test_a_failed_job_ends_the_watch_at_once(kind):
    feed = JobFeed(job("running"), job("failed"), job("completed", "m1"))
    assert watch(feed, kind, "j1", quiet=True, interval=0)["status"] == "failed" and feed.gets == 2


@pytest.mark.parametrize("kind", WATCHES)
def test_the_watch_gives_up_on_the_output_model_after_the_registration_wait(kind, monkeypatch):
    now = [0.0]  # a clock that only sleeping advances
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    monkeypatch.setattr(output, "REGISTRATION_WAIT_S", 1.0)
    feed = JobFeed(*[job("completed")] * 4, job("completed", "m1"))
    ended = watch(feed, kind, "j1", quiet=True, interval=0.75)
    assert ended["output"]["model_id"] is None and feed.gets == 3  # polls at 0, 0.75 and 1.5 s
