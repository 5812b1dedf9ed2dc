"""No API route of the platform hops to FastAPI's thread pool.

FastAPI runs a plain ``def`` endpoint or dependency in its thread pool: a thread switch per request,
which cost every chat call about 1.4 ms of time to first token when ``get_platform`` was one.
"""
from __future__ import annotations

import inspect

from fastapi.routing import APIRoute

from services.lib.common.settings import get_settings
from services.runtime import build_app


def _api_routes(routes):
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)   # FastAPI keeps included routers whole
        yield from _api_routes(getattr(included, "routes", None) or getattr(route, "routes", None) or [])


def _dependencies(dependant):
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _runs_on_the_loop(call) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None))


def test_every_endpoint_and_dependency_is_async():
    app = build_app(get_settings(), services="all")
    routes = list(_api_routes(app.routes))
    assert any(r.path == "/v1/chat/completions" for r in routes) and len(routes) > 50
    sync = sorted({(r.path, getattr(c, "__name__", repr(c)))
                   for r in routes
                   for c in [r.endpoint, *(d.call for d in _dependencies(r.dependant) if d.call)]
                   if not _runs_on_the_loop(c)})
    assert sync == []
