"""What the API fuzzer (test_fuzz_api.py) found, kept as plain regression tests with the inputs it found."""
from __future__ import annotations

import jsonschema
import pytest

HUGE = 3887816821862431719424   # past MongoDB's 64-bit skip: the driver failed and the API answered 500


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/compression-jobs", "/api/v1/tuning-jobs",
                                  "/api/v1/models", "/api/v1/services", "/api/v1/notification-deliveries"])
async def test_a_huge_offset_is_a_clear_400_not_a_500(api, path):
    r = await api.get(path, params={"offset": HUGE})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == "offset" and "1000000000" in error["message"]


@pytest.mark.parametrize("path, allowed", [
    ("/api/v1/models/0", "DELETE, GET"), ("/api/v1/services/0", "DELETE, GET"),
    ("/api/v1/tuning-jobs/0", "DELETE, GET"), ("/api/v1/compression-jobs/0", "DELETE, GET"),
    ("/api/v1/notification-topics/0", "DELETE, GET"), ("/api/v1/notification-subscriptions/0", "DELETE, GET"),
    ("/api/v1/models", "GET, POST"), ("/api/v1/services/instance-specs", "GET"),
])
async def test_405_lists_every_method_of_the_resource(api, path, allowed):
    # The router named only the methods of the first route matching the path (`Allow: GET`).
    r = await api.request("OPTIONS", path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json()["error"]["code"] == "method_not_allowed"


async def _openapi(anonymous) -> dict:
    return (await anonymous.get("/openapi.json")).json()


async def test_the_documented_status_codes_are_the_ones_answered(api, anonymous):
    doc = await _openapi(anonymous)
    operations = [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    # FastAPI's 422 was documented everywhere; the API answers 400 with its own error body.
    assert [f"{m} {p}" for m, p, op in operations if "422" in op["responses"]] == []
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    responses = doc["paths"]["/api/v1/models/{model_id}"]["delete"]["responses"]
    assert {"400", "401", "403", "404", "409"} <= set(responses)
    assert responses["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "401" not in doc["paths"]["/healthz"]["get"]["responses"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["responses"]["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenAIErrorBody"}
    assert chat["security"] == [{"apiKey": []}]

    # The answers match: a 404 of a missing model, a 400 of a bad body, with the documented body.
    r = await api.delete("/api/v1/models/0")
    assert r.status_code == 404
    jsonschema.validate(r.json(), _resolvable(doc, "ErrorBody"))
    r = await api.post("/api/v1/storage/buckets", json={"name": ""})
    assert r.status_code == 400 and "400" in doc["paths"]["/api/v1/storage/buckets"]["post"]["responses"]
    jsonschema.validate(r.json(), _resolvable(doc, "ErrorBody"))


def _resolvable(doc: dict, name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


@pytest.mark.parametrize("path, body", [
    # Found as "schema-valid request rejected": the name rule was only in the code.
    ("/api/v1/notification-topics", {"name": ""}),
    ("/api/v1/models", {"name": "", "template_id": ""}),
    ("/api/v1/services", {"model_id": "", "name": "", "qps_limit": 1}),
    ("/api/v1/compression-jobs", {"name": "", "output_model_name": "", "source": {}, "strategy": "awq-w4a16"}),
    # "exactly one of model_id and template_id" was only in the code.
    ("/api/v1/compression-jobs/estimate", {"source": {}, "strategy": "awq-w4a16"}),
    ("/api/v1/compression-jobs/estimate", {"source": {"model_id": "a", "template_id": "b"}, "strategy": "awq-w4a16"}),
    ("/api/v1/notification-rules", {"events": ["alarm"], "subject": "", "topic_name": "0"}),
])
async def test_what_the_api_rejects_the_schema_rejects_too(api, anonymous, path, body):
    doc = await _openapi(anonymous)
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, {**schema, "components": doc["components"]})
    r = await api.post(path, json=body)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("path, params, field", [
    ("/api/v1/templates", {"task": ""}, "task"),
    ("/api/v1/tuning-jobs", {"status": "\x1f\x16êòÓé"}, "status"),
])
async def test_filters_document_the_values_they_take(api, anonymous, path, params, field):
    doc = await _openapi(anonymous)
    [param] = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == field]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(params[field], {**param["schema"], "components": doc["components"]})
    r = await api.get(path, params=params)
    assert r.status_code == 400 and r.json()["error"]["field"] == field


async def test_the_chat_body_is_documented(anonymous):
    doc = await _openapi(anonymous)
    schema = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages"} <= set(schema["required"])
    # Its ChatMessage is OpenAI's, not the playground's of the same name.
    assert schema["properties"]["messages"]["items"] == {"$ref": "#/components/schemas/OpenAIChatMessage"}
    assert "OpenAIChatMessage" in doc["components"]["schemas"]
