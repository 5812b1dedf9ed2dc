"""Tuning rules without servers: request fields (table 6-4), state machine, iterations and estimate (6-5/6-6)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.lib.catalog.templates import default_catalog
from services.tuning import estimate as est
from services.tuning.models import JobCreate, JobStatus
from services.tuning.states import STOPPABLE, TRANSITIONS, allowed_from, can_transition, may_auto_restart

BASE = {"name": "sft-job_1", "source": {"model_id": "m1"}, "tune_type": "lora", "output_model_name": "tuned.v1",
        "dataset_format": "alpaca", "dataset_path": "bucket/data.jsonl"}


def errors(**changes) -> list[str]:
    body = {**BASE, **changes}
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(body)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


def test_a_minimal_request_gets_the_guide_defaults():
    job = JobCreate.model_validate(BASE)
    assert job.hyperparameters.learning_rate == 2e-5 and job.hyperparameters.checkpoint_count == 1
    assert job.auto_restart.max_restarts == 3 and not job.auto_restart.enabled
    assert not job.permanent_log.enabled and not job.auto_stop.enabled and job.node_count == 1


@pytest.mark.parametrize("name", ["a", "任务一", "Job-1_x", "x" * 64])
def test_job_names_that_pass(name):
    assert JobCreate.model_validate({**BASE, "name": name}).name == name


@pytest.mark.parametrize("name", ["", "1job", "-job", "job.v1", "job 1", "x" * 65])
def test_job_names_that_fail(name):
    [message] = errors(name=name)
    assert message.startswith("name: ") and "must be 1-64 characters" in message


def test_output_model_names_may_contain_a_dot_but_follow_the_name_rule():
    assert JobCreate.model_validate(BASE).output_model_name == "tuned.v1"
    assert errors(output_model_name="9lives")[0].startswith("output_model_name: ")


def test_description_is_at_most_1000_characters():
    assert JobCreate.model_validate({**BASE, "description": "d" * 1000})
    assert errors(description="d" * 1001)[0].startswith("description: ")


@pytest.mark.parametrize("lr", [0, -1e-5, 0.1000001, 1])
def test_learning_rate_range(lr):
    [message] = errors(hyperparameters={"learning_rate": lr})
    assert message == f"hyperparameters.learning_rate: Value error, must be in (0, 0.1]; got {float(lr)}"


def test_learning_rate_bounds_included():
    assert JobCreate.model_validate({**BASE, "hyperparameters": {"learning_rate": 0.1}})


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("checkpoint_count", 0)])
def test_counts_are_at_least_one(field, value):
    [message] = errors(hyperparameters={field: value})
    assert message.startswith(f"hyperparameters.{field}: ") and ">= 1" in message


@pytest.mark.parametrize("restarts", [0, 129])
def test_max_restarts_range(restarts):
    [message] = errors(auto_restart={"enabled": True, "max_restarts": restarts})
    assert "auto_restart.max_restarts must be between 1 and 128" in message


def test_switches_need_their_settings():
    assert "permanent_log.path is required" in errors(permanent_log={"enabled": True})[0]
    assert "auto_stop.hours must be in (0, 720]" in errors(auto_stop={"enabled": True})[0]
    assert "topic_name is required when event notification is enabled" in errors(notification={"enabled": True})[0]
    assert "events must name at least one event kind" in errors(
        notification={"enabled": True, "topic_name": "alerts"})[0]


def test_source_is_either_a_model_or_a_template():
    assert "either model_id" in errors(source={})[0]
    assert "either model_id" in errors(source={"model_id": "m", "template_id": "t"})[0]


def test_tune_type_is_one_of_the_three():
    assert errors(tune_type="qlora")[0].startswith("tune_type: ")


# --- state machine -------------------------------------------------------------------------------

def test_only_the_guides_transitions_exist():
    assert can_transition("creating", "waiting") and can_transition("waiting", "running")
    assert can_transition("running", "completed") and can_transition("stopped", "creating")
    assert can_transition("running", "waiting")           # auto-restart
    assert not can_transition("completed", "running") and not can_transition("failed", "creating")
    assert not can_transition("stopped", "running") and not can_transition("creating", "completed")
    assert TRANSITIONS[JobStatus.completed] == TRANSITIONS[JobStatus.failed] == frozenset()


def test_stop_is_allowed_from_creating_waiting_and_running_only():
    assert STOPPABLE == {JobStatus.creating, JobStatus.waiting, JobStatus.running}
    assert sorted(allowed_from(JobStatus.stopped)) == ["creating", "running", "waiting"]
    assert allowed_from(JobStatus.creating) == ["stopped"]


# --- iterations and estimate ------------------------------------------------------------------------

def test_iterations_follow_the_guides_example():
    assert est.iterations(3200, 32, 2) == 200          # guide: 3200 samples, 100 per epoch, 2 epochs
    assert est.iterations(33, 32, 1) == 2              # a partial batch counts
    assert est.iterations(1024, 512, 3) == 6


def test_estimate_of_table_6_5():
    template = default_catalog().get("qwen2-7b")
    low, high = template.tuning_throughput["lora"].low, template.tuning_throughput["lora"].high
    result = est.estimate(params_billion=7, throughput=(low, high), global_batch_size=32, iterations=200,
                          cards=2, nodes=1)
    coefficient = 32 * 4096 / 3600
    assert result.coefficient == pytest.approx(36.41, abs=0.01)
    assert result.min_hours == pytest.approx(coefficient * 200 / (2 * high) + 0.15, abs=1e-3)
    assert result.max_hours == pytest.approx(coefficient * 200 / (2 * low) + 0.15, abs=1e-3)
    assert result.min_hours < result.max_hours


def test_the_1k_templates_use_512_by_1024():
    template = default_catalog().get("qwen2-72b-1k")
    assert template.global_batch_size == 512
    result = est.estimate(params_billion=72, throughput=(300, 400), global_batch_size=512, iterations=10,
                          cards=8, nodes=2)
    assert result.coefficient == pytest.approx(145.64, abs=0.01) and result.prepost_hours == 1.35


def test_pre_and_post_processing_time_by_size():
    assert [est.prepost_hours(p) for p in (0.135, 7, 9, 14, 32, 70, 110)] == [0.15, 0.15, 0.25, 0.25, 0.58, 1.35, 1.35]
    assert est.prepost_hours(None) is None


def test_no_estimate_without_throughput_figures():
    assert est.estimate(params_billion=None, throughput=None, global_batch_size=32, iterations=5, cards=1,
                        nodes=1) is None


def test_auto_restart_policy():
    on = {"enabled": True, "max_restarts": 3, "unconditional": False}
    assert may_auto_restart(on, restarts=0, streak=0, environmental=True)
    assert not may_auto_restart(on, restarts=3, streak=0, environmental=True)       # max reached
    assert not may_auto_restart(on, restarts=0, streak=0, environmental=False)      # a training error
    assert not may_auto_restart({**on, "enabled": False}, restarts=0, streak=0, environmental=True)
    unconditional = {**on, "max_restarts": 10, "unconditional": True}
    assert may_auto_restart(unconditional, restarts=2, streak=2, environmental=False)
    assert not may_auto_restart(unconditional, restarts=3, streak=3, environmental=False)   # 3 in a row
    assert may_auto_restart(unconditional, restarts=5, streak=0, environmental=False)       # progress reset it


def test_environment_failures_are_told_apart_from_training_errors():
    from minio.error import S3Error
    from pymongo.errors import AutoReconnect

    from services.tuning.worker import _describe, _environmental

    assert _environmental(AutoReconnect("db gone")) and _environmental(ConnectionResetError())
    assert _environmental(S3Error("InternalError", "x", "r", "h", "i", None))
    assert not _environmental(ValueError("resume_from: different data")) and not _environmental(RuntimeError("nan"))
    assert not _environmental(OSError("Unable to load weights"))
    assert _describe(ValueError("examples[3].messages: bad")) == "examples[3].messages: bad"
    assert _describe(RuntimeError("boom")) == "RuntimeError: boom"
