"""Shared fixtures.

``embedded_servers``: one real nanio + SecantusDB + Tansu stack for the whole test session (started
lazily by the first test that asks for it, stopped at the end).
``platform_env``: points ``services.common.settings`` at that stack through the MAAS_* env vars.
``running_platform``: every service in one process with real HTTP on that stack (``api``: an httpx
client with the admin's token, ``anonymous``: one without). Here rather than in tests/integration so
the integration and browser tests share the one platform of the session.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from services.common.http import server_config
from services.common.settings import get_settings
from services.embedded.servers import EmbeddedServers


def pytest_collection_modifyitems(config, items):
    """Tests that need no running platform run first (the sort is stable: the order is otherwise kept).

    While a synchronous test or fixture runs, the session's event loop, which hosts the platform,
    stands still: its Kafka consumers miss their heartbeats and are evicted from their groups, and
    every event after it waits while ten groups rejoin. Run before the platform starts, they cost it
    nothing."""
    items.sort(key=lambda item: "running_platform" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def embedded_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServers]:
    servers = EmbeddedServers(tmp_path_factory.mktemp("embedded"))
    servers.start(timeout=60)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def platform_env(embedded_servers: EmbeddedServers) -> Iterator[dict[str, str]]:
    """Set the MAAS_* variables for the session (restored afterwards); Settings cache cleared."""
    env = embedded_servers.settings_env()
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield env
    finally:
        mp.undo()
        get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
async def running_platform(platform_env, tmp_path_factory):
    # Imported here: unit tests load this file too and need none of the services.
    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from services.runtime import build_app

    settings = get_settings().model_copy(update={"work_dir": str(tmp_path_factory.mktemp("work"))})
    app = build_app(settings, services="all")
    port = _free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    # Start-up loads transformers and joins Kafka groups: on a busy 2-core machine it can take a while.
    for _ in range(3600):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the platform did not start within 180 s")
    admin = await ensure_bootstrap_admin(app.state.platform)
    yield {"app": app, "platform": app.state.platform, "url": f"http://127.0.0.1:{port}", "admin": admin}
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
async def api(running_platform):
    admin = running_platform["admin"]
    async with httpx.AsyncClient(base_url=running_platform["url"], timeout=60,
                                 headers={"Authorization": f"Bearer {admin.token}"}) as client:
        yield client


@pytest.fixture(scope="session")
async def anonymous(running_platform):
    async with httpx.AsyncClient(base_url=running_platform["url"], timeout=30) as client:
        yield client
