"""The whole platform as one ``maas serve --services all`` process on embedded servers of its own, for
the benchmarks that measure that process from outside (soak.py, bench_load.py)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench_gateway import free_port, step, wait


@dataclass
class PlatformProcess:
    url: str
    api: object              # httpx.AsyncClient with the admin's token
    proc: subprocess.Popen
    servers: object          # EmbeddedServers
    settings: object         # the platform's Settings
    work: Path


@contextlib.asynccontextmanager
async def platform_process(prefix: str):
    import httpx

    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from services.lib.common.context import Platform
    from services.lib.common.settings import get_settings
    from services.lib.embedded.servers import EmbeddedServers

    work = Path(tempfile.mkdtemp(prefix=prefix))
    step("starting embedded servers")
    servers = EmbeddedServers(work / "data")
    servers.start(timeout=120)
    env = {**os.environ, **servers.settings_env(), "MAAS_WORK_DIR": str(work / "work"),
           "MAAS_IMPORT_PRESETS": "false"}   # no SmolLM2 conversion competing with what is measured
    os.environ.update(servers.settings_env())
    get_settings.cache_clear()
    settings = get_settings()
    admin = await ensure_bootstrap_admin(Platform.connect(settings))
    port = free_port()
    step("starting the platform (maas serve --services all)")
    log = open(work / "platform.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.apps.cli", "serve", "--services", "all",
                             "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=600,
                                     headers={"Authorization": f"Bearer {admin.token}"}) as api:
            async def up():
                if proc.poll() is not None:
                    raise RuntimeError(f"the platform exited; see {work / 'platform.log'}")
                with contextlib.suppress(httpx.HTTPError):
                    return (await api.get("/healthz")).status_code == 200
            await wait(up, 300, "platform start")
            yield PlatformProcess(url=url, api=api, proc=proc, servers=servers, settings=settings, work=work)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 120)
        if proc.poll() is None:
            proc.kill()
        log.close()
        servers.stop()
