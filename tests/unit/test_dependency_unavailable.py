"""A call that fails because MongoDB or S3 is unreachable answers 503 with Retry-After and a body that
names the server, in the console API's shape on /api/v1 and OpenAI's on /v1 (not a 500). The real
outages are in tests/integration/test_dependency_outages.py."""
from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError
from urllib3.exceptions import MaxRetryError, NewConnectionError

from services.lib.common import unavailable
from services.lib.common.errors import install_error_handlers

OPENAI_KEYS = {"message", "type", "param", "code"}


def _minio_down() -> MaxRetryError:
    # what minio raises once urllib3's retries are spent on a refused connection
    return MaxRetryError(None, "/bucket", reason=NewConnectionError(None, "Connection refused"))


class _Wrapped(RuntimeError):
    pass


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, retry_after=7)
    failures = {
        "mongo": lambda: ServerSelectionTimeoutError("127.0.0.1:1: Connection refused"),
        "mongo-mid-call": lambda: AutoReconnect("connection closed"),
        "s3": _minio_down,
    }

    @app.get("/api/v1/fail/{what}")
    @app.get("/v1/fail/{what}")
    async def fail(what: str):
        raise failures[what]()

    @app.get("/api/v1/wrapped")
    async def wrapped():
        try:
            raise failures["mongo"]()
        except ServerSelectionTimeoutError as exc:
            raise _Wrapped("listing failed") from exc

    @app.get("/api/v1/bug")
    async def bug():
        raise RuntimeError("a bug")

    return app


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(_app(), raise_app_exceptions=False), base_url="http://maas")


@pytest.mark.parametrize(("what", "names"), [("mongo", "MongoDB"), ("mongo-mid-call", "MongoDB"),
                                             ("s3", "object storage")])
async def test_console_api_answers_503_naming_the_server(what, names):
    async with _client() as client:
        r = await client.get(f"/api/v1/fail/{what}")
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    error = r.json()["error"]
    assert error["code"] == "service_unavailable" and names in error["message"]


@pytest.mark.parametrize("what", ["mongo", "s3"])
async def test_openai_api_answers_503_in_openai_shape(what):
    async with _client() as client:
        r = await client.get(f"/v1/fail/{what}")
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    error = r.json()["error"]
    assert set(error) == OPENAI_KEYS
    assert error["type"] == "service_unavailable_error" and error["code"] == "service_unavailable"


async def test_an_error_raised_from_a_connection_failure_is_503_too_and_a_bug_stays_500():
    async with _client() as client:
        wrapped, bug = await client.get("/api/v1/wrapped"), await client.get("/api/v1/bug")
    assert wrapped.status_code == 503 and "MongoDB" in wrapped.json()["error"]["message"]
    assert bug.status_code == 500 and bug.json()["error"]["code"] == "internal_error"


def test_dependency_of_follows_explicit_causes_only():
    assert unavailable.dependency_of(_minio_down()) == unavailable.OBJECT_STORE
    try:
        try:
            raise AutoReconnect("gone")
        except AutoReconnect:
            raise ValueError("an unrelated bug while handling it")   # noqa: B904 - the point of the test
    except ValueError as exc:
        assert unavailable.dependency_of(exc) is None


async def test_an_outage_is_logged_once_not_once_per_call(caplog):
    caplog.set_level(logging.WARNING, logger=unavailable.__name__)
    async with _client() as client:
        for _ in range(5):
            assert (await client.get("/api/v1/fail/mongo")).status_code == 503
        assert (await client.get("/api/v1/fail/s3")).status_code == 503
    warnings = [r.getMessage() for r in caplog.records if r.name == unavailable.__name__]
    assert len(warnings) == 2
    assert "MongoDB unavailable" in warnings[0] and "object storage (S3) unavailable" in warnings[1]
