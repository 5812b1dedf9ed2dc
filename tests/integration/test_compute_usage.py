"""Compute usage and packages (guide: 购买套餐包) through the public API on the embedded default:
a job's run on the public pool is metered when its resources go back, paid from the account's
package first and the rest on demand; only the platform administrator grants packages, and no
account sees another's usage or packages."""
from __future__ import annotations

import pytest

from tests.integration.conftest import signed_in_tenant, wait_for
from tests.integration.test_compression_api import create_model, job_body, tiny_folder, upload_folder  # noqa: F401

pytestmark = pytest.mark.integration


async def test_a_jobs_hours_are_paid_from_the_package_first_then_on_demand(api, running_platform,
                                                                         tiny_folder):  # noqa: F811
    url = running_platform["url"]
    async with signed_in_tenant(api, url, name="metered") as team, signed_in_tenant(api, url, name="other") as other:
        account = (await team.get("/api/v1/auth/me")).json()["tenant_id"]
        # Only the platform administrator grants; a grant names an existing account.
        grant = {"account_id": account, "name": "starter", "cpu_hours": 0.001, "valid_days": 30}
        r = await team.post("/api/v1/packages", json=grant)
        assert r.status_code == 403, r.text
        r = await api.post("/api/v1/packages", json={**grant, "account_id": "no-such-account"})
        assert r.status_code == 404 and r.json()["error"]["field"] == "account_id"
        r = await api.post("/api/v1/packages", json={**grant, "cpu_hours": -1})
        assert r.status_code in (400, 422) and "cpu_hours" in r.text
        r = await api.post("/api/v1/packages", json=grant)
        assert r.status_code == 201, r.text
        assert (await team.get("/api/v1/packages")).json()["items"][0]["cpu_hours_left"] == 0.001
        assert (await other.get("/api/v1/packages")).json()["items"] == []

        path = await upload_folder(team, tiny_folder, f"{team.default_bucket}/metered/tiny")
        model = await create_model(team, name="metered-tiny", weights_path=path, validate=False)
        r = await team.post("/api/v1/compression-jobs", json=job_body(
            name="metered", source={"model_id": model["id"]}, output_model_name="metered-w8a8"))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        async def metered():
            rows = (await team.get("/api/v1/usage/compute", params={"group_by": "kind"})).json()["items"]
            return rows or None
        [row] = await wait_for(metered, timeout=600, interval=1)
        job = (await team.get(f"/api/v1/compression-jobs/{job_id}")).json()
        assert job["status"] == "completed", job
        # cpu.2u8g: 2 CPUs for the whole run; the first 0.001 CPU-hours (3.6 CPU-seconds) came from the package.
        assert row["kind"] == "compression" and row["runs"] == 1 and row["seconds"] > 0
        assert row["cpu_hours"] == pytest.approx(2 * row["seconds"] / 3600, rel=1e-3)
        assert row["package_cpu_hours"] == pytest.approx(0.001)
        assert row["on_demand_cpu_hours"] == pytest.approx(row["cpu_hours"] - 0.001, abs=1e-6)
        assert (await team.get("/api/v1/packages")).json()["items"][0]["cpu_hours_left"] == 0
        by_pool = (await team.get("/api/v1/usage/compute", params={"group_by": "pool"})).json()["items"]
        assert [r["pool"] for r in by_pool] == ["public"]
        assert (await other.get("/api/v1/usage/compute")).json()["items"] == []
        r = await team.get("/api/v1/usage/compute", params={"group_by": "tenant"})
        assert r.status_code in (400, 422)
