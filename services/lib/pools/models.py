"""Resource pool documents and their API shapes."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING

from contracts.timestamps import Timestamp
from services.lib.common.cluster import PUBLIC_POOL
from services.lib.common.mongo import IndexSpec

POOLS = "resource_pools"
INDEXES: list[IndexSpec] = [(POOLS, [("tenant_id", ASCENDING)], {})]
# The guide's pool *types*: a request may still say "dedicated" (the account's one dedicated pool).
DEDICATED = "dedicated"
RESERVED_NAMES = {PUBLIC_POOL, DEDICATED}
# A pool name is a node label value in the cluster (openmaas.io/pool=<name>): the label rule, shorter.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
NAME_RULE = "1-32 lowercase letters, digits and '-', starting and ending with a letter or digit"


# What a job or service request names: "public", one of the account's dedicated pools, or the
# guide's pool type "dedicated" (the account's only dedicated pool).
PoolChoice = Annotated[str, Field(pattern=NAME_PATTERN, description=(
    "'public', a dedicated pool of your account by name (GET /api/v1/pools), or 'dedicated' for your "
    "account's only dedicated pool"))]


class NodeResources(BaseModel):
    """What each node of a dedicated pool offers when the platform starts its nodes (the guide's
    pool flavor); the settings ``pool_node_max_cpus`` / ``pool_node_max_memory_gb`` cap it further."""
    model_config = ConfigDict(extra="forbid")
    cpus: int = Field(ge=1, le=1024, description="whole CPUs of each node (Ray counts CPUs in whole units)")
    memory_gb: float = Field(gt=0, le=16384, description="memory of each node, in GiB")


# A node of a resized pool when the request names no shape: the smallest instance spec (cpu.1u4g).
DEFAULT_NODE = NodeResources(cpus=1, memory_gb=4)
NODE_COUNT_DESCRIPTION = ("how many nodes the platform keeps in the pool (0 or more, at most the setting "
                          "pool_max_nodes); only where the platform starts nodes (docs/cluster.md)")


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description=f"{NAME_RULE}; the cluster's nodes of this pool carry "
                                                          "the label openmaas.io/pool=<name>")
    description: str = Field("", max_length=256)
    node_count: int | None = Field(None, ge=0, le=1000, description=NODE_COUNT_DESCRIPTION)
    node_resources: NodeResources | None = Field(None, description="each node's CPUs and memory (default "
                                                                     "1 CPU, 4 GiB)")


class PoolUpdate(BaseModel):
    """Every field optional: a PATCH changes what it names."""
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=256)
    node_count: int | None = Field(None, ge=0, le=1000, description=NODE_COUNT_DESCRIPTION)
    node_resources: NodeResources | None = Field(None, description="each node's CPUs and memory; nodes "
                                                                     "started from now on get it")


class ResourcesView(BaseModel):
    cpus: float
    gpus: float
    memory_bytes: int


class NodeView(BaseModel):
    id: str
    address: str
    resources: ResourcesView


class AllocationView(BaseModel):
    kind: str
    job_id: str
    resources: ResourcesView
    since: Timestamp


class QueuedView(BaseModel):
    kind: str
    job_id: str
    name: str
    position: int
    reason: str


class PoolView(BaseModel):
    name: str
    type: str                          # public | dedicated
    description: str = ""
    created_at: Timestamp | None = None
    cluster: str                       # local | ray
    nodes: int
    capacity: ResourcesView
    allocated: ResourcesView           # by every account (public: the total only)
    free: ResourcesView
    # Resizing (docs/cluster.md): the nodes the platform keeps in the pool (None: it does not start
    # this pool's nodes), their shape, and whether the pool has them yet (ready) or not (scaling).
    node_count: int | None = None
    node_resources: NodeResources | None = None
    status: str = "ready"              # ready | scaling
    status_message: str = ""


class PoolDetail(PoolView):
    node_list: list[NodeView]
    allocations: list[AllocationView]  # this account's
    queue: list[QueuedView]            # this account's waiting jobs and services in this pool
