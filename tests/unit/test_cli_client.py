"""The CLI's HTTP client and error output: the API's message and field, hints, exit status 1."""
from __future__ import annotations

import socket

import httpx
import pytest
import typer
from typer.testing import CliRunner

from services.apps.cli.client import CliError, Client, error_from_response, resolve
from services.apps.cli.common import command
from services.apps.cli.output import output_model, print_error


def response(status: int, body=None, text: str | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://maas/api/v1/x")
    if text is not None:
        return httpx.Response(status, text=text, request=request)
    return httpx.Response(status, json=body, request=request)


def test_console_error_body_keeps_message_field_and_line_details():
    err = error_from_response(response(400, {"error": {
        "code": "invalid_dataset", "message": "dataset_path: 'b/d.jsonl' has 2 invalid lines", "field": "dataset_path",
        "details": [{"line": 3, "rule": "alpaca.output", "message": "output must be a non-empty string"}]}}))
    assert (err.status, err.code, err.field) == (400, "invalid_dataset", "dataset_path")
    assert err.details[0]["line"] == 3


def test_openai_error_body_uses_param_as_the_field():
    err = error_from_response(response(429, {"error": {"message": "quota used up", "type": "insufficient_quota",
                                                       "param": None, "code": "insufficient_quota"}}))
    assert err.message == "quota used up" and err.code == "insufficient_quota" and err.field is None


def test_non_json_errors_and_401_hint():
    err = error_from_response(response(502, text="Bad Gateway from proxy"))
    assert err.message == "Bad Gateway from proxy"
    err = error_from_response(response(401, {"error": {"code": "unauthorized", "message": "invalid or revoked token"}}))
    assert "maas login" in err.hint


def test_printed_error_names_the_field_and_each_bad_line(capsys):
    print_error(CliError("dataset_path: 'b/d.jsonl' has 2 invalid lines", status=400, code="invalid_dataset",
                         field="dataset_path", details=[{"line": 3, "rule": "alpaca.output", "message": "empty output"},
                                                        {"line": 9, "message": "not JSON"}]))
    err = capsys.readouterr().err
    assert "HTTP 400, invalid_dataset" in err and "field: dataset_path" in err
    assert "line 3: empty output [alpaca.output]" in err and "line 9: not JSON" in err


def test_a_failing_command_prints_the_message_and_exits_1():
    app = typer.Typer()

    @command(app)
    def boom(name: str) -> None:
        raise CliError(f"name: '{name}' is taken", status=409, code="conflict", field="name")

    @command(app)
    def fine() -> None:
        print("ok")

    result = CliRunner().invoke(app, ["boom", "x"])
    assert result.exit_code == 1
    assert "name: 'x' is taken" in result.output and "field: name" in result.output
    assert CliRunner().invoke(app, ["fine"]).output == "ok\n"


def test_no_token_means_not_logged_in_before_any_request():
    with pytest.raises(CliError, match="not logged in") as exc:
        Client("http://127.0.0.1:9", token="").get("/api/v1/models")
    assert "maas login" in exc.value.hint


def test_an_unreachable_platform_says_where_and_what_to_do():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with pytest.raises(CliError, match=f"cannot reach the platform at http://127.0.0.1:{port}") as exc:
            Client(f"http://127.0.0.1:{port}", token="t").get("/api/v1/models")
    assert "maas up" in exc.value.hint


def fake_client(handler) -> Client:
    c = Client("http://maas", token="t")
    c.http = httpx.Client(base_url="http://maas", transport=httpx.MockTransport(handler),
                          headers={"Authorization": "Bearer t"})
    return c


def test_resolve_accepts_an_id_or_an_exact_name():
    models = {"m1": {"id": "m1", "name": "qwen-a"}, "m2": {"id": "m2", "name": "qwen-ab"}}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        path = request.url.path
        if path == "/api/v1/models":
            needle = request.url.params.get("name", "")
            return httpx.Response(200, json={"items": [m for m in models.values() if needle in m["name"]]})
        ident = path.rsplit("/", 1)[1]
        if ident in models:
            return httpx.Response(200, json=models[ident])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"model '{ident}' does not exist"}})

    c = fake_client(handler)
    assert resolve(c, "/api/v1/models", "m2", what="model")["name"] == "qwen-ab"
    assert resolve(c, "/api/v1/models", "qwen-a", what="model")["id"] == "m1"  # exact, not the substring match
    with pytest.raises(CliError, match="model 'nope' does not exist"):
        resolve(c, "/api/v1/models", "nope", what="model")


def test_a_jobs_output_model_shows_its_id_once_registered_and_registering_before():
    def job(status, model_id=None):
        return {"status": status, "output": {"model_name": "tiny-sq", "model_id": model_id}}
    assert output_model(job("running")) == "tiny-sq"
    assert output_model(job("completed")) == "tiny-sq (registering…)"
    assert output_model(job("completed", "4c7110af")) == "tiny-sq (4c7110af)"
    assert output_model(job("failed")) == "tiny-sq"
    refused = job("completed")
    refused["output"]["error"] = "model_id: the model m9 no longer exists"
    assert output_model(refused) == "tiny-sq (not registered: model_id: the model m9 no longer exists)"
