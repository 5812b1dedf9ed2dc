"""The audit trail: one record per state-changing call, committed with the change it records.

A fake MongoDB keeps transactional writes aside until commit (and drops them on abort), so these
tests see what a real transaction would leave behind. The integration test
(tests/integration/test_audit_log.py) runs the real thing.
"""
from __future__ import annotations

import asyncio
import copy

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from services.lib.common import audit
from services.lib.common.audit import AUDIT, AuditTrail
from services.lib.common.auth import Principal
from services.lib.common.errors import ApiError, install_error_handlers
from services.lib.common.outbox import UnitOfWork
from services.lib.common.settings import Settings


class FakeSession:
    def __init__(self):
        self.pending: list = []

    def start_transaction(self):
        self.pending = []

    async def commit_transaction(self):
        for apply in self.pending:
            apply()
        self.pending = []

    async def abort_transaction(self):
        self.pending = []

    async def end_session(self):
        pass


class FakeCollection:
    def __init__(self, mongo: FakeMongo, name: str):
        self.mongo, self.name = mongo, name
        self.docs: dict = {}

    def _later(self, session, apply):
        self.mongo.writes.append((self.name, session is not None))
        if session is None:
            apply()
        else:
            session.pending.append(apply)

    async def insert_one(self, doc, session=None):
        def apply():
            if doc["_id"] in self.docs:
                raise AssertionError(f"duplicate {doc['_id']}")
            self.docs[doc["_id"]] = copy.deepcopy(doc)
        self._later(session, apply)

    async def update_one(self, query, update, upsert=False, session=None):
        def apply():
            doc = self.docs.get(query["_id"])
            if doc is None:
                if not upsert:
                    return
                doc = self.docs[query["_id"]] = {"_id": query["_id"], **update.get("$setOnInsert", {})}
            doc.update(update.get("$set", {}))
        self._later(session, apply)


class FakeClient:
    async def start_session(self):
        return FakeSession()


class FakeMongo:
    def __init__(self):
        self.client = FakeClient()
        self.collections: dict[str, FakeCollection] = {}
        self.writes: list[tuple[str, bool]] = []

    def __getitem__(self, name):
        return self.collections.setdefault(name, FakeCollection(self, name))

    def records(self) -> list[dict]:
        return list(self[AUDIT].docs.values())


ALICE = Principal(user_id="u-alice", tenant_id="t-1", username="alice", role="user")


async def signed_in(request: Request) -> Principal:
    """A stand-in for current_principal and the authorization dependency."""
    if request.headers.get("authorization") != "Bearer alice":
        raise ApiError(401, "unauthorized", "invalid or revoked token")
    audit.note_principal(ALICE, route=request.scope["route"].path)
    if action := request.headers.get("x-action"):
        request.state.action = action
    return ALICE


def make_app(mongo: FakeMongo) -> tuple[FastAPI, dict]:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(AuditTrail, mongo=mongo)
    settings = Settings()
    later: dict = {}

    async def change(name: str = "thing"):
        async with UnitOfWork(mongo, settings) as uow:
            await uow.collection("things").insert_one({"_id": name}, session=uow.session)

    @app.post("/things", status_code=201)
    async def create(_: Principal = Depends(signed_in)):
        await change()
        return {"ok": True}

    @app.post("/things/{name}/conflict-after-commit")
    async def conflict_after_commit(name: str, _: Principal = Depends(signed_in)):
        await change(name)
        raise ApiError(409, "conflict", "changed, then refused")

    @app.post("/things/{name}/aborted")
    async def aborted(name: str, _: Principal = Depends(signed_in)):
        async with UnitOfWork(mongo, settings) as uow:
            await uow.collection("things").insert_one({"_id": name}, session=uow.session)
            raise ApiError(400, "invalid_parameter", "refused mid-transaction")

    @app.post("/things/two")
    async def two(_: Principal = Depends(signed_in)):
        await change("first")
        await change("second")
        return {}

    @app.post("/things/crash")
    async def crash(_: Principal = Depends(signed_in)):
        raise RuntimeError("a bug")

    @app.get("/things")
    async def read(_: Principal = Depends(signed_in)):
        await change("read-side-effect")
        return {}

    @app.post("/v1/chat/completions")
    async def chat():
        await change("chat")
        return {}

    @app.post("/things/later")
    async def after_the_answer(_: Principal = Depends(signed_in)):
        release = asyncio.Event()

        async def work():
            await release.wait()
            await change("later")
        later["release"], later["task"] = release, asyncio.create_task(work())
        return {}

    @app.post("/public")
    async def public():
        await change("public")
        return {}

    return app, later


@pytest.fixture
async def setup():
    mongo = FakeMongo()
    app, later = make_app(mongo)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://test", headers={"Authorization": "Bearer alice"}) as client:
        yield mongo, client, later


async def test_a_committed_change_is_recorded_once_in_its_transaction(setup):
    mongo, client, _ = setup
    r = await client.post("/things", headers={"x-action": "maas:things:create"})
    assert r.status_code == 201
    [record] = mongo.records()
    assert record["status"] == 201 and record["action"] == "maas:things:create"
    assert (record["user_id"], record["username"], record["tenant_id"]) == ("u-alice", "alice", "t-1")
    assert record["resource"] == "/things" and record["method"] == "POST" and record["client"]
    # The first write of the record was inside the transaction of the change; the status came after.
    audit_writes = [in_tx for name, in_tx in mongo.writes if name == AUDIT]
    assert audit_writes == [True, False]


async def test_without_an_action_the_route_names_it(setup):
    mongo, client, _ = setup
    await client.post("/things/x/aborted")
    [record] = mongo.records()
    assert record["action"] == "POST /things/{name}/aborted"


async def test_a_change_then_an_error_is_one_record_with_the_error_status(setup):
    mongo, client, _ = setup
    r = await client.post("/things/a/conflict-after-commit")
    assert r.status_code == 409
    assert "a" in mongo["things"].docs
    [record] = mongo.records()
    assert record["status"] == 409


async def test_an_aborted_transaction_leaves_only_the_refusal(setup):
    mongo, client, _ = setup
    r = await client.post("/things/b/aborted")
    assert r.status_code == 400
    assert "b" not in mongo["things"].docs
    [record] = mongo.records()
    assert record["status"] == 400
    assert [in_tx for name, in_tx in mongo.writes if name == AUDIT] == [False]


async def test_several_units_of_work_in_one_call_make_one_record(setup):
    mongo, client, _ = setup
    assert (await client.post("/things/two")).status_code == 200
    assert set(mongo["things"].docs) == {"first", "second"}
    [record] = mongo.records()
    assert record["status"] == 200
    assert [in_tx for name, in_tx in mongo.writes if name == AUDIT] == [True, False]


async def test_a_crash_is_recorded_as_500(setup):
    mongo, client, _ = setup
    r = await client.post("/things/crash")
    assert r.status_code == 500
    [record] = mongo.records()
    assert record["status"] == 500 and record["username"] == "alice"


async def test_anonymous_refusals_are_not_recorded(setup):
    mongo, client, _ = setup
    r = await client.post("/things", headers={"Authorization": "Bearer someone-else"})
    assert r.status_code == 401
    assert mongo.records() == []


async def test_a_committed_change_without_a_caller_is_still_recorded(setup):
    mongo, client, _ = setup
    assert (await client.post("/public")).status_code == 200
    [record] = mongo.records()
    assert record["user_id"] is None and record["status"] == 200


async def test_reads_and_inference_calls_are_not_audited(setup):
    mongo, client, _ = setup
    assert (await client.get("/things")).status_code == 200
    assert (await client.post("/v1/chat/completions")).status_code == 200
    assert mongo.records() == []
    assert {"read-side-effect", "chat"} <= set(mongo["things"].docs)


async def test_work_finishing_after_the_answer_does_not_write_a_second_record(setup):
    mongo, client, later = setup
    assert (await client.post("/things/later")).status_code == 200
    [record] = mongo.records()
    assert record["status"] == 200
    later["release"].set()
    await later["task"]
    assert "later" in mongo["things"].docs
    assert len(mongo.records()) == 1
    assert [in_tx for name, in_tx in mongo.writes if name == AUDIT] == [False]


async def test_each_request_gets_its_own_record(setup):
    mongo, client, _ = setup
    for _ in range(3):
        await client.post("/things/x/aborted")
    assert len({r["_id"] for r in mongo.records()}) == 3
    assert audit.current() is None   # nothing leaks out of a request


class IndexedCollection:
    def __init__(self, indexes: dict):
        self.indexes, self.created = indexes, []

    async def index_information(self):
        return self.indexes

    async def create_index(self, keys, **options):
        self.created.append((keys, options))


class RetentionMongo:
    def __init__(self, indexes: dict):
        self.collection = IndexedCollection(indexes)
        self.commands: list = []
        self.db = self

    def __getitem__(self, name):
        assert name == AUDIT
        return self.collection

    async def command(self, *args, **kwargs):
        self.commands.append((args, kwargs))


async def test_the_retention_index_is_made_then_changed_with_the_setting():
    fresh = RetentionMongo({})
    await audit.ensure_retention(fresh, days=180)
    assert fresh.collection.created == [([("at", 1)], {"name": audit.TTL_INDEX, "expireAfterSeconds": 180 * 86400})]
    kept = RetentionMongo({audit.TTL_INDEX: {"expireAfterSeconds": 180 * 86400}})
    await audit.ensure_retention(kept, days=180)
    assert kept.collection.created == [] and kept.commands == []
    changed = RetentionMongo({audit.TTL_INDEX: {"expireAfterSeconds": 180 * 86400}})
    await audit.ensure_retention(changed, days=30)
    assert changed.commands == [(("collMod", AUDIT), {"index": {"name": audit.TTL_INDEX,
                                                                 "expireAfterSeconds": 30 * 86400}})]
