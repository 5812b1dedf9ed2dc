"""What a new user meets in the first ten minutes with `maas` (issue 20), against a faked API: claiming
the preset, chatting (answer length and a cut answer said), `models create -w` with a path that does not
exist, the hint after a 401, the first start's secrets, deploy/scale progress, a dataset smaller than one
global batch."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from rich.console import Console

from services.apps.cli import common, platform_cmds
from tests.unit.cli_fakes import FakeApi, api, maas, no_sleep  # noqa: F401 (api is a fixture)

PRESET = {"id": "ps1", "name": "smollm2-135m-instruct", "model_name": "SmolLM2-135M-Instruct", "status": "stopped",
          "max_model_len": 2048, "api_base": "/v1/infers/ps1/v1", "call_model": "smollm2-135m-instruct",
          "quota": {"claimed": False, "granted": 0, "remaining": 0}}
OTHER_PRESET = {**PRESET, "id": "ps2", "name": "other-preset", "call_model": "other-preset"}
CREATED = "2026-12-06T10:00:00Z"


def service(status: str = "running", ready: int = 1, count: int = 1, operation: str | None = None, **extra) -> dict:
    return {"id": "s1", "name": "my-svc", "status": status, "ready_instances": ready, "instance_count": count,
            "operation": operation, "message": None, "max_model_len": 4096, "api_base": "/v1/infers/s1/v1",
            "call_model": "my-svc", "model_name": "my-qwen", "version_number": 1, **extra}


def answer(content: str, finish_reason: str) -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "my-svc",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 512, "total_tokens": 517}}


def sse(*events: dict) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    no_sleep(monkeypatch, common.time)


# ------------------------------------------------------------------------------------ presets claim

def test_presets_claim_without_a_name_claims_the_only_preset(api):
    api.on("GET", "/api/v1/preset-services", {"items": [PRESET]})
    api.on("POST", "/api/v1/preset-services/ps1/claim", {"granted": 1_000_000, "remaining": 1_000_000}, status=201)
    claimed = maas("presets", "claim")
    assert claimed.exit_code == 0, claimed.output
    assert "claimed 1,000,000 free tokens of smollm2-135m-instruct" in claimed.output
    assert 'maas chat smollm2-135m-instruct "Hello!"' in claimed.output
    assert len(api.sent("POST", "/api/v1/preset-services/ps1/claim")) == 1


def test_presets_claim_without_a_name_lists_the_choices_when_there_are_several(api):
    api.on("GET", "/api/v1/preset-services", {"items": [PRESET, OTHER_PRESET]})
    refused = maas("presets", "claim")
    assert refused.exit_code == 1
    assert "one of smollm2-135m-instruct, other-preset" in refused.output and "field: service" in refused.output
    assert not [c for c in api.calls if c.method == "POST"]
    api.on("POST", "/api/v1/preset-services/ps2/claim", {"granted": 1_000_000}, status=201)
    assert maas("presets", "claim", "other-preset").exit_code == 0
    assert len(api.sent("POST", "/api/v1/preset-services/ps2/claim")) == 1


def test_presets_claim_of_something_else_names_the_presets(api):
    api.on("GET", "/api/v1/preset-services", {"items": [PRESET]})
    refused = maas("presets", "claim", "my-svc")
    assert refused.exit_code == 1 and "'my-svc' is not a preset service" in refused.output
    assert "smollm2-135m-instruct" in refused.output
    api.on("GET", "/api/v1/preset-services", {"items": []})
    none_yet = maas("presets", "claim")
    assert none_yet.exit_code == 1 and "no preset service yet" in none_yet.output


# ------------------------------------------------------------------------------------ chat

def chat_target(api: FakeApi, **extra) -> None:
    api.on("GET", "/api/v1/preset-services", {"items": [PRESET]})
    api.on("GET", "/api/v1/services/my-svc", service(**extra))


def test_chat_asks_for_an_interactive_answer_length_and_says_when_it_was_cut(api):
    chat_target(api)
    api.on("POST", "/api/v1/playground/chat", answer("The capital of France is", "length"))
    cut = maas("chat", "my-svc", "What is the capital of France?", "--no-stream")
    assert cut.exit_code == 0, cut.output
    [sent] = api.sent("POST", "/api/v1/playground/chat")
    assert sent.body["max_tokens"] == 512 and sent.body["service_id"] == "s1"
    assert "The capital of France is" in cut.output
    assert "stopped at the limit of 512 tokens" in cut.output and "--max-tokens" in cut.output

    api.on("POST", "/api/v1/playground/chat", answer("Paris.", "stop"))
    whole = maas("chat", "my-svc", "What is the capital of France?", "--no-stream", "--max-tokens", "40")
    assert whole.exit_code == 0 and "Paris." in whole.output and "stopped at the limit" not in whole.output
    assert api.sent("POST", "/api/v1/playground/chat")[-1].body["max_tokens"] == 40


def test_chat_on_a_small_context_asks_for_at_most_half_of_it(api):
    chat_target(api, max_model_len=256)
    api.on("POST", "/api/v1/playground/chat", answer("Hi", "stop"))
    assert maas("chat", "my-svc", "Hello", "--no-stream").exit_code == 0
    assert api.sent("POST", "/api/v1/playground/chat")[-1].body["max_tokens"] == 128


def test_a_streamed_chat_with_an_api_key_says_when_the_answer_was_cut(api):
    chat_target(api)
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "my-svc"}
    api.on("POST", "/v1/infers/s1/v1/chat/completions", text=sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Once upon"}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": " a time"}, "finish_reason": "length"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 512, "total_tokens": 515}}))
    streamed = maas("chat", "my-svc", "Tell me a story", "--api-key", "sk-test")
    assert streamed.exit_code == 0, streamed.output
    [sent] = api.sent("POST", "/v1/infers/s1/v1/chat/completions")
    assert sent.body["max_tokens"] == 512 and sent.body["model"] == "my-svc"
    assert "Once upon a time" in streamed.output and "stopped at the limit of 512 tokens" in streamed.output


# ------------------------------------------------------------------------------------ 401 hints

def test_a_wrong_password_while_logging_in_is_not_told_to_log_in_again(api):
    api.on("POST", "/api/v1/auth/login", {"error": {"code": "unauthorized", "message": "wrong username or password"}},
           status=401)
    refused = maas("login", "--username", "admin", "--password", "nope")
    assert refused.exit_code == 1 and "wrong username or password" in refused.output
    assert "check the username and password" in refused.output and "log in again" not in refused.output


def test_a_refused_api_key_points_at_the_keys_not_the_login(api):
    chat_target(api)
    api.on("POST", "/v1/infers/s1/v1/chat/completions", {"error": {
        "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
        "code": "invalid_api_key"}}, status=401)
    refused = maas("chat", "my-svc", "Hello", "--api-key", "sk-deleted", "--no-stream")
    assert refused.exit_code == 1 and "HTTP 401" in refused.output
    assert "maas keys create" in refused.output and "maas login" not in refused.output


def test_an_expired_login_is_told_to_log_in_again(api):
    api.on("GET", "/api/v1/services", {"error": {"code": "unauthorized", "message": "token expired"}}, status=401)
    refused = maas("services", "list")
    assert refused.exit_code == 1 and "log in again with `maas login`" in refused.output


# ------------------------------------------------------------------------------------ models create -w

@pytest.fixture
def no_models(api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # relative --weights paths resolve here (and do not exist)
    api.on("GET", "/api/v1/models", {"total": 0, "items": []})
    return api


@pytest.mark.parametrize("weights", ["/tmp/openmaas-does-not-exist/model", "./not-here", "~/openmaas-not-here"])
def test_a_local_looking_path_that_does_not_exist_is_a_missing_local_folder(no_models, weights):
    refused = maas("models", "create", "my-qwen", "-t", "qwen2-custom", "-w", weights)
    assert refused.exit_code == 1
    assert f"no such local folder: {weights}" in refused.output and "bucket" not in refused.output.split("hint")[0]
    assert not no_models.sent("POST", "/api/v1/models")


def test_a_path_that_is_neither_a_local_folder_nor_a_bucket_says_both(no_models):
    no_models.on("POST", "/api/v1/models", {"error": {"code": "invalid_parameter", "field": "weights_path",
                                                      "message": "weights_path: bucket 'tmp' does not exist"}},
                 status=400)
    no_models.on("GET", "/api/v1/storage/objects", {"error": {"code": "invalid_parameter", "field": "path",
                                                              "message": "path: bucket 'tmp' does not exist"}},
                 status=400)
    refused = maas("models", "create", "my-qwen", "-t", "qwen2-custom", "-w", "tmp/does-not-exist")
    assert refused.exit_code == 1
    assert "no local folder 'tmp/does-not-exist' and no bucket named 'tmp'" in refused.output
    assert no_models.sent("GET", "/api/v1/storage/objects")[0].params == {"path": "tmp"}


def test_a_missing_folder_in_a_bucket_of_mine_keeps_the_apis_message(no_models):
    no_models.on("POST", "/api/v1/models", {"error": {
        "code": "invalid_parameter", "field": "weights_path",
        "message": "weights_path: 'maas-t/nothing' does not exist or is empty"}}, status=400)
    no_models.on("GET", "/api/v1/storage/objects", {"items": []})
    refused = maas("models", "create", "my-qwen", "-t", "qwen2-custom", "-w", "maas-t/nothing")
    assert refused.exit_code == 1
    assert "'maas-t/nothing' does not exist or is empty" in refused.output
    assert "no local folder 'maas-t/nothing' either" in refused.output


# ------------------------------------------------------------------------------------ first start

@pytest.mark.parametrize("width", [40, 200])
def test_the_first_starts_secrets_and_sample_command_are_never_wrapped(monkeypatch, width):
    out = io.StringIO()
    monkeypatch.setattr(platform_cmds, "console", Console(file=out, width=width, force_terminal=False))
    token = "maas_" + "t0k3n" * 12
    platform_cmds._show_admin(SimpleNamespace(username="admin", password="pa55-word-" * 3, token=token),
                              "http://127.0.0.1:8000")
    lines = out.getvalue().splitlines()
    assert f"token:    {token}" in lines and f"password: {'pa55-word-' * 3}" in lines
    assert f"  curl -H 'Authorization: Bearer {token}' http://127.0.0.1:8000/api/v1/templates" in lines
    assert "  maas login --url http://127.0.0.1:8000 --username admin" in lines


# ------------------------------------------------------------------------------------ deploy / scale progress

def test_deploy_shows_each_step_until_the_service_runs(api):
    api.on("GET", "/api/v1/models/m1", {"id": "m1", "name": "my-qwen"})
    api.on("GET", "/api/v1/services/recommendation", {"recommended_instance_count": 2})
    api.on("POST", "/api/v1/services", service("deploying", 0, 2), status=201)
    api.on_each("GET", "/api/v1/services/s1", service("deploying", 0, 2), service("deploying", 0, 2),
                service("deploying", 1, 2), service("running", 2, 2))
    deployed = maas("deploy", "m1", "--name", "my-svc")
    assert deployed.exit_code == 0, deployed.output
    steps = [line.strip() for line in deployed.output.splitlines() if line.strip().startswith("my-svc: ")]
    assert steps == ["my-svc: deploying, 0/2 instance(s) ready", "my-svc: deploying, 1/2 instance(s) ready",
                     "my-svc: running, 2/2 instance(s) ready"]


def test_scale_with_wait_follows_the_operation_to_its_end(api):
    api.on("GET", "/api/v1/services/my-svc", service())
    api.on("PUT", "/api/v1/services/s1/instance-count", service("running", 1, 2, "scaling"))
    api.on_each("GET", "/api/v1/services/s1", service("running", 1, 2, "scaling"),
                service("running", 2, 2, "scaling"), service("running", 2, 2))
    scaled = maas("services", "scale", "my-svc", "2", "--wait")
    assert scaled.exit_code == 0, scaled.output
    assert "my-svc: scaling, 1/2 instance(s) ready" in scaled.output
    assert "my-svc: running, 2/2 instance(s) ready" in scaled.output
    assert len(api.sent("GET", "/api/v1/services/s1")) == 3
    api.calls.clear()
    assert maas("services", "scale", "my-svc", "2").exit_code == 0   # without --wait: no polling
    assert not api.sent("GET", "/api/v1/services/s1")


def test_upgrade_with_wait_fails_when_the_service_fails(api):
    api.on("GET", "/api/v1/services/my-svc", service())
    api.on("POST", "/api/v1/services/s1/upgrade", service("running", 1, 1, "upgrading"))
    api.on_each("GET", "/api/v1/services/s1", service("running", 1, 1, "upgrading"),
                service("failed", 0, 1, message="the new version did not load"))
    upgraded = maas("services", "upgrade", "my-svc", "2", "--wait")
    assert upgraded.exit_code == 1
    assert "my-svc: upgrading, 1/1 instance(s) ready" in upgraded.output
    assert "the new version did not load" in upgraded.output


def test_start_has_wait_too(api):
    api.on("GET", "/api/v1/services/my-svc", service("stopped", 0, 1))
    api.on("POST", "/api/v1/services/s1/start", service("deploying", 0, 1))
    api.on_each("GET", "/api/v1/services/s1", service("deploying", 0, 1), service("running", 1, 1))
    started = maas("services", "start", "my-svc", "--wait", "--json")
    assert started.exit_code == 0, started.output
    assert json.loads(started.stdout)["status"] == "running"


# ------------------------------------------------------------------------------------ tuning: global batch

ESTIMATE = {"template_id": "smollm2-135m-instruct", "global_batch_size": 32, "global_batch_size_range": [1, 512],
            "iterations": 1, "estimate": {"min_hours": 0.004, "max_hours": 0.006}, "note": None,
            "problem": "the dataset has 15 samples, fewer than one global batch of 'SmolLM2-135M-Instruct' (32 "
                       "samples per iteration); set hyperparameters.global_batch_size to 15 or less"}


def test_the_estimate_says_up_front_that_a_small_dataset_would_be_refused(api):
    api.on("POST", "/api/v1/tuning-jobs/estimate", ESTIMATE)
    shown = maas("tune", "estimate", "-t", "smollm2-135m-instruct", "--samples", "15")
    assert shown.exit_code == 0, shown.output
    assert "a job would be refused" in shown.output and "fewer than one global batch" in shown.output
    assert "--global-batch-size 1~512" in shown.output and "under a minute" in shown.output
    api.on("POST", "/api/v1/tuning-jobs/estimate", {**ESTIMATE, "global_batch_size": 8, "iterations": 2,
                                                    "problem": None})
    fits = maas("tune", "estimate", "-t", "smollm2-135m-instruct", "--samples", "15", "--global-batch-size", "8")
    assert fits.exit_code == 0 and "would be refused" not in fits.output
    assert api.sent("POST", "/api/v1/tuning-jobs/estimate")[-1].body["global_batch_size"] == 8


def test_create_passes_the_global_batch_size_and_the_help_names_the_rule(api):
    api.on("POST", "/api/v1/tuning-jobs", {"id": "j1", "name": "small", "hyperparameters": {"iterations": 2},
                                           "estimate": None, "status": "pending", "created_at": CREATED},
           status=201)
    created = maas("tune", "create", "small", "-t", "smollm2-135m-instruct", "-o", "small-out",
                   "-d", "maas-t/datasets/small.jsonl", "--global-batch-size", "8", "--json")
    assert created.exit_code == 0, created.output
    [sent] = api.sent("POST", "/api/v1/tuning-jobs")
    assert sent.body["hyperparameters"]["global_batch_size"] == 8
    assert "global_batch_size" not in maas_body_without_option(api)
    helped = maas("tune", "create", "--help")
    assert "--global-batch-size" in helped.output and "one global batch" in helped.output


def maas_body_without_option(api: FakeApi) -> dict:
    """The hyperparameters a create without --global-batch-size sends (the template's batch applies)."""
    assert maas("tune", "create", "plain", "-t", "smollm2-135m-instruct", "-o", "plain-out",
                "-d", "maas-t/datasets/small.jsonl", "--json").exit_code == 0
    return api.sent("POST", "/api/v1/tuning-jobs")[-1].body["hyperparameters"]


def test_a_local_looking_dataset_that_does_not_exist_is_a_missing_local_file(api):
    refused = maas("tune", "create", "small", "-t", "smollm2-135m-instruct", "-o", "small-out",
                   "-d", "/tmp/openmaas-does-not-exist/data.jsonl")
    assert refused.exit_code == 1 and "no such local file: /tmp/openmaas-does-not-exist/data.jsonl" in refused.output
    assert not api.sent("POST", "/api/v1/tuning-jobs")


def test_keys_and_call_examples_are_printed_unwrapped_on_a_narrow_terminal(api, monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    secret = "sk-" + "0123456789abcdef" * 3
    api.on("POST", "/api/v1/api-keys", {"id": "k1", "key": secret}, status=201)
    created = maas("keys", "create")
    assert created.exit_code == 0 and secret in created.output.splitlines()
    chat_target(api)
    shown = maas("services", "call", "my-svc")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "base URL: http://maas/v1/infers/s1/v1" in lines
    assert any(line.startswith("curl -X POST") and line.endswith("\"temperature\": 1.0}'") for line in lines)
