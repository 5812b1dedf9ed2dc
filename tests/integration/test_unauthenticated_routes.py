"""Every route of the assembled app refuses a call without credentials (401), except the few public by
design, listed once in services.lib.common.public_routes.

The walk covers /api/v1, /v1, the console and whatever a service adds later: a new route that forgets
its auth dependency fails here. Path parameters get dummy ids: the 401 must come before any lookup.
"""
from __future__ import annotations

import re

from fastapi.routing import iter_route_contexts

from services.lib.common.public_routes import PUBLIC_ROUTES, is_public

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


def _routes(app) -> list[tuple[str, str]]:
    found = set()
    for route in iter_route_contexts(app.routes):
        for method in route.methods or ():
            if route.path and method != "HEAD":
                found.add((method, route.path))
    return sorted(found)


def _url(path: str) -> str:
    # A path parameter ({path:path} included) gets a dummy value that names nothing.
    return _PARAM.sub(lambda m: f"dummy-{m.group(1)}" if "path" not in m.group(0) else "dummy-bucket/dummy-key",
                      path)


async def test_every_route_but_the_public_ones_answers_401_without_credentials(running_platform, anonymous):
    routes = _routes(running_platform["app"])
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/api/v1/models") in routes
    assert len(routes) > 80
    open_routes = []
    for method, path in routes:
        if is_public(method, path):
            continue
        r = await anonymous.request(method, _url(path), json={} if method in ("POST", "PUT", "PATCH") else None)
        if r.status_code != 401:
            open_routes.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
    assert open_routes == []


async def test_a_wrong_token_is_refused_like_none(running_platform, anonymous):
    # Not just "no header": a forged bearer token gets no further either.
    forged = {"Authorization": "Bearer maas-forged-token"}
    for method, path in _routes(running_platform["app"]):
        if is_public(method, path) or method != "GET":
            continue
        r = await anonymous.request(method, _url(path), headers=forged)
        assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text[:120]}"


async def test_every_public_route_exists(running_platform):
    # A renamed route must not leave a stale (and maybe now wrong) entry in the public list.
    assert PUBLIC_ROUTES <= set(_routes(running_platform["app"]))


async def test_public_routes_answer_without_credentials(anonymous):
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/openapi.json")).status_code == 200
    assert (await anonymous.get("/console/")).status_code == 200
    r = await anonymous.post("/api/v1/auth/login", json={"username": "nobody", "password": "wrong-password"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
