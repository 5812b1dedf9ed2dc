"""The audit log: who changed what, in which account, when, from where, and how the call ended.

One record per state-changing call (POST, PUT, PATCH, DELETE; the OpenAI data plane ``/v1`` is
metered instead, services/gateway/quotas/metering.py), never two:

- ``AuditTrail`` (ASGI middleware) gives each such request a context (a contextvar) with a record id
  chosen up front; the auth dependency notes the caller in it (``note_principal``), the login route
  the username tried (``note_actor``), the authorization dependency the action
  (``request.state.action``);
- ``UnitOfWork`` (outbox.py) writes the record in the same transaction as the change it commits
  (``pending`` / ``write``), so a committed change cannot go unrecorded;
- when the response starts, the middleware writes the status into that record, or writes the whole
  record for a call that committed no unit of work (refused, failed, or a route that writes without
  one), before the client sees the answer. Both writes are upserts of the one id: never a duplicate.
  Anonymous refusals (no token, no username) are not recorded, so they cannot fill the log.

Records are deleted ``audit_retention_days`` after the call (a TTL index; queries cut there too).
"""
from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING

from contracts import new_id
from services.lib.common.mongo import IndexSpec, Mongo

log = logging.getLogger(__name__)

AUDIT = "audit_log"
TTL_INDEX = "audit_ttl"
AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNAUDITED_PREFIXES = ("/v1/",)   # inference calls: metered per key, not audited one by one
CLIENT_CLOSED = 499              # the client went away before the answer (nginx's code)

INDEXES: list[IndexSpec] = [
    (AUDIT, [("tenant_id", ASCENDING), ("at", DESCENDING)], {}),
    (AUDIT, [("user_id", ASCENDING), ("at", DESCENDING)], {}),
    # (at) with its TTL is created by ensure_retention: its expiry is a setting.
]


@dataclass
class AuditContext:
    """What is known about one audited request; filled in while it runs."""
    record_id: str
    at: datetime
    method: str
    path: str
    client: str | None
    state: dict                       # the request's ``scope["state"]`` (``request.state``)
    user_id: str | None = None
    username: str | None = None
    tenant_id: str | None = None
    route: str | None = None          # the route's path template, once routed
    written: bool = False             # a committed unit of work holds the record
    closed: bool = False              # the response started: units of work no longer write it

    @property
    def action(self) -> str:
        action = self.state.get("action")
        if isinstance(action, str) and action:
            return action
        return f"{self.method} {self.route or self.path}"   # a route without a declared action

    @property
    def has_actor(self) -> bool:
        return bool(self.user_id or self.username)

    def fields(self) -> dict:
        return {"at": self.at, "tenant_id": self.tenant_id, "user_id": self.user_id, "username": self.username,
                "action": self.action, "resource": self.path, "method": self.method, "client": self.client}


_current: ContextVar[AuditContext | None] = ContextVar("maas_audit", default=None)


def current() -> AuditContext | None:
    return _current.get()


def note_actor(*, user_id: str | None, username: str | None, tenant_id: str | None) -> None:
    """Who the current request acts as (a login names the user it tries)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.user_id, ctx.username, ctx.tenant_id = user_id, username, tenant_id


def note_principal(principal, *, route: str | None = None) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.user_id, ctx.username, ctx.tenant_id = principal.user_id, principal.username, principal.tenant_id
        ctx.route = route or ctx.route


def note_action(action: str) -> None:
    """The action of a route that no authorization dependency names (public routes: login)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.state.setdefault("action", action)


# ------------------------------------------------------------------------------------ writes

def pending() -> AuditContext | None:
    """The current request's record if a unit of work committing now must write it."""
    ctx = _current.get()
    return ctx if ctx is not None and not ctx.written and not ctx.closed else None


async def write(ctx: AuditContext, mongo: Mongo, *, session) -> None:
    """Insert the record inside the caller's transaction (an upsert: a concurrent one is a no-op)."""
    await mongo[AUDIT].update_one({"_id": ctx.record_id}, {"$setOnInsert": {**ctx.fields(), "status": None}},
                                  upsert=True, session=session)


async def finish(ctx: AuditContext, mongo: Mongo, *, status: int) -> None:
    """The call's outcome: write the status (and the whole record when no unit of work did)."""
    ctx.closed = True
    if not (ctx.written or ctx.has_actor):
        return
    try:
        await mongo[AUDIT].update_one({"_id": ctx.record_id}, {"$set": {**ctx.fields(), "status": status}},
                                      upsert=True)
    except Exception:   # the call itself is done; its answer must not turn into an error now
        log.exception("writing the audit record of %s %s failed", ctx.method, ctx.path)


class AuditTrail:
    """ASGI middleware: one audit context per state-changing request, finished when the answer starts."""

    def __init__(self, app, *, mongo: Mongo):
        self.app, self.mongo = app, mongo

    @staticmethod
    def _context(scope) -> AuditContext | None:
        path = scope.get("path", "")
        if scope.get("method") not in AUDITED_METHODS or path.startswith(UNAUDITED_PREFIXES):
            return None
        client = scope.get("client")
        return AuditContext(record_id=new_id(), at=datetime.now(UTC), method=scope["method"], path=path,
                            client=client[0] if client else None, state=scope.setdefault("state", {}))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ctx = self._context(scope)
        # Set for every request, also to None: uvicorn may run a request in the context of the one
        # before it on the same connection (services/lib/common/telemetry.py).
        token = _current.set(ctx)
        try:
            if ctx is None:
                return await self.app(scope, receive, send)
            await self._audited(ctx, scope, receive, send)
        finally:
            _current.reset(token)

    async def _audited(self, ctx: AuditContext, scope, receive, send) -> None:
        async def send_recorded(message):
            if message["type"] == "http.response.start" and not ctx.closed:
                await finish(ctx, self.mongo, status=message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except BaseException as exc:
            if not ctx.closed:
                status = 500 if isinstance(exc, Exception) else CLIENT_CLOSED
                await finish(ctx, self.mongo, status=status)
            raise
        finally:
            ctx.closed = True


async def ensure_retention(mongo: Mongo, *, days: int) -> None:
    """The TTL index on ``at``, created or changed (collMod) to expire records after ``days``."""
    seconds = days * 86400
    indexes = await mongo[AUDIT].index_information()
    existing = indexes.get(TTL_INDEX)
    if existing is None:
        await mongo[AUDIT].create_index([("at", ASCENDING)], name=TTL_INDEX, expireAfterSeconds=seconds)
    elif existing.get("expireAfterSeconds") != seconds:
        await mongo.db.command("collMod", AUDIT, index={"name": TTL_INDEX, "expireAfterSeconds": seconds})
