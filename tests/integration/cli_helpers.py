"""Run the real `maas` CLI (``python -m services.apps.cli``) as a subprocess against the running platform."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class Maas:
    def __init__(self, url: str, config_dir: Path):
        self.env = {k: v for k, v in os.environ.items() if k not in ("MAAS_URL", "MAAS_TOKEN", "MAAS_API_KEY")}
        self.env.update({"MAAS_CONFIG_DIR": str(config_dir), "MAAS_URL": url, "COLUMNS": "200",
                         "MAAS_LOG_LEVEL": "WARNING"})

    async def __call__(self, *args: str, input: str | None = None, env: dict | None = None,
                       timeout: float = 300) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.apps.cli", *args, env={**self.env, **(env or {})},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input else None), timeout=timeout)
        return Result(proc.returncode, out.decode(), err.decode())
