"""``maas up --ray``: a one-node Ray cluster on this machine, its node the public pool, and the
nodes of dedicated pools resized through the API (``LocalRayWorkers``).

Runs ``ray start --head --block`` as a child process (stopping it stops the cluster's processes it
started, and nothing else of Ray on the machine), bound to 127.0.0.1, with the machine's CPUs and
the label ``openmaas.io/pool=public``; the platform then runs its job work as Ray tasks
(``MAAS_RAY_ADDRESS``), exactly as on a real cluster. More machines join with ``RAY_worker_niceness=0 ray start
--address=<this address> --labels=openmaas.io/pool=<pool>`` (docs/cluster.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.lib.common.cluster import NODE_ENV, POOL_LABEL, PUBLIC_POOL

log = logging.getLogger(__name__)

_RAY_CLI = "from ray.scripts.scripts import main; main()"
# A worker node of the local cluster: every address on 127.0.0.1 takes RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# (driver_env), with which `ray start --address` refuses to join ("multi-node clusters are not supported
# on Windows and OSX"). Only that refusal is lifted, in the CLI's own view of the constant: the node's
# addresses stay loopback (ray's services module keeps the real value).
_RAY_WORKER_CLI = ("import types, ray._private.ray_constants as rc, ray.scripts.scripts as s; "
                   "view = types.ModuleType(rc.__name__); view.__dict__.update(vars(rc)); "
                   "view.ENABLE_RAY_CLUSTER = True; s.ray_constants = view; s.main()")
NODE_LABEL = "openmaas.io/node"     # services.lib.pools.provisioning.NODE_LABEL (the CLI imports no library)


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


def worker_command(*, address: str, pool: str, name: str, cpus: int, memory_bytes: int) -> list[str]:
    """``ray start`` of one node of ``pool`` joining the head at ``address``, on 127.0.0.1, each of
    its ports picked free (several nodes share this machine)."""
    ports = [_free_port() for _ in range(6)]
    object_store = min(max(memory_bytes // 10, 100 * 2**20), 2 * 2**30)   # Ray's minimum is ~75 MiB
    return [sys.executable, "-c", _RAY_WORKER_CLI, "start", f"--address={address}", "--block",
            "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0", f"--memory={memory_bytes}",
            f"--object-store-memory={object_store}", f"--labels={POOL_LABEL}={pool},{NODE_LABEL}={name}",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
            f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
            "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats"]


class _Worker:
    def __init__(self, *, pool: str, name: str, cpus: int, memory_bytes: int, proc: subprocess.Popen, log: Path):
        self.pool, self.name, self.cpus, self.memory_bytes, self.proc, self.log = pool, name, cpus, memory_bytes, proc, log


class LocalRayWorkers:
    """The local provisioner (``services.lib.pools.provisioning.NodeProvisioner``): the nodes of dedicated
    pools as ``ray start`` child processes of ``maas up`` joined to its head, stopped with it.

    A node is removed only while Ray reports it idle (or before it joined); ``ray start --block``
    drains it on SIGTERM (Ray refuses new work there and lets what runs finish). A node that exits by
    itself is started again at the next pass."""
    kind = "local"

    def __init__(self, head: LocalRayHead):
        self._head = head
        self._workers: dict[str, _Worker] = {}
        self._stopping: list[_Worker] = []
        self._exits: dict[str, str] = {}      # pool -> the last unexpected exit, said until a node joins

    async def apply(self, target, nodes) -> str:
        return await asyncio.to_thread(self._apply, target, nodes)

    def _apply(self, target, nodes) -> str:
        pool = target.pool
        cpus = target.cpus or 1
        memory = target.memory_bytes or 4 * 2**30
        self._reap()
        mine = [w for w in self._workers.values() if w.pool == pool]
        joined = {n.name: n for n in nodes}
        if any(w.name in joined for w in mine):
            self._exits.pop(pool, None)

        def removable(w: _Worker) -> bool:
            return w.name not in joined or joined[w.name].idle
        # Nodes of an older shape go once idle (the count below starts their successors); then the surplus.
        doomed = [w for w in mine if (w.cpus, w.memory_bytes) != (cpus, memory) and removable(w)]
        keep = [w for w in mine if w not in doomed]
        surplus = len(keep) - target.count
        if surplus > 0:
            spare = sorted((w for w in keep if removable(w)), key=lambda w: w.name in joined)   # unjoined first
            doomed += spare[:surplus]
        for w in doomed:
            self._stop(w)
        alive = len(mine) - len(doomed)
        for _ in range(max(target.count - alive, 0)):
            self._start(pool, cpus=cpus, memory_bytes=memory)
        busy = max(alive - target.count, 0)
        if busy:
            return f"waiting for {busy} busy node(s) of pool '{pool}' to finish their work before removing them"
        return self._exits.get(pool, "")

    def _start(self, pool: str, *, cpus: int, memory_bytes: int) -> None:
        name = f"{pool}-{secrets.token_hex(3)}"
        log_file = self._head.temp_dir / f"node-{name}.log"
        # The head's environment (token, loopback, NODE_ENV) without the platform's settings: a node
        # holds none of its credentials.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
        env.update(NODE_ENV)
        env.update(self._head.driver_env)
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(worker_command(address=self._head.address, pool=pool, name=name, cpus=cpus,
                                                   memory_bytes=memory_bytes),
                                    env=env, stdout=subprocess.DEVNULL, stderr=out)
        self._workers[name] = _Worker(pool=pool, name=name, cpus=cpus, memory_bytes=memory_bytes, proc=proc,
                                      log=log_file)
        log.info("pool %s: starting node %s (%d CPUs, %.1f GiB)", pool, name, cpus, memory_bytes / 2**30)

    def _stop(self, worker: _Worker) -> None:
        self._workers.pop(worker.name, None)
        if worker.proc.poll() is None:
            worker.proc.terminate()        # --block: ray start drains the node and stops its processes
        self._stopping.append(worker)
        log.info("pool %s: stopping node %s", worker.pool, worker.name)

    def _reap(self) -> None:
        self._stopping = [w for w in self._stopping if w.proc.poll() is None]
        for worker in [w for w in self._workers.values() if w.proc.poll() is not None]:
            del self._workers[worker.name]
            # The pool's status (its owner reads it) names no folder of this machine; the log does.
            self._exits[worker.pool] = (f"node {worker.name} exited with code {worker.proc.returncode}; "
                                        "starting another")
            log.warning("pool %s: node %s exited with code %s (its log: %s)", worker.pool, worker.name,
                        worker.proc.returncode, worker.log)

    def names(self, pool: str) -> list[str]:
        return sorted(w.name for w in self._workers.values() if w.pool == pool)

    def stop_all(self, *, timeout: float = 60) -> None:
        """Stop every node this started (``maas up`` ends: no node outlives it)."""
        for worker in list(self._workers.values()):
            self._stop(worker)
        deadline = time.monotonic() + timeout
        for worker in self._stopping:
            try:
                worker.proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait(timeout=10)
        self._stopping = []

    async def close(self) -> None:
        await asyncio.to_thread(self.stop_all)
