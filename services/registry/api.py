"""HTTP routes of the registry: model square (templates) and my models."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_platform
from services.lib.common.errors import not_found
from services.lib.common.paging import Offset
from services.lib.iam.authorize import Authorized
from services.registry import service
from services.lib.catalog.templates import default_catalog, task_filters
from services.registry.models import ModelCreate, ModelView, VersionCreate, VersionView
from services.registry.presets import preset_states

router = APIRouter(prefix="/api/v1", tags=["registry"])


def _template_view(template, presets: dict) -> dict:
    view = template.model_dump(mode="json")
    if template.preset_weights is not None:
        view["preset_weights"]["state"] = presets.get(template.id, {"status": "pending", "progress": 0.0})
    return view


@router.get("/templates", summary="Model square: list base-model templates")
async def list_templates(
    _: Principal = Authorized("maas:templates:list"),
    series: str | None = None,
    task: Annotated[str | None, Query(description="tune, compress, deploy, or a tune type / strategy",
                                      json_schema_extra={"enum": task_filters()})] = None,
    language: Annotated[str | None, Query(pattern="^(zh|en)$")] = None,
    quantized: bool | None = None,
    search: str | None = None,
    platform: Platform = Depends(get_platform),
):
    from services.lib.common.errors import bad_request

    try:
        templates = default_catalog().list(series=series, task=task, language=language, quantized=quantized,
                                           search=search)
    except ValueError as exc:
        raise bad_request(f"task: {exc}", field="task") from None
    presets = await preset_states(platform)
    return {"total": len(templates), "items": [_template_view(t, presets) for t in templates]}


@router.get("/templates/{template_id}", summary="Model square: template detail")
async def get_template(template_id: str, _: Principal = Authorized("maas:templates:get"),
                       platform: Platform = Depends(get_platform)):
    template = default_catalog().get(template_id)
    if template is None:
        raise not_found("template", template_id)
    return _template_view(template, await preset_states(platform))


@router.post("/models", status_code=201, response_model=ModelView, summary="Create a model from a template")
async def create_model(body: ModelCreate, principal: Principal = Authorized("maas:models:create"),
                       platform: Platform = Depends(get_platform)):
    return await service.create_model(platform, tenant_id=principal.tenant_id, request=body)


@router.get("/models", summary="My models")
async def list_models(principal: Principal = Authorized("maas:models:list"), name: str | None = None,
                      status: str | None = None,
                      template_id: str | None = None, offset: Offset = 0,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50, platform: Platform = Depends(get_platform)):
    return await service.list_models(platform, tenant_id=principal.tenant_id, name=name, status=status,
                                     template_id=template_id, offset=offset, limit=limit)


@router.get("/models/{model_id}", response_model=ModelView, summary="Model detail with its versions")
async def get_model(model_id: str, principal: Principal = Authorized("maas:models:get"),
                    platform: Platform = Depends(get_platform)):
    return await service.get_model(platform, tenant_id=principal.tenant_id, model_id=model_id)


@router.delete("/models/{model_id}", status_code=204, summary="Delete a model that no task uses")
async def delete_model(model_id: str, principal: Principal = Authorized("maas:models:delete"),
                       platform: Platform = Depends(get_platform)):
    await service.delete_model(platform, tenant_id=principal.tenant_id, model_id=model_id)
    return Response(status_code=204)


@router.post("/models/{model_id}/versions", status_code=201, response_model=VersionView,
             summary="Add a version (auto-numbered, at most 10)")
async def add_version(model_id: str, body: VersionCreate,
                      principal: Principal = Authorized("maas:models:createVersion"),
                      platform: Platform = Depends(get_platform)):
    return await service.add_version(platform, tenant_id=principal.tenant_id, model_id=model_id, request=body)


@router.get("/models/{model_id}/versions/{version}", response_model=VersionView,
            summary="Version detail with its task records (by number, 'V2', or id)")
async def get_version(model_id: str, version: str, principal: Principal = Authorized("maas:models:getVersion"),
                      platform: Platform = Depends(get_platform)):
    return await service.get_version(platform, tenant_id=principal.tenant_id, model_id=model_id, version=version)
