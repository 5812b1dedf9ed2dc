"""Only the platform calls an instance: every request but the health probe carries the instance's secret.

Keys, quotas, QPS limits and moderation are all enforced by the gateway, so an instance that answered
anyone who can reach its port would let them skip every one. The deployer makes one secret per
instance, hands it over in the environment (``MAAS_INSTANCE_SECRET``: a command line is readable by
every local user) and records it with the instance for the gateway, which sends
``Authorization: Bearer <secret>``. ``/health`` stays open for probes (the deployer's, a cluster's)
but tells a caller without the secret no more than the status.
"""
from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts.openai import error_body

SECRET_ENV = "MAAS_INSTANCE_SECRET"
PROBE_PATHS = frozenset({"/health"})


class InstanceSecret:
    def __init__(self, *, secret: str):
        if not secret:
            raise ValueError(f"{SECRET_ENV} must not be empty")
        self._expected = f"Bearer {secret}".encode()

    def admits(self, authorization: bytes | None) -> bool:
        # Constant time: the comparison must not reveal how much of a guess was right.
        return authorization is not None and hmac.compare_digest(authorization, self._expected)

    def admits_scope(self, scope: Scope) -> bool:
        authorization = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        return self.admits(authorization)


class RequireInstanceSecret:
    """ASGI middleware: 401 for every HTTP request without the secret, except the health probe."""

    def __init__(self, app: ASGIApp, *, secret: InstanceSecret):
        self.app, self.secret = app, secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS or self.secret.admits_scope(scope):
            await self.app(scope, receive, send)
            return
        body = error_body("This model instance answers only the platform's gateway: call the model through the "
                          "gateway's /v1 API with an API key (Authorization: Bearer <instance secret> is missing "
                          "or wrong).", type="authentication_error", code="invalid_instance_secret")
        await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
