"""The OpenAI-compatible API (guide 11): ``/v1/chat/completions``, the legacy ``/v1/completions`` and ``/v1/models``.

Two ways to address a service, as the guide shows and as OpenAI SDKs expect:
- per service: base URL ``/v1/infers/{service_id}/v1`` (``model`` = the service name);
- unified: base URL ``/v1`` with ``model`` = the name of one of your services or of a preset service.
Every route needs ``Authorization: Bearer <API key>``; every error has OpenAI's shape.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from contracts.openai import ChatCompletionRequest, CompletionRequest
from services.lib.common.context import Platform, get_platform
from services.lib.readmodels.serving_refs import PRESET_TENANT, ServiceRef, list_callable_services
from services.gateway.inference.chat import ChatGateway, Gateway
from services.gateway.keys.service import authenticate
from services.gateway.oai_errors import OpenAIError, invalid
from services.lib.iam.actions import INFERENCE_CALL
from services.lib.iam.authorize import Authorized

router = APIRouter(tags=["OpenAI-compatible API"])
# Every /v1 route: the API key's owner must be allowed to call models (checked by keys.authenticate,
# so that a refusal has OpenAI's error shape).
CALL = Authorized(INFERENCE_CALL, by="route")


def _body_schema(model) -> dict:
    """``model``'s JSON schema, its definitions named OpenAI* (the console API has a ChatMessage too)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/OpenAI{model}")
    schema["$defs"] = {f"OpenAI{name}": sub for name, sub in schema.get("$defs", {}).items()}
    return schema


# The body is read as is (no FastAPI model: every call would pay for a second validation), so the
# document gets its schema here; services.lib.common.openapi_errors moves its definitions to components.
CHAT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _body_schema(ChatCompletionRequest)}}}}
COMPLETION_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _body_schema(CompletionRequest)}}}}

# What a call can end in besides the errors of every route (documented by services.lib.common.openapi_errors).
CALL_ERRORS = {429: {"description": "Over the service's QPS limit or the API key's requests/tokens per minute, or "
                                    "the free quota is used up (see Retry-After)"},
               502: {"description": "The model service failed to answer"},
               503: {"description": "The service is starting or has no ready instance; try again shortly"},
               504: {"description": "The model service did not answer in time"}}


async def _body(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def _model_card(service: ServiceRef) -> dict:
    return {"id": service.name, "object": "model", "created": 0,
            "owned_by": "openmaas" if service.tenant_id == PRESET_TENANT else "you",
            "service_id": service.id, "max_model_len": service.max_model_len}


async def _chat(request: Request, platform: Platform, gateway: ChatGateway, service_id: str | None, action: str):
    try:
        caller = await authenticate(platform, request, action=action)
        return await gateway.chat(caller, await _body(request), service_id=service_id)
    except OpenAIError as exc:
        return exc.response()


@router.post("/v1/chat/completions", summary="Chat completion; `model` names one of your services or a preset",
             responses=CALL_ERRORS, openapi_extra=CHAT_BODY)
async def chat_completions(request: Request, platform: Platform = Depends(get_platform), action: str = CALL,
                           gateway: ChatGateway = Gateway):
    return await _chat(request, platform, gateway, None, action)


@router.post("/v1/infers/{service_id}/v1/chat/completions", summary="Chat completion of one service",
             responses=CALL_ERRORS, openapi_extra=CHAT_BODY)
async def service_chat_completions(service_id: str, request: Request, platform: Platform = Depends(get_platform),
                                   action: str = CALL, gateway: ChatGateway = Gateway):
    return await _chat(request, platform, gateway, service_id, action)


async def _completions(request: Request, platform: Platform, gateway: ChatGateway, service_id: str | None,
                       action: str):
    try:
        caller = await authenticate(platform, request, action=action)
        return await gateway.completions(caller, await _body(request), service_id=service_id)
    except OpenAIError as exc:
        return exc.response()


@router.post("/v1/completions", summary="Text completion (OpenAI's legacy API); `model` names one of your services "
             "or a preset", responses=CALL_ERRORS, openapi_extra=COMPLETION_BODY)
async def completions(request: Request, platform: Platform = Depends(get_platform), action: str = CALL,
                      gateway: ChatGateway = Gateway):
    return await _completions(request, platform, gateway, None, action)


@router.post("/v1/infers/{service_id}/v1/completions", summary="Text completion (legacy API) of one service",
             responses=CALL_ERRORS, openapi_extra=COMPLETION_BODY)
async def service_completions(service_id: str, request: Request, platform: Platform = Depends(get_platform),
                              action: str = CALL, gateway: ChatGateway = Gateway):
    return await _completions(request, platform, gateway, service_id, action)


@router.get("/v1/models", summary="Models you can call: your running services and the preset services")
async def list_models(request: Request, platform: Platform = Depends(get_platform), action: str = CALL):
    try:
        caller = await authenticate(platform, request, action=action)
    except OpenAIError as exc:
        return exc.response()
    services = [s for s in await list_callable_services(platform, tenant_id=caller.tenant_id) if caller.may_call(s)]
    return {"object": "list", "data": [_model_card(s) for s in sorted(services, key=lambda s: s.name)]}


@router.get("/v1/models/{model}", summary="One model (service) by name")
async def get_model(model: str, request: Request, platform: Platform = Depends(get_platform), action: str = CALL,
                    gateway: ChatGateway = Gateway):
    try:
        caller = await authenticate(platform, request, action=action)
        service = await gateway.resolve(caller, service_id=None, model=model)
    except OpenAIError as exc:
        return exc.response()
    return _model_card(service)


@router.get("/v1/infers/{service_id}/v1/models", summary="The model of one service")
async def service_models(service_id: str, request: Request, platform: Platform = Depends(get_platform),
                         action: str = CALL, gateway: ChatGateway = Gateway):
    try:
        caller = await authenticate(platform, request, action=action)
        service = await gateway.resolve(caller, service_id=service_id, model=None)
    except OpenAIError as exc:
        return exc.response()
    return JSONResponse({"object": "list", "data": [_model_card(service)]})
