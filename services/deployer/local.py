"""Instances as local subprocesses: one inference server per instance, on a free port, logs to a file.

The default backend of the embedded platform. Each instance is
``python -m services.lib.inference.server --model-dir DIR --port P --served-model-name NAME --max-model-len N``
with stdout and stderr in ``<root>/logs/<instance id>.log`` (owner-only). Children die with the
deployer (Linux parent-death signal), so a crashed platform leaves no orphan holding a port and
gigabytes of RAM.

An instance runs user-supplied weights and answers whatever reaches its port, so it gets none of the
platform's credentials (services.lib.common.child_env): only what it needs, its secret included
(services.lib.inference.auth). It listens on ``host`` (loopback unless the deployer is told otherwise).

The first instance of a model that has no ONNX export yet starts alone (services.deployer.exports).
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from services.lib.common.child_env import child_env
from services.lib.common.private_files import PRIVATE_UMASK, open_private_append, private_dir
from services.deployer.backend import Health, InstanceBackend, InstanceHandle, InstanceLaunch
from services.deployer.exports import ExportGate
from services.deployer.modelcache import ModelCache
from services.lib.inference.auth import SECRET_ENV
from services.lib.inference.providers import ENV_PROVIDER

log = logging.getLogger(__name__)

CommandFactory = Callable[[InstanceLaunch, "Path | None", int, str], list[str]]   # launch, model, port, host
MAX_LOG_READ = 1 << 20


def inference_command(launch: InstanceLaunch, model_dir: Path | None, port: int, host: str) -> list[str]:
    return [sys.executable, "-m", "services.lib.inference.server", "--model-dir", str(model_dir), "--port", str(port),
            "--host", host,
            "--served-model-name", launch.served_model_name, "--max-model-len", str(launch.max_model_len),
            "--threads", str(launch.cpus)]


def instance_env(launch: InstanceLaunch) -> dict[str, str]:
    """The child's environment: the interpreter's settings, no platform credentials, then what it needs."""
    needed = {"OMP_NUM_THREADS": str(launch.cpus), "MAAS_INSTANCE_THREADS": str(launch.cpus),
              "MAAS_INSTANCE_ID": launch.instance_id, "MAAS_SERVICE_ID": launch.service_id,
              SECRET_ENV: launch.secret, "PYTHONUNBUFFERED": "1"}
    if os.environ.get(ENV_PROVIDER):   # the operator's choice of execution provider
        needed[ENV_PROVIDER] = os.environ[ENV_PROVIDER]
    return child_env({**needed, **launch.env})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _prepare_child() -> None:  # runs in the child between fork and exec
    # Owner-only files; set here, not with create_subprocess_exec(umask=...), which uvloop rejects.
    os.umask(PRIVATE_UMASK)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: children are still stopped on a clean shutdown


class LocalProcessBackend(InstanceBackend):
    name = "local"

    def __init__(self, *, root: Path, models: ModelCache | None = None,
                 command: CommandFactory = inference_command, host: str = "127.0.0.1",
                 advertise_host: str | None = None,
                 health_path: str = "/health", first_start_timeout: float = 900.0, node: str | None = None):
        # Owner-only: tenants' weights (models/) and instance logs (prompts show up in errors).
        self.root = private_dir(root)
        private_dir(self.root / "logs")
        self.models, self.command, self.host, self.health_path = models, command, host, health_path
        # Where gateways reach the instances: the bind address unless that is a wildcard (containers).
        self.advertise_host = advertise_host or (
            socket.gethostbyname(socket.gethostname()) if host in ("0.0.0.0", "::") else host)
        self.exports = ExportGate(models, first_start_timeout=first_start_timeout)
        self.node = node or socket.gethostname()
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._handles: dict[str, InstanceHandle] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False)

    # ------------------------------------------------------------------------------------------ start

    async def start(self, launch: InstanceLaunch) -> InstanceHandle:
        return await self.exports.start(launch, self._spawn, self.health)

    async def _spawn(self, launch: InstanceLaunch, model_dir: Path | None) -> InstanceHandle:
        port = free_port(self.host)
        log_path = self.root / "logs" / f"{launch.instance_id}.log"
        with open_private_append(log_path) as out:  # the child keeps its own descriptor
            proc = await asyncio.create_subprocess_exec(
                *self.command(launch, model_dir, port, self.host), stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, env=instance_env(launch), cwd=str(self.root),
                preexec_fn=_prepare_child)
        handle = InstanceHandle(instance_id=launch.instance_id, url=f"http://{self.advertise_host}:{port}", node=self.node,
                                details={"pid": proc.pid, "port": port, "log": str(log_path),
                                         "model_dir": str(model_dir) if model_dir else None})
        self._procs[launch.instance_id] = proc
        self._handles[launch.instance_id] = handle
        log.info("instance %s of service %s started: pid %s, %s", launch.instance_id, launch.service_id,
                 proc.pid, handle.url)
        return handle

    # ------------------------------------------------------------------------------------------ probe

    def _alive(self, handle: InstanceHandle) -> bool:
        proc = self._procs.get(handle.instance_id)
        if proc is not None:
            return proc.returncode is None
        return _foreign_alive(handle)

    async def health(self, handle: InstanceHandle) -> Health:
        if not self._alive(handle):
            return Health.exited
        try:
            response = await self._http.get(handle.url + self.health_path)
        except httpx.HTTPError:
            return Health.exited if not self._alive(handle) else Health.not_ready
        if response.status_code != 200:
            return Health.not_ready
        self.exports.ready(handle.instance_id)
        return Health.ready

    async def list(self) -> list[InstanceHandle]:
        return [h for h in self._handles.values() if self._alive(h)]

    # ------------------------------------------------------------------------------------------ stop

    async def stop(self, handle: InstanceHandle, *, grace_seconds: float) -> None:
        proc = self._procs.pop(handle.instance_id, None)
        self._handles.pop(handle.instance_id, None)
        self.exports.forget(handle.instance_id)
        if proc is not None:
            if proc.returncode is None:
                proc.terminate()  # the server finishes in-flight requests, then exits
                try:
                    await asyncio.wait_for(proc.wait(), timeout=grace_seconds)
                except TimeoutError:
                    log.warning("instance %s did not exit in %.0fs; killing it", handle.instance_id, grace_seconds)
                    proc.kill()
                    await proc.wait()
            return
        await asyncio.to_thread(_stop_foreign, handle, grace_seconds)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(h, grace_seconds=10) for h in list(self._handles.values())),
                             return_exceptions=True)
        await self._http.aclose()

    # ------------------------------------------------------------------------------------------ logs

    async def read_logs(self, handle: InstanceHandle, *, offset: int) -> tuple[list[str], int]:
        path = handle.details.get("log")
        if not path:
            return [], offset
        return await asyncio.to_thread(_read_lines, Path(path), offset)


def _read_lines(path: Path, offset: int) -> tuple[list[str], int]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(MAX_LOG_READ)
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:  # only a partial line so far (unless it is huge)
        if len(data) < MAX_LOG_READ:
            return [], offset
        end = len(data) - 1
    chunk = data[:end + 1]
    lines = [line.decode("utf-8", errors="replace").rstrip("\r") for line in chunk.split(b"\n")[:-1]]
    return lines, offset + len(chunk)


def _foreign_process(handle: InstanceHandle):
    """The process of an instance started by an earlier run of this backend, if it still runs."""
    import psutil

    pid = handle.details.get("pid")
    if not pid:
        return None
    try:
        proc = psutil.Process(int(pid))
        if proc.environ().get("MAAS_INSTANCE_ID") == handle.instance_id:
            return proc
    except (psutil.Error, OSError):
        pass
    return None


def _foreign_alive(handle: InstanceHandle) -> bool:
    proc = _foreign_process(handle)
    return proc is not None and proc.is_running() and proc.status() != "zombie"


def _stop_foreign(handle: InstanceHandle, grace_seconds: float) -> None:
    import psutil

    proc = _foreign_process(handle)
    if proc is None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace_seconds)
    except psutil.TimeoutExpired:
        proc.kill()
    except psutil.Error:
        pass
