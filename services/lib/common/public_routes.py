"""The routes anyone may call without a token, in one place.

Every other route answers 401 before it does anything else. The OpenAPI document marks these as
needing no credentials, and tests/integration/test_unauthenticated_routes.py walks every route of the
assembled app against this list.
"""
from __future__ import annotations

# (method, path template as the route declares it)
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/api/v1/auth/login"),     # exchanges a password for a token
    # The webhook receiver proves itself with the token it was sent; it has no account of ours.
    ("POST", "/api/v1/notification-subscriptions/{subscription_id}/confirm"),
    ("GET", "/healthz"),                # readiness probes of orchestrators and load balancers
    # The API's own documentation.
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("GET", "/asyncapi.json"), ("GET", "/asyncapi"),   # the event catalogue (services/lib/common/asyncapi.py)
    # The console's page and static assets; the page itself logs in through /api/v1/auth/login.
    ("GET", "/"), ("GET", "/favicon.ico"), ("GET", "/console"), ("GET", "/console/assets/{path:path}"),
    ("GET", "/console/{page:path}"),
})


def is_public(method: str, path: str) -> bool:
    # HEAD is a GET without its body: public exactly where the GET is.
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return (method, path) in PUBLIC_ROUTES
