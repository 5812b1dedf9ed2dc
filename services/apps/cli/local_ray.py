"""``maas up --ray``: a one-node Ray cluster on this machine, its node the public pool.

Runs ``ray start --head --block`` as a child process (stopping it stops the cluster's processes it
started, and nothing else of Ray on the machine), bound to 127.0.0.1, with the machine's CPUs and
the label ``openmaas.io/pool=public``; the platform then runs its job work as Ray tasks
(``MAAS_RAY_ADDRESS``), exactly as on a real cluster. More machines join with ``RAY_worker_niceness=0 ray start
--address=<this address> --labels=openmaas.io/pool=<pool>`` (docs/cluster.md).
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.lib.common.cluster import NODE_ENV, POOL_LABEL, PUBLIC_POOL

_RAY_CLI = "from ray.scripts.scripts import main; main()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_command(*, port: int, cpus: int, temp_dir: Path) -> list[str]:
    return [sys.executable, "-c", _RAY_CLI, "start", "--head", "--block", f"--port={port}",
            "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", f"--labels={POOL_LABEL}={PUBLIC_POOL}",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"]


class LocalRayHead:
    """The head, and what a process needs to join it as a driver: ``driver_env`` (its address is
    ``address``). Ray's token authentication is on: a fresh token in an owner-only file."""

    def __init__(self, *, data_dir: Path, cpus: int | None = None):
        # Ray's socket paths must stay short (AF_UNIX: 107 bytes): its own folder under data_dir/ray.
        self.temp_dir = data_dir / "ray"
        self.token_file = self.temp_dir / "auth_token"
        self.cpus = cpus or os.cpu_count() or 1
        self.address = ""
        self._proc: subprocess.Popen | None = None

    @property
    def driver_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}   # every address on 127.0.0.1

    def start(self, *, timeout: float = 120) -> str:
        self.temp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.token_file.touch(mode=0o600)
        self.token_file.chmod(0o600)
        self.token_file.write_text(secrets.token_hex(32))
        port = _free_port()
        env = {**os.environ, **NODE_ENV, **self.driver_env}
        self._proc = subprocess.Popen(head_command(port=port, cpus=self.cpus, temp_dir=self.temp_dir), env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(self.temp_dir / "head.log", "ab"))
        self.address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ray start exited with code {self._proc.returncode}; see {self.temp_dir / 'head.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return self.address
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Ray head did not listen on {self.address} within {timeout:g} s")

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()          # --block: ray start stops the processes it started
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
