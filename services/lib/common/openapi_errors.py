"""The OpenAPI document tells the errors the API really answers, with their real body.

FastAPI documents a 422 with its own validation body on every route with inputs, but this API
answers 400 with ``{"error": {...}}`` (services.lib.common.errors), and 401/403/404/409/413 that no
route declares. SDK generators and users read these documents, so one pass over the generated
document replaces that with what the routes can give:

- 400 wherever a request carries inputs (parameters or a body): the validation answer;
- 401 and 403 on every route not public by design (services.lib.common.public_routes), with the
  bearer security scheme it needs; 404 where the path names a resource or the request can name one;
- 409 on every change (a name taken, a resource in use or in the wrong state, a limit reached);
- 413 wherever a body is accepted (the body size limit).

A route declares any other error it can give with FastAPI's ``responses=`` (429 of chat calls, 503
of the health check); this pass gives it the error body too. ``/v1`` answers OpenAI's error shape.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from services.lib.common.errors import ErrorBody, OpenAIErrorBody
from services.lib.common.public_routes import is_public

OPENAI_PREFIX = "/v1/"
_CHANGES = {"post", "put", "patch", "delete"}
_WITH_BODY = {"post", "put", "patch"}
_DESCRIPTIONS = {
    400: "Invalid input: the error names the field and the rule it breaks",
    401: "Missing, malformed, invalid or revoked credentials",
    403: "The caller may not do this",
    404: "A resource named by the request does not exist (or is not the caller's)",
    409: "Conflicts with the current state: the name is taken, the resource is in use or in the wrong "
         "state, or a limit is reached",
    413: "The request body is larger than the platform accepts",
    429: "Too many requests, or the quota is used up (see Retry-After)",
    503: "A backing service is unavailable",
}
# Security schemes: the console API takes a login token, the OpenAI API an API key.
_SCHEMES = {
    "bearerToken": {"type": "http", "scheme": "bearer",
                    "description": "a token of POST /api/v1/auth/login (or the bootstrap admin's)"},
    "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key (sk-...) of POST /api/v1/api-keys"},
}


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with the error responses the API really gives."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite(generate())
        return app.openapi_schema

    app.openapi = openapi


def rewrite(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (ErrorBody, OpenAIErrorBody):
        _add_model(schemas, model)
    components.setdefault("securitySchemes", {}).update(_SCHEMES)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                _document(method, path, operation)
                _hoist_body_definitions(operation, schemas)
    # FastAPI's validation body is never answered.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema


def _document(method: str, path: str, operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    responses.pop("422", None)
    openai = path.startswith(OPENAI_PREFIX)
    statuses = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(400)
    if not is_public(method, path):
        statuses |= {401, 403}
        operation["security"] = [{"apiKey": []}] if openai else [{"bearerToken": []}]
        if "{" in path or method in _CHANGES:
            statuses.add(404)
        if method in _CHANGES:
            statuses.add(409)
    else:
        operation["security"] = []
    if method in _WITH_BODY:
        statuses.add(413)
    body = OpenAIErrorBody if openai else ErrorBody
    for status in sorted(statuses):
        entry = responses.setdefault(str(status), {})
        entry.setdefault("description", _DESCRIPTIONS.get(status, "Error"))
        entry["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}


def _hoist_body_definitions(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A body schema a route gives by hand (``openapi_extra``) keeps its definitions in components."""
    for media in operation.get("requestBody", {}).get("content", {}).values():
        for name, sub in media.get("schema", {}).pop("$defs", {}).items():
            schemas.setdefault(name, sub)


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in definition.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas[model.__name__] = definition
