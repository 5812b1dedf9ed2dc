"""The OpenAPI rewrite (services.lib.common.openapi_errors) and the 405 Allow header, on a small app."""
from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.lib.common.errors import ApiError, install_error_handlers
from services.lib.common.openapi_errors import document_errors
from services.lib.common.public_routes import is_public


class Thing(BaseModel):
    name: str


def _app() -> FastAPI:
    router = APIRouter(prefix="/api/v1")

    @router.get("/things/specials")
    async def specials():
        return []

    @router.get("/things/{thing_id}")
    async def get_thing(thing_id: str):
        raise ApiError(404, "not_found", f"thing '{thing_id}' does not exist")

    @router.delete("/things/{thing_id}", status_code=204)
    async def delete_thing(thing_id: str):
        return None

    @router.post("/things", status_code=201)
    async def create_thing(body: Thing):
        return body

    @router.post("/auth/login", responses={401: {"description": "Wrong username or password"}})
    async def login(body: Thing):
        return {}

    @router.get("/v1-free")
    async def listing(limit: int = 5):
        return []

    app = FastAPI()
    install_error_handlers(app)
    document_errors(app)
    app.include_router(router)
    return app


def test_422_becomes_the_400_the_api_answers():
    doc = _app().openapi()
    post = doc["paths"]["/api/v1/things"]["post"]["responses"]
    assert "422" not in post
    assert post["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(doc["components"]["schemas"])
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_each_route_documents_the_errors_it_can_give():
    doc = _app().openapi()
    get = doc["paths"]["/api/v1/things/{thing_id}"]["get"]
    assert set(get["responses"]) == {"200", "400", "401", "403", "404"}
    assert get["security"] == [{"bearerToken": []}]
    delete = doc["paths"]["/api/v1/things/{thing_id}"]["delete"]["responses"]
    assert {"404", "409"} <= set(delete) and "413" not in delete
    post = doc["paths"]["/api/v1/things"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "413"} <= set(post)
    # No inputs, no 400; no id in the path, no 404.
    assert set(doc["paths"]["/api/v1/things/specials"]["get"]["responses"]) == {"200", "401", "403"}


def test_public_routes_document_only_what_they_declare():
    login = _app().openapi()["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == []
    assert set(login["responses"]) == {"200", "400", "401", "413"}
    assert login["responses"]["401"]["description"] == "Wrong username or password"
    assert login["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_405_allow_names_every_method_of_the_resource():
    client = TestClient(_app())
    r = client.request("PATCH", "/api/v1/things/abc")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET"
    assert r.json() == {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}}
    # A fixed path is its own resource, not also /things/{thing_id}.
    assert client.request("PUT", "/api/v1/things/specials").headers["allow"] == "GET"
    assert client.request("PUT", "/api/v1/things").headers["allow"] == "POST"


def test_head_is_public_where_get_is():
    assert is_public("HEAD", "/healthz") and is_public("get", "/healthz")
    assert not is_public("GET", "/metrics") and not is_public("POST", "/healthz")
