"""Shared fixtures.

``embedded_servers``: one real nanio + SecantusDB + Tansu stack for the whole test session (started
lazily by the first test that asks for it, stopped at the end).
``platform_env``: points ``services.common.settings`` at that stack through the MAAS_* env vars.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common.settings import get_settings
from services.embedded.servers import EmbeddedServers


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
