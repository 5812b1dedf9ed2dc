"""Instances as Ray actors on the nodes of their service's resource pool (cluster mode).

Each instance is one actor, ``InstanceHost``, named ``instance-<id>`` in the platform's Ray
namespace and *detached*: it outlives the deployer that created it, so a deployer restart finds its
instances again by name (``list``) instead of killing what serves. The actor asks for the instance
spec's CPUs and memory and runs on the node of its pool that the platform's ledger gave it (hard
label constraints on the pool and on Ray's node-id label; ``pinned_by_label``): the ledger admitted
the instance on that node first, so Ray finds the room there.

On its node the actor starts the same inference server as the local backend
(``python -m services.lib.inference.server``, same arguments, an environment without the platform's
credentials, its secret included), bound to the node's IP address (or ``host`` when every node is
this machine, as in tests), and dies with it: the server is
the actor's child with a parent-death signal, so a killed actor or a lost node leaves no server.

Files: the deployer downloads the model into its cache on the shared work folder (every node
mounts ``MAAS_WORK_DIR`` at the same path, docs/cluster.md) and passes the folder's path — Ray
nodes never get object-storage credentials. The server's log is written there too, so the last
lines of an instance whose node was lost can still be shipped.

Ray pickles only our own calls; the launch travels as JSON text.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import ray

from services.lib.common.cluster import RayCluster, pinned_by_label
from services.lib.common.private_files import open_private_append, private_dir
from services.deployer.backend import Health, InstanceBackend, InstanceHandle, InstanceLaunch
from services.deployer.exports import ExportGate
# The local backend's server command, environment and log reading: one definition for both backends.
from services.deployer.local import _prepare_child, _read_lines, free_port, inference_command, instance_env
from services.deployer.modelcache import ModelCache

log = logging.getLogger(__name__)

ACTOR_PREFIX = "instance-"


def actor_name(instance_id: str) -> str:
    return f"{ACTOR_PREFIX}{instance_id}"


@ray.remote(max_restarts=0, max_task_retries=0)
class InstanceHost:
    """One instance server on this actor's node, and the answers about it (JSON text)."""

    def __init__(self, launch: str, model_dir: str | None, root: str, host: str | None):
        self.launch = InstanceLaunch(**json.loads(launch))
        self.host = host
        self.model_dir = Path(model_dir) if model_dir else None
        self.root = Path(root)
        self.log_path = self.root / "logs" / f"{self.launch.instance_id}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def start(self) -> str:
        host = self.host or ray.util.get_node_ip_address()
        port = free_port(host)
        with open_private_append(self.log_path) as out:   # the server keeps its own descriptor
            self.proc = await asyncio.create_subprocess_exec(
                *inference_command(self.launch, self.model_dir, port, host), stdout=out,
                stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL, env=instance_env(self.launch),
                cwd=str(self.root), preexec_fn=_prepare_child)
        self.info = {"url": f"http://{host}:{port}", "node_id": ray.get_runtime_context().get_node_id(),
                     "address": host, "port": port, "pid": self.proc.pid, "log": str(self.log_path),
                     "model_dir": str(self.model_dir) if self.model_dir else None,
                     "actor": actor_name(self.launch.instance_id)}
        return json.dumps(self.info)

    async def describe(self) -> str:
        return json.dumps({**self.info, "instance_id": self.launch.instance_id})

    async def exit_code(self) -> int | None:
        """None while the server runs."""
        return None if self.proc is None else self.proc.returncode

    async def stop(self, grace_seconds: float) -> None:
        """Let the server finish its in-flight requests and exit; kill it after ``grace_seconds``."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=grace_seconds)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def read_logs(self, offset: int) -> str:
        lines, new_offset = await asyncio.to_thread(_read_lines, self.log_path, offset)
        return json.dumps([lines, new_offset])


def _awaitable(ref) -> asyncio.Future:
    return asyncio.wrap_future(ref.future())


class RayInstanceBackend(InstanceBackend):
    name = "ray"
    reserves_pool_capacity = True

    def __init__(self, cluster: RayCluster, *, root: Path, models: ModelCache | None = None,
                 host: str | None = None, health_path: str = "/health", first_start_timeout: float = 900.0,
                 placement_timeout: float = 120.0, call_timeout: float = 5.0):
        # On the shared work folder: the model cache (read by the nodes) and the servers' logs.
        self.root = private_dir(root)
        private_dir(self.root / "logs")
        self.cluster, self.host, self.health_path = cluster, host or None, health_path
        self.exports = ExportGate(models, first_start_timeout=first_start_timeout)
        self.placement_timeout, self.call_timeout = placement_timeout, call_timeout
        self._actors: dict[str, Any] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False)

    async def _connect(self) -> None:
        await asyncio.to_thread(self.cluster.connect)

    async def _actor(self, instance_id: str):
        """The instance's actor (found by name after a restart), or None when it is gone."""
        actor = self._actors.get(instance_id)
        if actor is not None:
            return actor
        await self._connect()
        try:
            actor = await asyncio.to_thread(ray.get_actor, actor_name(instance_id), namespace=self.cluster.namespace)
        except ValueError:
            return None
        self._actors[instance_id] = actor
        return actor

    async def _call(self, ref, timeout: float):
        return await asyncio.wait_for(_awaitable(ref), timeout)

    # ------------------------------------------------------------------------------------------ start

    async def start(self, launch: InstanceLaunch) -> InstanceHandle:
        await self._connect()
        return await self.exports.start(launch, self._spawn, self.health)

    def actor_options(self, launch: InstanceLaunch) -> dict[str, Any]:
        return {"name": actor_name(launch.instance_id), "namespace": self.cluster.namespace, "lifetime": "detached",
                "num_cpus": launch.cpus, **({"memory": launch.memory_bytes} if launch.memory_bytes else {}),
                "scheduling_strategy": pinned_by_label(launch.pool, launch.node_id)}

    async def _spawn(self, launch: InstanceLaunch, model_dir: Path | None) -> InstanceHandle:
        actor = InstanceHost.options(**self.actor_options(launch)).remote(
            json.dumps(dataclasses.asdict(launch)), str(model_dir) if model_dir else None, str(self.root), self.host)
        self._actors[launch.instance_id] = actor
        try:   # placed (a node of the pool had room) and the server spawned
            info = json.loads(await self._call(actor.start.remote(), self.placement_timeout))
        except BaseException as exc:
            self._kill(launch.instance_id, actor)
            if isinstance(exc, TimeoutError):
                raise RuntimeError(f"no node of pool '{launch.pool}' took the instance within "
                                   f"{self.placement_timeout:.0f}s") from None
            raise
        log.info("instance %s of service %s started on ray node %s: %s", launch.instance_id, launch.service_id,
                 info["node_id"], info["url"])
        return InstanceHandle(instance_id=launch.instance_id, url=info["url"], node=info["node_id"], details=info)

    # ------------------------------------------------------------------------------------------ probe

    async def _exited(self, handle: InstanceHandle) -> bool:
        """True once the actor, its server or its node is gone; False while it runs or cannot tell."""
        node_id = handle.details.get("node_id")
        if node_id and node_id not in {n.id for n in await self.cluster.nodes()}:
            return True   # Ray declared the node dead: whatever ran there is lost
        actor = await self._actor(handle.instance_id)
        if actor is None:
            return True
        try:
            return await self._call(actor.exit_code.remote(), self.call_timeout) is not None
        except ray.exceptions.ActorDiedError:
            return True
        except (ray.exceptions.RayError, TimeoutError):
            return False  # unreachable for now: the HTTP probe decides between ready and not ready

    async def health(self, handle: InstanceHandle) -> Health:
        if await self._exited(handle):
            return Health.exited
        try:
            response = await self._http.get(handle.url + self.health_path)
        except httpx.HTTPError:
            return Health.not_ready
        if response.status_code != 200:
            return Health.not_ready
        self.exports.ready(handle.instance_id)
        return Health.ready

    async def list(self) -> list[InstanceHandle]:
        await self._connect()
        named = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        handles = []
        for entry in named:
            if entry.get("namespace") != self.cluster.namespace or not entry["name"].startswith(ACTOR_PREFIX):
                continue
            actor = await self._actor(entry["name"][len(ACTOR_PREFIX):])
            try:
                info = json.loads(await self._call(actor.describe.remote(), self.call_timeout))
            except (ray.exceptions.RayError, TimeoutError):
                continue
            if info.get("url"):
                handles.append(InstanceHandle(instance_id=info["instance_id"], url=info["url"],
                                              node=info["node_id"], details=info))
        return handles

    # ------------------------------------------------------------------------------------------ stop

    async def stop(self, handle: InstanceHandle, *, grace_seconds: float) -> None:
        self.exports.forget(handle.instance_id)
        actor = await self._actor(handle.instance_id)
        if actor is None:
            return
        try:
            await self._call(actor.stop.remote(grace_seconds), grace_seconds + self.call_timeout)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.info("instance %s did not stop gracefully (%s); killing its actor", handle.instance_id,
                     type(exc).__name__)
        self._kill(handle.instance_id, actor)

    def _kill(self, instance_id: str, actor) -> None:
        self._actors.pop(instance_id, None)
        try:
            ray.kill(actor, no_restart=True)   # the server dies with it (parent-death signal)
        except Exception:   # already gone
            pass

    async def close(self) -> None:
        """Instances are detached: they keep serving while the deployer restarts (it finds them by name)."""
        await self._http.aclose()

    # ------------------------------------------------------------------------------------------ logs

    async def read_logs(self, handle: InstanceHandle, *, offset: int) -> tuple[list[str], int]:
        actor = await self._actor(handle.instance_id)
        if actor is not None:
            try:
                lines, new_offset = json.loads(await self._call(actor.read_logs.remote(offset), self.call_timeout))
                return lines, new_offset
            except (ray.exceptions.RayError, TimeoutError):
                pass
        path = handle.details.get("log")   # the actor is gone: its log stays on the shared work folder
        if not path:
            return [], offset
        return await asyncio.to_thread(_read_lines, Path(path), offset)
