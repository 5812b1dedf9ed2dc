"""Errors as the REST API shows them: ``{"error": {"code", "message", "field"?}}`` with the right status.

User-facing validation problems are 400 (never 422): the console shows the message as is, and it
names the field and the rule that was broken. Under ``/v1`` (the OpenAI-compatible API) every error,
also those no route raised (404 no such path, 405, 413 too large, 500), has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: OpenAI SDKs read it into their typed errors.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from services.lib.common import disk, unavailable


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_parameter, not_found, conflict")
    message: str = Field(description="what went wrong, naming the field and the rule")
    field: str | None = Field(None, description="the request field at fault, when one is")
    details: list[ErrorDetail] | None = Field(None, description="every problem, when there are several")


class ErrorBody(BaseModel):
    """The body of every error of /api/v1 (and of the platform's own 4xx elsewhere)."""
    error: ErrorInfo


class OpenAIErrorInfo(BaseModel):
    message: str
    type: str | None = None
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape, answered by /v1."""
    error: OpenAIErrorInfo


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


OPENAI_PREFIX = "/v1"
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
                 413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error"}


def is_openai_path(path: str) -> bool:
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error_body(status: int, message: str, *, code: str | None = None, param: str | None = None,
                      type: str | None = None) -> dict:
    return {"error": {"message": message, "type": type or openai_error_type(status), "param": param, "code": code}}


def error_body(path: str, status: int, code: str, message: str, *, field: str | None = None) -> dict:
    """The error body for a request to ``path``: OpenAI's under /v1, the console API's elsewhere."""
    if is_openai_path(path):
        return openai_error_body(status, message, code=code, param=field)
    return ApiError(status, code, message, field=field).body()


def bad_request(message: str, *, field: str | None = None, code: str = "invalid_parameter") -> ApiError:
    return ApiError(400, code, message, field=field)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} '{ident}' does not exist", field=None)


def conflict(message: str, *, code: str = "conflict", field: str | None = None) -> ApiError:
    return ApiError(409, code, message, field=field)


def _field_of(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def describe_validation_error(err: dict) -> tuple[str, str]:
    """(field, message) for one pydantic error, in words a user can act on."""
    field = _field_of(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    if kind == "json_invalid":
        return "body", f"malformed JSON: {err.get('ctx', {}).get('error', msg)}"
    if kind == "missing":
        return field, f"{field} is required"
    if kind == "extra_forbidden":
        return field, f"{field} is not a known field"
    msg = msg.removeprefix("Value error, ")
    return field, f"{field}: {msg}"


def unavailable_response(path: str, dependency: str, *, retry_after: int) -> JSONResponse:
    """503 with Retry-After: a backing server is down; the body names it, in the API's error shape."""
    body = error_body(path, 503, "service_unavailable", unavailable.message(dependency))
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry_after)})


def insufficient_storage_response(path: str) -> JSONResponse:
    """507: the platform's disk is full (the servers said only "internal error"; the watch says why)."""
    return JSONResponse(error_body(path, 507, "insufficient_storage", disk.USER_MESSAGE), status_code=507)


def install_error_handlers(app: FastAPI, *, retry_after: int = 5, disk_watch: disk.DiskWatch | None = None) -> None:
    """``retry_after``: seconds a client is told to wait when a backing server is unavailable;
    ``disk_watch``: tells a failure on a full disk from an outage or a bug."""
    outages = unavailable.OutageLog()

    def _disk_full(request: Request, exc: Exception) -> JSONResponse | None:
        low = disk_watch.low() if disk_watch is not None else None
        if low is None:
            return None
        outages.note(unavailable.DISK, exc, path=request.url.path, detail=low.describe())
        return insufficient_storage_response(request.url.path)

    async def _unavailable(request: Request, exc: Exception):
        if (full := _disk_full(request, exc)) is not None:
            return full
        dependency = unavailable.dependency_of(exc) or unavailable.OBJECT_STORE   # one of ERRORS: never None
        outages.note(dependency, exc, path=request.url.path)
        return unavailable_response(request.url.path, dependency, retry_after=retry_after)

    for error_class in unavailable.ERRORS:
        app.add_exception_handler(error_class, _unavailable)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        # exc.body(), not error_body(): a subclass may add to it (a dataset's bad lines as details).
        body = (openai_error_body(exc.status, exc.message, code=exc.code, param=exc.field)
                if is_openai_path(request.url.path) else exc.body())
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        field, message = describe_validation_error(errors[0]) if errors else ("body", "invalid request")
        body = error_body(request.url.path, 400, "invalid_parameter", message, field=field)
        if len(errors) > 1 and not is_openai_path(request.url.path):
            body["error"]["details"] = [
                {"field": f, "message": m} for f, m in (describe_validation_error(e) for e in errors)]
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return JSONResponse(error_body(request.url.path, exc.status_code, code, str(exc.detail)),
                            status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        if (full := _disk_full(request, exc)) is not None:
            return full
        dependency = unavailable.dependency_of(exc)
        if dependency is not None:   # raised from a connection error (or in a middleware): not our fault
            outages.note(dependency, exc, path=request.url.path)
            return unavailable_response(request.url.path, dependency, retry_after=retry_after)
        # Our fault: the traceback goes to the log (Starlette re-raises it after this answer), the
        # client gets a JSON body of its API's shape instead of a plain-text "Internal Server Error".
        return JSONResponse(error_body(request.url.path, 500, "internal_error", "internal server error"),
                            status_code=500)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the resource at ``path`` answers, for a 405's ``Allow``.

    The router only names the methods of the first route that matched the path, so a resource served
    by two routes (GET and DELETE ``/models/{id}``) would seem to allow one. Only the most specific
    matching templates count: ``/services/instance-specs`` is not also ``/services/{service_id}``.
    """
    matching: dict[int, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        if not route.path or not route.methods:
            continue
        regex, _, convertors = compile_path(route.path)
        if regex.match(path):
            matching.setdefault(len(convertors), set()).update(route.methods)
    return sorted(matching[min(matching)]) if matching else []
