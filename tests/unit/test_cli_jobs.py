"""The job commands every kind shares (`maas tune|compress list|show|watch|logs|stop|continue|delete`),
run for both kinds against a faked API: the calls they make, what they print, their exit status."""
from __future__ import annotations

import json

import pytest

from services.apps.cli import compress_cmds, jobs_cmds, tuning_cmds
from tests.unit.cli_fakes import FakeApi, api, maas, no_sleep  # noqa: F401 (api is a fixture)

CREATED = "2026-12-06T10:00:00Z"


def tuning_job(status: str, **extra) -> dict:
    return {"id": "j1", "name": "job-1", "status": status, "status_message": None, "created_at": CREATED,
            "source": {"model_id": "m1", "model_name": "my-qwen", "version_number": 2}, "tune_type": "lora",
            "hyperparameters": {"epochs": 3, "iterations": 6, "learning_rate": 0.05},
            "dataset": {"path": "maas-t/datasets/a.jsonl", "format": "alpaca", "sample_count": 64},
            "progress": {"iteration": 4, "total_iterations": 6, "lm_loss": 1.25},
            "output": {"model_name": "my-qwen-lora", "model_id": None, "path": "maas-t/tuning/j1"},
            "estimate": None, "checkpoints": [{"iteration": 2, "format": "hf", "path": "maas-t/tuning/j1/iter2",
                                                "created_at": CREATED}], **extra}


def compression_job(status: str, **extra) -> dict:
    return {"id": "j1", "name": "job-1", "status": status, "status_message": None, "created_at": CREATED,
            "source": {"model_id": "m1", "model_name": "my-qwen"}, "strategy": "smoothquant-w8a8",
            "params": {"alpha": 0.5}, "progress": {"fraction": 0.5, "step": "calibrating"},
            "output": {"model_name": "my-qwen-sq", "model_id": None, "path": "maas-t/compression/j1"},
            "metrics": {"size_before_bytes": 4096, "size_after_bytes": 1024, "size_ratio": 0.25,
                        "perplexity_before": 10.0, "perplexity_after": 10.5, "perplexity_ratio": 1.05},
            "estimate": {"text": "about 5 minutes"}, **extra}


class Kind:
    """One job kind as the tests see it: its command group, its API collection and a job document."""

    def __init__(self, group: str, module, make, *, label: str, detail: str, listed: str):
        self.group, self.module, self.make = group, module, make
        self.jobs = f"/api/v1/{module.KIND.path}"
        self.label, self.detail, self.listed = label, detail, listed

    def job(self, status: str = "running", **extra) -> dict:
        return self.make(status, **extra)

    def __repr__(self) -> str:
        return self.group


TUNE = Kind("tune", tuning_cmds, tuning_job, label="tuning job", detail="alpaca, 64 samples", listed="lora")
COMPRESS = Kind("compress", compress_cmds, compression_job, label="compression job", detail="×1.05",
                listed="smoothquant-w8a8")
KINDS = [pytest.param(TUNE, id="tune"), pytest.param(COMPRESS, id="compress")]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    no_sleep(monkeypatch, jobs_cmds.time, what="the watch")   # --watch


def one_job(api: FakeApi, kind: Kind, doc: dict) -> None:
    """The job j1 ('job-1'): found by id, and by name through the listing."""
    api.on("GET", f"{kind.jobs}/j1", doc)
    api.on("GET", kind.jobs, {"total": 1, "items": [doc]})


@pytest.mark.parametrize("kind", KINDS)
def test_list_prints_the_kinds_columns_and_passes_the_filters(api, kind):
    one_job(api, kind, kind.job("running"))
    shown = maas(kind.group, "list", "--status", "running")
    assert shown.exit_code == 0, shown.output
    assert "job-1" in shown.output and kind.listed in shown.output and kind.label.capitalize() in shown.output
    [call] = api.sent("GET", kind.jobs)
    assert call.params == {"status": "running", "limit": "200"}
    as_json = maas(kind.group, "list", "--json")
    assert json.loads(as_json.stdout)["items"][0]["id"] == "j1"


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_list_says_so(api, kind):
    api.on("GET", kind.jobs, {"total": 0, "items": []})
    assert f"no {kind.label}s" in maas(kind.group, "list").output


@pytest.mark.parametrize("kind", KINDS)
def test_show_finds_a_job_by_name_and_renders_the_kinds_detail(api, kind):
    one_job(api, kind, kind.job("running"))
    shown = maas(kind.group, "show", "job-1")
    assert shown.exit_code == 0, shown.output
    assert kind.detail in shown.output and "running" in shown.output
    assert api.sent("GET", f"{kind.jobs}/job-1") and api.sent("GET", f"{kind.jobs}/j1")
    missing = maas(kind.group, "show", "nope")
    assert missing.exit_code == 1 and f"{kind.label} 'nope' does not exist" in missing.output


@pytest.mark.parametrize("kind", KINDS)
def test_logs_search_prints_lines_literally(api, kind):
    one_job(api, kind, kind.job("running"))
    api.on("GET", f"{kind.jobs}/j1/logs", {"total": 1, "items": [{"n": 1, "line": "ERROR [bold]not markup[/bold]"}]})
    shown = maas(kind.group, "logs", "j1", "--search", "ERROR")
    assert shown.exit_code == 0, shown.output
    assert "ERROR [bold]not markup[/bold]" in shown.output
    [call] = api.sent("GET", f"{kind.jobs}/j1/logs")
    assert call.params == {"search": "ERROR", "limit": str(jobs_cmds.LOG_LIMIT)}


@pytest.mark.parametrize("kind", KINDS)
def test_logs_download_writes_the_whole_log(api, kind, tmp_path):
    one_job(api, kind, kind.job("completed"))
    api.on("GET", f"{kind.jobs}/j1/logs/download", text="line 1\nline 2\n")
    target = tmp_path / "job.log"
    done = maas(kind.group, "logs", "job-1", "--download", str(target))
    assert done.exit_code == 0, done.output
    assert target.read_text() == "line 1\nline 2\n" and not api.sent("GET", f"{kind.jobs}/j1/logs")


def test_only_tuning_reads_the_loss_from_its_logs(api):
    one_job(api, TUNE, TUNE.job("completed"))
    api.on("GET", f"{TUNE.jobs}/j1/logs", {"total": 2, "items": [
        {"line": " iteration        1/       6 | consumed samples: 32 | lm loss: 2.500000E+00 |"},
        {"line": " iteration        2/       6 | consumed samples: 64 | lm loss: 1.250000E+00 |"}]})
    loss = maas("tune", "logs", "job-1", "--loss", "--json")
    assert loss.exit_code == 0, loss.output
    assert json.loads(loss.stdout) == [{"iteration": 1, "lm_loss": 2.5}, {"iteration": 2, "lm_loss": 1.25}]
    assert api.sent("GET", f"{TUNE.jobs}/j1/logs")[0].params["search"] == "lm loss"
    assert maas("compress", "logs", "job-1", "--loss").exit_code == 2  # no such option


@pytest.mark.parametrize("kind", KINDS)
def test_stop_posts_to_the_jobs_stop_route(api, kind):
    one_job(api, kind, kind.job("running"))
    api.on("POST", f"{kind.jobs}/j1/stop", kind.job("stopped"))
    stopped = maas(kind.group, "stop", "job-1")
    assert stopped.exit_code == 0, stopped.output
    assert "job-1" in stopped.output and "stopped" in stopped.output
    assert len(api.sent("POST", f"{kind.jobs}/j1/stop")) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_stopping_an_ended_job_is_the_apis_conflict(api, kind):
    one_job(api, kind, kind.job("completed"))
    api.on("POST", f"{kind.jobs}/j1/stop", {"error": {"code": "conflict", "message": (
        "status: a completed job cannot be stopped")}}, status=409)
    refused = maas(kind.group, "stop", "job-1")
    assert refused.exit_code == 1 and "HTTP 409" in refused.output and "cannot be stopped" in refused.output


@pytest.mark.parametrize("kind", KINDS)
def test_continue_posts_and_can_watch_the_job_to_its_end(api, kind):
    one_job(api, kind, kind.job("stopped"))
    api.on("POST", f"{kind.jobs}/j1/continue", kind.job("pending"))
    continued = maas(kind.group, "continue", "job-1", "--json")
    assert continued.exit_code == 0, continued.output
    assert json.loads(continued.stdout)["status"] == "pending" and api.sent("POST", f"{kind.jobs}/j1/continue")

    done = kind.job("completed", output={"model_name": "out", "model_id": "m2", "path": "p"})
    api.on("GET", f"{kind.jobs}/j1", done)
    watched = maas(kind.group, "continue", "j1", "--watch")
    assert watched.exit_code == 0, watched.output
    assert "completed" in watched.output


@pytest.mark.parametrize("kind", KINDS)
def test_watch_of_a_failed_job_exits_1_with_its_message(api, kind):
    one_job(api, kind, kind.job("failed", status_message="out of memory"))
    failed = maas(kind.group, "watch", "job-1")
    assert failed.exit_code == 1 and "out of memory" in failed.output


@pytest.mark.parametrize("kind", KINDS)
def test_watch_ends_on_a_stopped_job(api, kind):
    one_job(api, kind, kind.job("stopped"))
    stopped = maas(kind.group, "watch", "job-1", "--json")
    assert stopped.exit_code == 0 and json.loads(stopped.stdout)["status"] == "stopped"
    assert len(api.sent("GET", f"{kind.jobs}/j1")) == 2  # the lookup by name, then the watch's one poll


@pytest.mark.parametrize("kind", KINDS)
def test_delete_needs_the_word_delete(api, kind):
    one_job(api, kind, kind.job("completed"))
    api.on("DELETE", f"{kind.jobs}/j1", status=204)
    kept = maas(kind.group, "delete", "job-1", input="no\n")
    assert kept.exit_code == 1 and "not deleted" in kept.output and not api.sent("DELETE", f"{kind.jobs}/j1")
    deleted = maas(kind.group, "delete", "job-1", input="DELETE\n")
    assert deleted.exit_code == 0 and f"deleted {kind.label} job-1" in deleted.output
    assert maas(kind.group, "delete", "j1", "--yes").exit_code == 0
    assert len(api.sent("DELETE", f"{kind.jobs}/j1")) == 2


def test_a_finished_compression_is_shown_in_full_a_tuning_in_one_line(api):
    done = {"model_name": "out", "model_id": "m2", "path": "p"}
    one_job(api, COMPRESS, COMPRESS.job("completed", output=done))
    assert "perplexity" in maas("compress", "watch", "job-1").output
    one_job(api, TUNE, TUNE.job("completed", output=done))
    tuned = maas("tune", "watch", "job-1").output
    assert "job-1: completed" in tuned and "learning rate" not in tuned
