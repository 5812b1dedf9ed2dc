"""Upgrade (issue 18, item 9): every data folder kept in tests/fixtures/upgrade/ — a ``maas backup``
written by an earlier release (its fixture.json names the commit) — is restored and the current code
starts on it: the migrations run once and are recorded, and what the users had is all there through
the API: sign-in, the API key, models, both kinds of jobs with their logs, the stopped service, which
starts again and answers."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from services.lib.common.migrations import MIGRATIONS
from services.lib.embedded.backup import restore
from services.lib.embedded.servers import EmbeddedServers
from tests.conftest import serve_platform
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "fixture.json").exists())


def test_there_is_a_fixture_of_the_current_format():
    assert RELEASES, "tests/fixtures/upgrade/make_fixture.py writes one"


@pytest.mark.parametrize("release", RELEASES)
async def test_the_current_code_starts_on_an_earlier_releases_data(release, tmp_path, monkeypatch):
    from services.lib.common.settings import get_settings
    from services.runtime import SERVICES

    made = json.loads((FIXTURES / release / "fixture.json").read_text())
    restore(FIXTURES / release, tmp_path / "data")
    servers = EmbeddedServers(tmp_path / "data")
    servers.start(timeout=120)
    try:
        for key, value in {**servers.settings_env(), "MAAS_IMPORT_PRESETS": "false"}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings().model_copy(update={"work_dir": str(tmp_path / "work")})
        async with serve_platform(settings) as running:
            recorded = {d["_id"] async for d in running["platform"].mongo[MIGRATIONS].find({})}
            assert recorded == {m.id for s in SERVICES.values() for m in s.migrations}

            async with httpx.AsyncClient(base_url=running["url"], timeout=120) as anonymous:
                r = await anonymous.post("/api/v1/auth/login", json=made["admin"])
                assert r.status_code == 200, r.text
                token = r.json()["token"]
            async with httpx.AsyncClient(base_url=running["url"], timeout=120,
                                         headers={"Authorization": f"Bearer {token}"}) as api:
                models = {m["name"]: m for m in (await api.get("/api/v1/models")).json()["items"]}
                assert {"upgrade-tiny", "upgrade-tuned", "upgrade-awq"} <= set(models)
                assert all(models[n]["status"] == "created" for n in ("upgrade-tiny", "upgrade-tuned", "upgrade-awq"))
                for kind, job_id in (("tuning-jobs", made["tuning_job_id"]),
                                     ("compression-jobs", made["compression_job_id"])):
                    job = (await api.get(f"/api/v1/{kind}/{job_id}")).json()
                    assert job["status"] == "completed", job
                    assert (await api.get(f"/api/v1/{kind}/{job_id}/logs")).json()["items"]
                service = (await api.get(f"/api/v1/services/{made['service_id']}")).json()
                assert service["status"] == "stopped" and service["placement"]["pool"] == "public"
                assert (await api.post(f"/api/v1/services/{made['service_id']}/start")).status_code == 200

                async def answers():
                    r = await api.post("/v1/chat/completions", headers={"Authorization": f"Bearer {made['api_key']}"},
                                       json={"model": service["name"], "max_tokens": 4,
                                             "messages": [{"role": "user", "content": "Hi"}]})
                    assert r.status_code in (200, 409, 503), r.text    # not running yet
                    return r.status_code == 200
                await wait_for(answers, timeout=300, interval=1)
                assert (await api.post(f"/api/v1/services/{made['service_id']}/stop")).status_code == 200
    finally:
        get_settings.cache_clear()
        servers.stop()
