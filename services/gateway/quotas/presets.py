"""The preset services as users see them, from the first second of the platform on.

Serving creates a preset service only once the registry has imported its weights (about 45 s on a
first start); until then the preset is listed from the catalog and the import's state, in the same
shape as a created one, so the CLI and console show "importing (42%)" instead of nothing. Calls and
claims of such a preset get a clear "still importing" answer instead of "does not exist".
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from services.lib.catalog.templates import default_catalog
from services.lib.readmodels.model_refs import PresetImport, find_preset_import
from services.lib.readmodels.serving_refs import preset_service_id

IMPORTING, IMPORT_FAILED = "importing", "import_failed"


@dataclass(frozen=True)
class PresetTemplate:
    id: str               # also the preset service's name
    name: str             # the model's display name
    context_length: int


def preset_templates() -> list[PresetTemplate]:
    """Templates whose weights ship with the platform: each becomes a preset service (as serving decides)."""
    return [PresetTemplate(id=t.id, name=t.name, context_length=t.context_length)
            for t in default_catalog() if t.preset_weights is not None and t.tasks.deploy]


def _pending_state(template_id: str, state: PresetImport | None) -> PresetImport:
    # No record yet: the registry has not begun (it starts with the platform); that is importing at 0%.
    return state or PresetImport(template_id=template_id, status="importing", progress=0.0)


def pending_status(state: PresetImport) -> str:
    return IMPORT_FAILED if state.status == "failed" else IMPORTING


def pending_message(name: str, state: PresetImport) -> str:
    """Why a preset service that does not exist yet cannot be used, and what to do."""
    if state.status == "failed":
        return (f"preset service '{name}' is not available: importing its weights failed "
                f"({state.error or 'no detail'}); restart the platform to import them again")
    if state.status == "ready":   # imported; serving creates the service on its next sweep
        return f"preset service '{name}' has imported its weights and is being created; try again in a few seconds"
    return (f"preset service '{name}' is still importing its weights ({int(state.progress * 100)}%); "
            "try again in a minute")


def preset_items(*, services: Iterable[dict], templates: Iterable[PresetTemplate],
                 imports: Mapping[str, PresetImport], quota: Callable[[str], dict]) -> list[dict]:
    """The list API's items: each created preset service, and each preset template whose service does not
    exist yet (importing, or failed to import) in the same shape, unavailable; sorted by name.

    ``services``: the preset tenant's service documents; ``quota(service_id)``: the caller's quota view."""
    items = []
    for doc in services:
        model = doc.get("model") or {}
        items.append({
            "id": doc["_id"], "name": doc["name"], "model_name": model.get("model_name"),
            "template_id": model.get("template_id"), "status": doc["status"], "message": None,
            "import_progress": 1.0,
            "available": True,  # a stopped preset starts on its first call
            "max_model_len": doc["max_model_len"], "content_moderation": True,
            "api_base": f"/v1/infers/{doc['_id']}/v1", "call_model": doc["name"],
            "quota": quota(doc["_id"]),
        })
    created = {item["template_id"] for item in items} | {item["name"] for item in items}
    for template in templates:
        if template.id in created:
            continue
        state = _pending_state(template.id, imports.get(template.id))
        service_id = preset_service_id(template.id)
        items.append({
            "id": service_id, "name": template.id, "model_name": template.name, "template_id": template.id,
            "status": pending_status(state),
            "message": pending_message(template.id, state) if state.status == "failed" else None,
            "import_progress": round(min(1.0, max(0.0, state.progress)), 3),
            "available": False, "max_model_len": template.context_length, "content_moderation": True,
            "api_base": f"/v1/infers/{service_id}/v1", "call_model": template.id,
            "quota": quota(service_id),
        })
    return sorted(items, key=lambda item: item["name"])


def pending_template(ident: str, templates: Iterable[PresetTemplate]) -> PresetTemplate | None:
    """The preset template a service id or name refers to (the caller knows its service does not exist)."""
    return next((t for t in templates if ident in (t.id, preset_service_id(t.id))), None)


async def pending_preset(platform, ident: str) -> tuple[PresetTemplate, PresetImport] | None:
    """A preset (by service id or name) whose service does not exist yet, with its import's state."""
    template = pending_template(ident, preset_templates())
    if template is None:
        return None
    return template, _pending_state(template.id, await find_preset_import(platform, template_id=template.id))
