"""Data migrations on the real database (issue 18, item 9): applied once, in order, recorded; two
processes starting together apply each once; data of a newer release is refused; the serving
migration gives services from before resource pools their placement."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from services.lib.common.migrations import MIGRATIONS, Migration, NewerData, migrate
from services.lib.readmodels.serving_refs import SERVICES
from services.serving.migrations import MIGRATIONS as SERVING_MIGRATIONS

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(embedded_servers):
    client = AsyncIOMotorClient(embedded_servers.settings_env()["MAAS_MONGO_URL"])
    name = f"maas_migrations_{uuid.uuid4().hex[:8]}"
    yield client[name]
    await client.drop_database(name)
    client.close()


def counting(calls: list[str]):
    def make(mid: str) -> Migration:
        async def apply(db) -> int:
            calls.append(mid)
            await asyncio.sleep(0.05)    # long enough for a second process to look in the meantime
            return 1
        return Migration(mid, f"step {mid}", apply)
    return make


async def test_pending_migrations_are_applied_once_in_order_and_recorded(db):
    calls: list[str] = []
    make = counting(calls)
    first = [make("0002-b"), make("0001-a")]
    assert await migrate(db, first, known={"0001-a", "0002-b"}) == ["0001-a", "0002-b"]
    assert await migrate(db, first, known={"0001-a", "0002-b"}) == []
    later = first + [make("0003-c")]
    assert await migrate(db, later, known={"0001-a", "0002-b", "0003-c"}) == ["0003-c"]
    assert calls == ["0001-a", "0002-b", "0003-c"]
    records = [d async for d in db[MIGRATIONS].find().sort("_id", 1)]
    assert [(r["_id"], r["description"], r["documents_changed"]) for r in records] == \
        [("0001-a", "step 0001-a", 1), ("0002-b", "step 0002-b", 1), ("0003-c", "step 0003-c", 1)]
    assert all(r["applied_at"] and r["by"] for r in records)


async def test_two_processes_starting_together_apply_each_migration_once(db):
    calls: list[str] = []
    make = counting(calls)
    migrations = [make("0001-a"), make("0002-b")]
    done = await asyncio.gather(*(migrate(db, migrations, known={"0001-a", "0002-b"}, wait_seconds=0.05)
                                  for _ in range(2)))
    assert calls == ["0001-a", "0002-b"]
    assert sorted(done, key=len) == [[], ["0001-a", "0002-b"]]


async def test_data_of_a_newer_release_is_refused(db):
    await db[MIGRATIONS].insert_one({"_id": "9999-from-the-future", "description": "?"})
    with pytest.raises(NewerData, match="9999-from-the-future"):
        await migrate(db, [], known=set())


async def test_services_from_before_pools_get_the_public_pools_placement(db):
    await db[SERVICES].insert_many([
        {"_id": "old", "instance_spec": "cpu.2u8g"},
        {"_id": "new", "instance_spec": "cpu.1u4g", "resource_pool": "team-a",
         "placement": {"pool": "team-a", "cpus": 1.0, "gpus": 0.0, "memory_bytes": 0, "nodes": 1}}])
    known = {m.id for m in SERVING_MIGRATIONS}
    assert await migrate(db, SERVING_MIGRATIONS, known=known) == ["serving-0001-placement"]
    old, new = await db[SERVICES].find_one({"_id": "old"}), await db[SERVICES].find_one({"_id": "new"})
    assert old["resource_pool"] == "public" and old["placement"]["pool"] == "public"
    assert old["placement"]["cpus"] == 2.0
    assert new["placement"]["pool"] == "team-a"
    record = await db[MIGRATIONS].find_one({"_id": "serving-0001-placement"})
    assert record["documents_changed"] == 1
