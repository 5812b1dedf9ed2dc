"""Read-only view of models and versions for the services that use them (tuning, compression, serving).

The registry owns the ``models`` and ``model_versions`` collections and is the only writer; this
module is its published query contract, so other services need not import the registry. Document
fields read here change only compatibly.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.lib.common.errors import ApiError, bad_request, not_found

MODELS = "models"
VERSIONS = "model_versions"


@dataclass(frozen=True)
class ModelRef:
    model_id: str
    model_name: str
    version_id: str
    version_number: int
    template_id: str
    status: str                 # creating | created | failed
    quantization: str | None    # None for a full-precision model; compressed models are deploy-only
    storage_uri: str | None     # s3://bucket/prefix/ of the HF-format weights once created

    @property
    def deploy_only(self) -> bool:
        return self.quantization is not None


async def resolve_model_version(platform, *, tenant_id: str, model_id: str, version: int | str | None = None,
                                field: str = "model_id", require_created: bool = True) -> ModelRef:
    """The version (default: latest) of a tenant's model; 404/400/409 with the field named otherwise."""
    model = await platform.mongo[MODELS].find_one({"_id": model_id, "tenant_id": tenant_id})
    if model is None:
        raise not_found("model", model_id)
    query: dict = {"model_id": model_id, "tenant_id": tenant_id}
    if version is None:
        query["number"] = model["latest_version"]
    elif isinstance(version, int) or str(version).lstrip("vV").isdigit():
        query["number"] = int(str(version).lstrip("vV"))
    else:
        query["_id"] = version
    doc = await platform.mongo[VERSIONS].find_one(query)
    if doc is None:
        raise bad_request(f"version: model '{model['name']}' has no version {version}", field="version")
    ref = ModelRef(model_id=model_id, model_name=model["name"], version_id=doc["_id"], version_number=doc["number"],
                   template_id=model["template_id"], status=doc["status"], quantization=model.get("quantization"),
                   storage_uri=doc.get("storage_uri"))
    if require_created and ref.status != "created":
        state = "is still being created (weight validation running)" if ref.status == "creating" else "failed to be created"
        raise ApiError(409, "model_not_ready", f"{field}: model '{ref.model_name}' V{ref.version_number} {state}",
                       field=field)
    return ref


async def model_name_taken(platform, *, tenant_id: str, name: str) -> bool:
    """Whether the tenant already has a model with this name (jobs check their output name up front)."""
    return await platform.mongo[MODELS].find_one({"tenant_id": tenant_id, "name": name}, {"_id": 1}) is not None


PRESETS = "preset_imports"  # the registry's import state of the weights templates ship with


@dataclass(frozen=True)
class PresetImport:
    """The registry's import of one template's preset weights."""
    template_id: str
    status: str                 # importing | ready | failed ("importing" too before the registry has begun)
    progress: float             # 0..1
    error: str | None = None    # why it failed


def preset_import(doc: dict) -> PresetImport:
    return PresetImport(template_id=doc["_id"], status=doc.get("status") or "importing",
                        progress=float(doc.get("progress") or 0.0), error=doc.get("error"))


async def preset_imports(platform) -> dict[str, PresetImport]:
    """Every recorded import by template id; a template not in it has not started importing yet."""
    return {d["_id"]: preset_import(d) async for d in platform.mongo[PRESETS].find({})}


async def find_preset_import(platform, *, template_id: str) -> PresetImport | None:
    doc = await platform.mongo[PRESETS].find_one({"_id": template_id})
    return preset_import(doc) if doc else None


async def preset_weights_ready(platform, *, template_id: str) -> bool:
    """Whether a template's preset weights are fully imported into object storage."""
    doc = await platform.mongo[PRESETS].find_one({"_id": template_id}, {"status": 1})
    return bool(doc) and doc.get("status") == "ready"
