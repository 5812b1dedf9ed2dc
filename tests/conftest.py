"""Shared fixtures.

``embedded_servers``: one real nanio + SecantusDB + Tansu stack for the whole test session (started
lazily by the first test that asks for it, stopped at the end).
``platform_env``: points ``services.lib.common.settings`` at that stack through the MAAS_* env vars.
``running_platform``: every service in one process with real HTTP on that stack (``api``: an httpx
client with the admin's token, ``anonymous``: one without). Here rather than in tests/integration so
the integration and browser tests share the one platform of the session.
"""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn

# Ray reads this when it is imported: every Ray node of the tests (and every address their drivers
# dial) is then 127.0.0.1, not this machine's interface address (../shared/INFRA.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from services.lib.common.http import server_config  # noqa: E402
from services.lib.common.settings import get_settings  # noqa: E402
from services.lib.embedded.servers import EmbeddedServers  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests that need no running platform run first (the sort is stable: the order is otherwise kept).

    While a synchronous test or fixture runs, the session's event loop, which hosts the platform,
    stands still: its Kafka consumers miss their heartbeats and are evicted from their groups, and
    every event after it waits while ten groups rejoin. Run before the platform starts, they cost it
    nothing."""
    items.sort(key=lambda item: "running_platform" in getattr(item, "fixturenames", ()))


# Set by Ray itself when it is first imported (to "0"): which test imports it first is an accident of order.
_SET_BY_IMPORTS = {"RAY_CLIENT_MODE"}


def _platform_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("MAAS_", "RAY_")) and k not in _SET_BY_IMPORTS}


@pytest.fixture(autouse=True)
def _leaves_the_platform_variables_as_it_found_them():
    """Every later child process inherits them: a MAAS_RAY_ADDRESS that one test left behind sent
    another test's tuning worker to a Ray head that never existed. (Session and module fixtures set
    theirs before this snapshot and undo them after this check.)"""
    before = _platform_vars()
    yield
    after = _platform_vars()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the test left these variables changed: {changed}"


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory: pytest.TempPathFactory):
    """The preset SmolLM2-135M-Instruct converted to a Hugging Face folder, once per session (the
    conversion takes ~30 s). Tests read it; one that writes into it (e.g. an ONNX export) copies it."""
    from services.lib.mlkit import smollm2

    return smollm2.convert_to_hf(tmp_path_factory.mktemp("smollm2") / "hf")


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


@asynccontextmanager
async def serve_platform(settings, *, services: str = "all"):
    """The platform's ``services`` in this process with real HTTP on ``settings``' servers; yields
    ``{"app", "platform", "url", "admin"}`` (the bootstrap admin)."""
    # Imported here: unit tests load this file too and need none of the services.
    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from services.runtime import build_app

    app = build_app(settings, services=services)
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
    try:
        yield {"app": app, "platform": app.state.platform, "url": f"http://127.0.0.1:{port}", "admin": admin}
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def cluster_platform(cluster, tmp_path_factory, *, name: str, services: str, env: dict[str, str] | None = None):
    """A platform in cluster mode (``MAAS_RAY_ADDRESS`` = ``cluster``'s) with its own database and
    topics on the session's embedded servers; ``env``: MAAS_* worker settings for its components
    only (they are read when the components are built). Yields what ``serve_platform`` yields plus
    ``"admin_client"``, an httpx client with the admin's token."""
    settings = get_settings().model_copy(update={
        "ray_address": cluster.address, "mongo_db": f"maas_{name}", "topic_prefix": f"maas-{name}",
        "work_dir": str(tmp_path_factory.mktemp(f"{name}-work"))})
    mp = pytest.MonkeyPatch()
    for key, value in (env or {}).items():
        mp.setenv(key, value)
    try:
        async with serve_platform(settings, services=services) as running:
            mp.undo()
            async with httpx.AsyncClient(base_url=running["url"], timeout=60,
                                         headers={"Authorization": f"Bearer {running['admin'].token}"}) as admin:
                yield {**running, "admin_client": admin}
    finally:
        mp.undo()


@pytest.fixture(scope="session")
async def running_platform(platform_env, tmp_path_factory):
    settings = get_settings().model_copy(update={"work_dir": str(tmp_path_factory.mktemp("work"))})
    async with serve_platform(settings) as running:
        yield running


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


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster for one test module (~1 GB, so one at a time, freed when the module ends): a
    head without CPUs, a public node with 2 CPUs and a node of the dedicated pool ``team-a`` with 2
    CPUs. Tests may add and remove nodes of their own pools."""
    from tests.ray_cluster import MiniCluster   # here: importing ray costs every other test a second

    cluster = MiniCluster().start()
    cluster.add_node("public", cpus=2)
    cluster.add_node("team-a", cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()
