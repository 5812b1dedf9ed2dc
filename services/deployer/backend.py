"""Where inference instances run: the interface every instance backend implements.

The reconciler decides how many instances of which model version a service needs; a backend only
starts, stops, probes and lists them. ``LocalProcessBackend`` (local.py) runs them as subprocesses
on this machine; ``RayInstanceBackend`` (ray_backend.py) runs each as a Ray actor on a node of the
service's resource pool; another cluster backend (Kubernetes: one pod per instance) implements the
same five calls.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class InstanceLaunch:
    """Everything needed to start one instance of a service."""
    instance_id: str
    service_id: str
    served_model_name: str         # the `model` value the instance answers to (the service name)
    model_uri: str                 # s3://bucket/prefix/ of the version's weights (HF or ONNX folder)
    max_model_len: int             # template's max input+output tokens
    secret: str                    # the instance answers only calls bearing it (services.lib.inference.auth)
    cpus: int = 1                  # from the instance spec
    env: dict[str, str] = field(default_factory=dict)
    pool: str = "public"           # the service's resource pool (where a cluster backend places it)
    memory_bytes: int = 0          # from the instance spec (reserved where the backend reserves pool capacity)
    node_id: str | None = None     # the pool's node the ledger gave it (cluster backends start it there)


@dataclass(frozen=True)
class InstanceHandle:
    """Where a started instance lives; stored with the instance so another run can find it again."""
    instance_id: str
    url: str                       # base URL of its OpenAI-compatible server, e.g. http://127.0.0.1:41234
    node: str                      # the machine (or pod) it runs on
    details: dict = field(default_factory=dict)   # backend-specific (pid, log file, pod name...)


class Health(StrEnum):
    ready = "ready"                # /health answers 200: the model is loaded
    not_ready = "not_ready"        # running but not answering 200 (still loading, or hung)
    exited = "exited"              # the process (pod) is gone


class InstanceBackend(abc.ABC):
    name: str = "abstract"
    # Whether instances take their spec's resources from the service's pool (services.lib.pools.ledger):
    # on a cluster, yes; local processes share this machine with the platform and do not (docs/cluster.md).
    reserves_pool_capacity: bool = False

    @abc.abstractmethod
    async def start(self, launch: InstanceLaunch) -> InstanceHandle:
        """Start the instance and return at once with its handle (readiness is probed with ``health``)."""

    @abc.abstractmethod
    async def stop(self, handle: InstanceHandle, *, grace_seconds: float) -> None:
        """Ask it to finish its in-flight requests and exit; force it after ``grace_seconds``."""

    @abc.abstractmethod
    async def health(self, handle: InstanceHandle) -> Health:
        """Probe once."""

    @abc.abstractmethod
    async def list(self) -> list[InstanceHandle]:
        """The instances this backend runs now."""

    @abc.abstractmethod
    async def read_logs(self, handle: InstanceHandle, *, offset: int) -> tuple[list[str], int]:
        """Log lines (stdout and stderr) written since ``offset``, and the offset to continue from."""

    async def close(self) -> None:
        """Stop everything this backend started (the process hosting it is going away)."""
