"""Every instant the API answers has one form, RFC 3339 in UTC with milliseconds (contracts/timestamps.py):
``2026-12-07T03:04:36.299Z``. Two forms in one list (``...:36Z`` beside ``...:36.299000Z``) made a
timeline's own strings sort out of order (issue 18, item 10).

The test walks every GET route of the OpenAPI document that needs no path parameter, and the detail
route of the first item of each list, after making a model, an API key and a user."""
from __future__ import annotations

import re

import pytest

from contracts import new_id
from contracts.timestamps import RFC3339_MS
from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.conftest import wait_for
from tests.integration.test_tuning_jobs import create_model, upload_model

pytestmark = pytest.mark.integration

LOOKS_LIKE_AN_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
SKIP = {"/api/v1/auth/logout"}   # GETs with effects, if any ever appear


def _instants(value, where: str):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _instants(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _instants(item, f"{where}[{i}]")
    elif isinstance(value, str) and LOOKS_LIKE_AN_INSTANT.match(value):
        yield where, value


async def _made_things(api, tmp_path_factory) -> None:
    bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
    name = f"stamps-{new_id()[:6]}"
    path = await upload_model(api, build_tiny_model(tmp_path_factory.mktemp("stamps") / name), f"{bucket}/{name}")
    model = await create_model(api, name=name, path=path)
    assert (await api.post("/api/v1/api-keys", json={"description": "stamps"})).status_code == 201
    r = await api.post("/api/v1/users", json={"username": f"stamps-{new_id()[:6]}", "password": "tenant-password-1"})
    assert r.status_code == 201, r.text

    async def settled():
        r = await api.get(f"/api/v1/models/{model['id']}")
        return r.json()["status"] in ("created", "failed")
    await wait_for(settled, timeout=120)


async def test_every_instant_the_api_answers_has_one_rfc3339_form(api, tmp_path_factory):
    await _made_things(api, tmp_path_factory)
    doc = (await api.get("/openapi.json")).json()
    paths = {p for p, ops in doc["paths"].items() if "get" in ops}
    plain = sorted(p for p in paths if "{" not in p and p.startswith(("/api/v1/", "/v1/")) and p not in SKIP)
    details = {p.rsplit("/", 1)[0]: p for p in paths if re.fullmatch(r".*/\{[a-z_]+\}", p) and p.count("{") == 1}
    seen, wrong = 0, []
    for path in plain:
        r = await api.get(path)
        if r.status_code != 200 or "json" not in r.headers.get("content-type", ""):
            continue
        body = r.json()
        found = list(_instants(body, path))
        items = body.get("items") or body.get("data") if isinstance(body, dict) else None
        if path in details and isinstance(items, list) and items and isinstance(items[0], dict) and "id" in items[0]:
            detail = await api.get(f"{path}/{items[0]['id']}")
            if detail.status_code == 200:
                found += _instants(detail.json(), f"{path}/<id>")
        seen += len(found)
        wrong += [(where, value) for where, value in found if not RFC3339_MS.match(value)]
    assert seen > 10, "the walk found almost no timestamps: the test no longer looks where it should"
    fields = sorted({re.sub(r"\[\d+\]", "[]", where) for where, _ in wrong})
    assert wrong == [], f"{len(wrong)} timestamps in another form, in {fields}; e.g. {wrong[:3]}"
