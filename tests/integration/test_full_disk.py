"""A full disk in the data folder (issue 18, item 4): the embedded servers and the platform on a small
tmpfs of their own, filled to the last byte by another file, as a log or a download would.

While it is full: ``/healthz`` names the disk; a write that cannot be stored answers 507
``insufficient_storage`` with a clear message — not a 503 that blames an outage, not a 500 — and
leaves nothing half-written (a write that did go through is kept); reads of what was stored still
work or fail cleanly. Once space returns, everything works again with no restart and every byte
stored before is intact.

The tmpfs needs root (``mount``), as this project's machines and CI are.
"""
from __future__ import annotations

import hashlib
import os
import subprocess

import httpx
import pytest

from services.lib.common.objectstore import ObjectPath
from tests.integration.conftest import private_platform, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DISK = "384m"
MIN_FREE = 32 * 2**20      # the platform's "full" line, well above what the test leaves


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(folder)], check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder) -> os.PathLike:
    """Take every free byte of ``folder``'s filesystem with one file (another program's)."""
    filler = folder / "someone-elses-file"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    os.sync()
    return filler


async def _upload(admin: httpx.AsyncClient, path: str, data: bytes) -> httpx.Response:
    return await admin.put(f"/api/v1/storage/objects/{path}", content=data)


async def test_a_full_data_disk_gives_clear_errors_loses_nothing_and_recovers_when_space_returns(small_disk):
    async with private_platform(small_disk, services="gateway,registry", topic_prefix="maas-fulldisk",
                                data_dir=str(small_disk / "data"), min_free_disk_bytes=MIN_FREE) as running:
        admin, store = running["admin"], running["platform"].store
        bucket = (await admin.get("/api/v1/auth/me")).json()["default_bucket"]
        before = os.urandom(3 << 20)
        assert (await _upload(admin, f"{bucket}/before.bin", before)).status_code == 201
        r = await admin.post("/api/v1/api-keys", json={"description": "made-before"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        health = await admin.get("/healthz")
        assert health.status_code == 200 and health.json()["dependencies"]["disk"]["status"] == "up"

        filler = _fill(small_disk)

        async def disk_reported_full():
            r = await admin.get("/healthz")
            return r if r.json()["dependencies"]["disk"]["status"] == "down" else None
        health = await wait_for(disk_reported_full, timeout=30)
        assert health.status_code == 503 and "disk full" in health.json()["dependencies"]["disk"]["error"]

        r = await _upload(admin, f"{bucket}/during.bin", os.urandom(2 << 20))
        assert r.status_code == 507, r.text
        error = r.json()["error"]
        assert error["code"] == "insufficient_storage" and "disk is full" in error["message"]
        assert str(small_disk) not in error["message"]    # the folder is the operator's business
        # A database write may still fit in what its files hold: either it is stored, or refused the same way.
        r = await admin.post("/api/v1/api-keys", json={"description": "made-while-full"})
        assert r.status_code in (201, 507), r.text
        made_while_full = r.status_code == 201

        filler.unlink()

        async def healthy():
            r = await admin.get("/healthz")
            return r if r.status_code == 200 else None
        await wait_for(healthy, timeout=120)
        r = await _upload(admin, f"{bucket}/after.bin", b"after")
        assert r.status_code == 201, r.text

        # Nothing lost, nothing half-written.
        stored = await store.get_bytes(ObjectPath.parse(f"{bucket}/before.bin"))
        assert hashlib.sha256(stored).digest() == hashlib.sha256(before).digest()
        assert not await store.exists(ObjectPath.parse(f"{bucket}/during.bin"))
        listing = (await admin.get("/api/v1/storage/objects", params={"path": bucket})).json()
        sizes = {item["path"]: item["size"] for item in listing["items"]}
        assert sizes[f"{bucket}/before.bin"] == len(before) and sizes[f"{bucket}/after.bin"] == 5
        assert f"{bucket}/during.bin" not in sizes
        keys = {k["description"] for k in (await admin.get("/api/v1/api-keys")).json()["items"]}
        assert "made-before" in keys and ("made-while-full" in keys) == made_while_full
        async with httpx.AsyncClient(base_url=running["url"], timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as oai:
            assert (await oai.get("/v1/models")).status_code == 200
