"""Every error under /v1 has OpenAI's body ``{"error": {message, type, param, code}}``, also those no route
raises (the body size limit's 413, 404 of an unknown path, 405, a validation error, an unexpected
failure): an OpenAI SDK reads it into its typed error. /api/v1 keeps the console API's shape."""
from __future__ import annotations

import httpx
import openai
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from services.lib.common.errors import ApiError, install_error_handlers
from services.lib.common.http import BodySizeLimit

LIMIT = 1024
OPENAI_KEYS = {"message", "type", "param", "code"}


class Thing(BaseModel):
    name: str


class LinesError(ApiError):
    """An error whose body carries more than code, message and field (as a dataset's bad lines)."""

    def body(self) -> dict:
        return {"error": {**super().body()["error"], "details": [{"line": 3, "message": "not JSON"}]}}


def _app() -> FastAPI:
    router = APIRouter()

    @router.post("/v1/chat/completions")
    async def chat(request: Request):
        await request.body()
        return {"id": "c1", "object": "chat.completion", "created": 0, "model": "m", "choices": []}

    @router.get("/v1/models/{model}")
    async def model(model: str, limit: int = 5):
        return {"id": model}

    @router.get("/v1/boom")
    async def boom():
        raise RuntimeError("a bug")

    @router.get("/api/v1/lines")
    async def lines():
        raise LinesError(400, "invalid_dataset", "dataset_path: 1 invalid line", field="dataset_path")

    @router.post("/api/v1/things")
    async def create_thing(request: Request):
        await request.body()
        return {}

    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    app.include_router(router)
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://maas")


def _openai_error(r: httpx.Response) -> dict:
    error = r.json()["error"]
    assert set(error) == OPENAI_KEYS, error
    return error


async def test_an_oversize_chat_body_is_refused_with_the_openai_error_body():
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (2 * LIMIT)}]}
    async with _client(_app()) as http:
        r = await http.post("/v1/chat/completions", json=big)
        # A body that declares no length is counted as it arrives: the same answer.
        chunks = [b'{"model": "m", "messages": "', b"x" * LIMIT, b"x" * LIMIT, b'"}']

        async def stream():
            for chunk in chunks:
                yield chunk
        streamed = await http.post("/v1/chat/completions", content=stream())
    for answer in (r, streamed):
        assert answer.status_code == 413
        error = _openai_error(answer)
        assert error["code"] == "payload_too_large" and error["type"] == "invalid_request_error"
        assert error["param"] == "body" and f"exceeds {LIMIT} bytes" in error["message"]


async def test_the_openai_sdk_raises_its_typed_error_with_the_message_and_code():
    async with _client(_app()) as http:
        client = openai.AsyncOpenAI(base_url="http://maas/v1", api_key="sk-test", http_client=http, max_retries=0)
        with pytest.raises(openai.APIStatusError) as exc:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 4 * LIMIT}])
    assert exc.value.status_code == 413 and exc.value.code == "payload_too_large"
    assert exc.value.type == "invalid_request_error" and f"exceeds {LIMIT} bytes" in exc.value.message


async def test_errors_no_route_raises_have_the_openai_shape_under_v1():
    async with _client(_app()) as http:
        unknown = await http.get("/v1/no-such-thing")
        wrong_method = await http.delete("/v1/chat/completions")
        invalid = await http.get("/v1/models/m", params={"limit": "many"})
        bug = await http.get("/v1/boom")
    assert unknown.status_code == 404 and _openai_error(unknown)["code"] == "not_found"
    assert wrong_method.status_code == 405 and _openai_error(wrong_method)["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    assert invalid.status_code == 400
    error = _openai_error(invalid)
    assert error["param"] == "limit" and error["type"] == "invalid_request_error" and "limit" in error["message"]
    assert bug.status_code == 500
    error = _openai_error(bug)
    assert error["type"] == "server_error" and "a bug" not in error["message"]   # no internals leak out


async def test_the_console_api_keeps_its_own_error_shape():
    async with _client(_app()) as http:
        big = await http.post("/api/v1/things", content=b"x" * (2 * LIMIT))
        unknown = await http.get("/api/v1/nothing-here")
        lines = await http.get("/api/v1/lines")
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    assert "type" not in big.json()["error"] and big.json()["error"]["field"] == "body"
    assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"code", "message"}
    assert lines.status_code == 400 and lines.json()["error"]["details"] == [{"line": 3, "message": "not JSON"}]
