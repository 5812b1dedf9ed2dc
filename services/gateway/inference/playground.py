"""Playground ("模型体验", guide 10): chat with a running service or a preset service from the console.

Console auth (the user's access token), the parameters of table 10-1 with their ranges and
defaults, and the same path as the API (quota, moderation, QPS, metering under the key
"playground"). Errors come in the console's shape.
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.openai import INTERACTIVE_MAX_TOKENS
from services.lib.common.auth import Principal
from services.gateway.inference.chat import ChatGateway, Gateway
from services.gateway.inference.openai_api import CALL_ERRORS
from services.gateway.keys.models import Caller
from services.gateway.oai_errors import OpenAIError
from services.lib.iam.authorize import Authorized

# Table 10-1 (and 9-1): range and default of each slider.
PARAMETERS = {
    "temperature": {"min": 0.0, "max": 2.0, "default": 1.0},
    "top_p": {"min": 0.1, "max": 1.0, "default": 1.0},
    "top_k": {"min": 1, "max": 1000, "default": 20},
}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class PlaygroundChat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_id: str = Field(description="a running service of yours or a preset service")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, ge=0.1, le=1)
    top_k: int = Field(20, ge=1, le=1000)
    max_tokens: int | None = Field(None, ge=1, description=f"default {INTERACTIVE_MAX_TOKENS} (at most half the "
                                   "service's context); /v1 keeps table 11-1's default of 16")
    stream: bool = False


router = APIRouter(prefix="/api/v1/playground", tags=["playground"])


@router.get("/parameters", summary="Parameter ranges and defaults of the playground (table 10-1)")
async def parameters(_: Principal = Authorized("maas:playground:getParameters")):
    return PARAMETERS


@router.post("/chat", summary="Chat with a service (streaming with stream=true)", responses=CALL_ERRORS)
async def chat(body: PlaygroundChat, principal: Principal = Authorized("maas:inference:call"),
               gateway: ChatGateway = Gateway):
    caller = Caller(user_id=principal.user_id, tenant_id=principal.tenant_id, username=principal.username,
                    role=principal.role, key_id="playground")
    payload = {"messages": [m.model_dump() for m in body.messages], "temperature": body.temperature,
               "top_p": body.top_p, "top_k": body.top_k, "stream": body.stream}
    if body.max_tokens is not None:
        payload["max_tokens"] = body.max_tokens
    if body.stream:
        payload["stream_options"] = {"include_usage": True}
    try:
        return await gateway.chat(caller, payload, service_id=body.service_id, interactive=True)
    except OpenAIError as exc:
        error = {"code": exc.code or "error", "message": exc.message}
        if exc.param:
            error["field"] = exc.param
        return JSONResponse({"error": error}, status_code=exc.status, headers=exc.headers())
