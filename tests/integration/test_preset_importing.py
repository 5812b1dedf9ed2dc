"""A preset whose weights are still importing (issue 20, item 3), through the real API: listed from the
first second as "importing" in the same shape as a created preset service; claiming its quota answers
409 and calling it on /v1 a 503 with Retry-After (OpenAI's error shape), both naming the progress.

A gateway of its own on a database of its own, with no registry: its preset has not begun importing,
which is what every platform shows in the first seconds of its first start. And the registry's real
import, stopped midway, has recorded its progress and gives its lease back.
"""
from __future__ import annotations

import asyncio

import httpx
import pytest

from services.lib.catalog.templates import default_catalog
from services.lib.common.context import Platform
from services.lib.common.settings import get_settings
from services.lib.readmodels.model_refs import PRESETS
from services.registry import presets
from tests.conftest import serve_platform
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

NAME, SERVICE_ID = "smollm2-135m-instruct", "preset-smollm2-135m-instruct"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
async def fresh(platform_env, tmp_path_factory):
    """``{"platform", "console", "calls"}``: the admin's console client and an API-key client on /v1."""
    settings = get_settings().model_copy(update={
        "mongo_db": "maas_preset_importing", "topic_prefix": "maas-preset-importing",
        "work_dir": str(tmp_path_factory.mktemp("preset-importing-work"))})
    async with serve_platform(settings, services="gateway") as running:
        headers = {"Authorization": f"Bearer {running['admin'].token}"}
        async with httpx.AsyncClient(base_url=running["url"], timeout=60, headers=headers) as console:
            r = await console.post("/api/v1/api-keys", json={"description": "preset importing"})
            assert r.status_code == 201, r.text
            async with httpx.AsyncClient(base_url=running["url"], timeout=60,
                                         headers={"Authorization": f"Bearer {r.json()['key']}"}) as calls:
                yield {"platform": running["platform"], "console": console, "calls": calls}


async def _listed(fresh) -> dict:
    r = await fresh["console"].get("/api/v1/preset-services")
    assert r.status_code == 200, r.text
    return next(p for p in r.json()["items"] if p["name"] == NAME)


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "preset_not_ready"
    return error


async def test_a_preset_not_yet_imported_is_listed_as_importing_from_the_first_second(fresh):
    item = await _listed(fresh)
    assert item["id"] == SERVICE_ID and item["status"] == "importing" and item["import_progress"] == 0.0
    assert item["available"] is False and item["max_model_len"] == 2048   # the template's context length
    assert item["quota"] == {"claimed": False, "granted": 1_000_000, "used": 0, "reserved": 0, "remaining": 0}
    assert item["api_base"] == f"/v1/infers/{SERVICE_ID}/v1" and item["call_model"] == NAME


async def test_claiming_or_calling_it_says_it_is_still_importing(fresh):
    for ident in (SERVICE_ID, NAME):
        r = await fresh["console"].post(f"/api/v1/preset-services/{ident}/claim")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "preset_not_ready"
        assert "is still importing its weights (0%); try again in a minute" in r.json()["error"]["message"]
    for path in ("/v1/chat/completions", f"/v1/infers/{SERVICE_ID}/v1/chat/completions"):
        r = await fresh["calls"].post(path, json={"model": NAME, "messages": HI})
        error = _openai_error(r, 503)
        assert "still importing its weights (0%)" in error["message"]
        assert int(r.headers["Retry-After"]) >= 1
    # Anything else is still unknown.
    r = await fresh["calls"].post("/v1/chat/completions", json={"model": "no-such-model", "messages": HI})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


async def test_the_progress_and_a_failure_the_registry_records_are_shown(fresh):
    imports = fresh["platform"].mongo[PRESETS]
    try:
        # What the registry records mid-conversion, then when the import fails.
        await imports.update_one({"_id": NAME}, {"$set": {"status": "importing", "progress": 0.42}}, upsert=True)
        assert (await _listed(fresh))["import_progress"] == 0.42
        r = await fresh["console"].post(f"/api/v1/preset-services/{NAME}/claim")
        assert r.status_code == 409 and "(42%)" in r.json()["error"]["message"]

        await imports.update_one({"_id": NAME}, {"$set": {"status": "failed", "error": "RuntimeError: no space"}})
        item = await _listed(fresh)
        assert item["status"] == "import_failed" and "RuntimeError: no space" in item["message"]
        r = await fresh["calls"].post("/v1/chat/completions", json={"model": NAME, "messages": HI})
        assert "importing its weights failed" in _openai_error(r, 503)["message"]
    finally:
        await imports.delete_one({"_id": NAME})


async def test_an_import_stopped_midway_shows_its_progress_and_gives_its_lease_back(platform_env, tmp_path):
    """The real conversion reports its first milestone; stopping the import then (Ctrl-C) leaves the
    record claimable at once, so the next start imports again instead of waiting out a 15-minute lease."""
    settings = get_settings().model_copy(update={"mongo_db": "maas_preset_lease", "work_dir": str(tmp_path)})
    platform = Platform.connect(settings)
    imports = platform.mongo[PRESETS]
    template = default_catalog().get(NAME)
    try:
        task = asyncio.create_task(presets.import_preset(platform, template))

        async def converting():
            doc = await imports.find_one({"_id": NAME})
            return doc if doc and 0 < doc.get("progress", 0) < 0.5 else None
        doc = await wait_for(converting, timeout=300)
        assert doc["status"] == "importing"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await presets._claim(platform, NAME)   # what the next start does first
    finally:
        await imports.delete_one({"_id": NAME})
        platform.mongo.close()
