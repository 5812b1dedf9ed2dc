"""OpenAI-style error bodies for /v1: ``{"error": {"message", "type", "param", "code"}}``."""
from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from services.lib.common.errors import openai_error_body, openai_error_type


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type or openai_error_type(status)
        self.retry_after = retry_after

    def body(self) -> dict:
        return openai_error_body(self.status, self.message, code=self.code, param=self.param, type=self.type)

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers())


def invalid(message: str, *, param: str | None = None, code: str | None = "invalid_parameter") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)
