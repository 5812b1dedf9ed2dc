"""Use cases of resource pools: which pools an account may use, what each holds, and the checks a
job or service request passes before it is accepted.

A dedicated pool belongs to one account: another account gets the same answer for it as for a pool
that does not exist (404, or a 400 naming ``resource_pool`` in a request), so pool names of other
accounts do not leak through errors beyond the name being taken at creation.
"""
from __future__ import annotations

import math

from pymongo.errors import DuplicateKeyError

from services.lib.common.auth import USERS
from services.lib.common.cluster import PUBLIC_POOL, Node, Resources
from services.lib.common.context import Platform, transact
from services.lib.common.errors import bad_request, conflict, not_found
from services.lib.common.jobs import now
from services.lib.pools import ledger
from services.lib.pools.models import (DEDICATED, DEFAULT_NODE, POOLS, RESERVED_NAMES, AllocationView, NodeResources,
                                   NodeView, PoolCreate, PoolDetail, PoolUpdate, PoolView, QueuedView, ResourcesView)
from services.lib.pools.provisioning import GIB, refusal

# A pool being deleted keeps its document (and its name) until its last node is gone; it is no
# longer any account's to see or use.
LIVE = {"deleting": {"$ne": True}}


def _res(r: Resources) -> ResourcesView:
    return ResourcesView(cpus=round(r.cpus, 3), gpus=round(r.gpus, 3), memory_bytes=r.memory_bytes)


async def capacity(platform: Platform, pool: str) -> tuple[Resources, list[Node]]:
    nodes = [n for n in await platform.cluster.nodes() if n.pool == pool]
    total = Resources()
    for node in nodes:
        total = total + node.resources
    return total, nodes


async def _own_pool(platform: Platform, *, tenant_id: str, name: str) -> dict | None:
    if name == PUBLIC_POOL:
        return {"_id": PUBLIC_POOL, "tenant_id": None, "description": "shared by every account", "created_at": None}
    return await platform.mongo[POOLS].find_one({"_id": name, "tenant_id": tenant_id, **LIVE})


async def _view(platform: Platform, doc: dict, *, detail_for: str | None = None) -> PoolView | PoolDetail:
    name = doc["_id"]
    total, nodes = await capacity(platform, name)
    used = await ledger.usage(platform.mongo[ledger.USAGE], name)
    desired = doc.get("node_count")
    # Scaling only where a provisioner works on it (a size kept from `maas up --ray` means nothing on
    # the embedded default).
    scaling = desired is not None and len(nodes) != desired and refusal(platform.settings, name) is None
    common = dict(name=name, type="public" if name == PUBLIC_POOL else "dedicated",
                  description=doc.get("description", ""), created_at=doc.get("created_at"),
                  cluster=platform.cluster.kind, nodes=len(nodes), capacity=_res(total), allocated=_res(used),
                  free=_res(total - used), node_count=desired,
                  node_resources=NodeResources(**doc["node_resources"]) if doc.get("node_resources") else None,
                  status="scaling" if scaling else "ready",
                  status_message=doc.get("status_message", "") if scaling else "")
    if detail_for is None:
        return PoolView(**common)
    allocations = [AllocationView(kind=a["kind"], job_id=a["job_id"], resources=_res(Resources.from_dict(a["resources"])),
                                  since=a["created_at"])
                   async for a in platform.mongo[ledger.ALLOCATIONS].find({"pool": name, "tenant_id": detail_for})]
    queue = [QueuedView(kind=q["kind"], job_id=q["job_id"], name=q.get("name", ""), position=q["position"],
                        reason=q["reason"])
             async for q in platform.mongo[ledger.QUEUE].find({"pool": name, "tenant_id": detail_for}).sort("position", 1)]
    return PoolDetail(**common, node_list=[NodeView(id=n.id, address=n.address, resources=_res(n.resources))
                                           for n in nodes],
                      allocations=allocations, queue=queue)


async def list_pools(platform: Platform, *, tenant_id: str) -> list[PoolView]:
    docs = [await _own_pool(platform, tenant_id=tenant_id, name=PUBLIC_POOL)]
    docs += [d async for d in platform.mongo[POOLS].find({"tenant_id": tenant_id, **LIVE}).sort("_id", 1)]
    return [await _view(platform, d) for d in docs]


async def get_pool(platform: Platform, *, tenant_id: str, name: str) -> PoolDetail:
    doc = await _own_pool(platform, tenant_id=tenant_id, name=name)
    if doc is None:
        raise not_found("resource pool", name)
    return await _view(platform, doc, detail_for=tenant_id)


async def create_pool(platform: Platform, *, tenant_id: str, user_id: str, request: PoolCreate) -> PoolDetail:
    if request.name in RESERVED_NAMES:
        raise bad_request(f"name: '{request.name}' is reserved; choose another name", field="name")
    doc = {"_id": request.name, "tenant_id": tenant_id, "description": request.description,
           "created_by": user_id, "created_at": now()}
    if request.node_count is not None or request.node_resources is not None:
        doc.update(await _size(platform, pool=request.name, node_count=request.node_count, shape=request.node_resources,
                         current={}))
    try:
        await transact(platform, lambda uow: uow.collection(POOLS).insert_one(doc, session=uow.session))
    except DuplicateKeyError:
        raise conflict(f"name: the pool name '{request.name}' is taken; choose another name", field="name") from None
    return await _view(platform, doc, detail_for=tenant_id)


async def update_pool(platform: Platform, *, tenant_id: str, name: str, request: PoolUpdate) -> PoolDetail:
    if name == PUBLIC_POOL:
        raise bad_request("name: the public pool cannot be changed", field="name")
    doc = await _own_pool(platform, tenant_id=tenant_id, name=name)
    if doc is None:
        raise not_found("resource pool", name)
    changes: dict = {}
    if request.description is not None:
        changes["description"] = request.description
    if request.node_count is not None or request.node_resources is not None:
        changes.update(await _size(platform, pool=name, node_count=request.node_count,
                                   shape=request.node_resources, current=doc))
        await _require_room_for_allocations(platform, pool=name, node_count=changes["node_count"],
                                            shape=changes.get("node_resources"))
    if not changes:
        raise bad_request("body: give description, node_count or node_resources to change", field="body")
    doc = await platform.mongo[POOLS].find_one_and_update(
        {"_id": name, "tenant_id": tenant_id, **LIVE}, {"$set": changes}, return_document=True)
    if doc is None:
        raise not_found("resource pool", name)
    return await _view(platform, doc, detail_for=tenant_id)


async def _size(platform: Platform, *, pool: str, node_count: int | None, shape: NodeResources | None,
                current: dict) -> dict:
    """The ``node_count`` / ``node_resources`` to store for a resize request, within the settings'
    limits; 409 where this platform does not start nodes."""
    settings = platform.settings
    why_not = refusal(settings, pool)
    if why_not:
        raise conflict(why_not, code="pool_nodes_not_managed", field="node_count")
    if node_count is not None and node_count > settings.pool_max_nodes:
        raise bad_request(f"node_count: at most {settings.pool_max_nodes} nodes per pool on this platform "
                          f"(setting pool_max_nodes); asked for {node_count}", field="node_count")
    if shape is not None and shape.cpus > settings.pool_node_max_cpus:
        raise bad_request(f"node_resources.cpus: at most {settings.pool_node_max_cpus:g} CPUs per node on this "
                          f"platform (setting pool_node_max_cpus); asked for {shape.cpus}",
                          field="node_resources.cpus")
    if shape is not None and shape.memory_gb > settings.pool_node_max_memory_gb:
        raise bad_request(f"node_resources.memory_gb: at most {settings.pool_node_max_memory_gb:g} GiB per node "
                          f"on this platform (setting pool_node_max_memory_gb); asked for {shape.memory_gb:g}",
                          field="node_resources.memory_gb")
    count = node_count if node_count is not None else current.get("node_count")
    if count is None:   # a shape alone: keep the nodes the pool has now
        count = len((await capacity(platform, pool))[1])
    if shape is None and not current.get("node_resources") and settings.pool_provisioner == "local":
        shape = DEFAULT_NODE      # local nodes need a size; on KubeRay the worker group's template has one
    changes: dict = {"node_count": count}
    if shape is not None:
        changes["node_resources"] = shape.model_dump()
    return changes


async def _require_room_for_allocations(platform: Platform, *, pool: str, node_count: int,
                                        shape: dict | None) -> None:
    """Shrinking never kills work: refuse a size whose nodes could not hold what is allocated in the
    pool now (CPUs, accelerators and memory: what pools account)."""
    used = await ledger.usage(platform.mongo[ledger.USAGE], pool)
    if used.cpus <= 1e-9 and used.gpus <= 1e-9 and used.memory_bytes <= 0:
        return
    if shape is not None:
        per_node = Resources(cpus=float(shape["cpus"]), memory_bytes=int(shape["memory_gb"] * GIB))
    else:   # the cluster's template decides the shape: judge by the pool's largest node now
        _, nodes = await capacity(platform, pool)
        per_node = max((n.resources for n in nodes), key=lambda r: (r.cpus, r.gpus), default=Resources())
    room = per_node.times(node_count)
    lacking = used.shortfall(room, where=f"on {node_count} nodes")
    if not lacking:
        return

    def nodes_for(amount: float, each: float) -> int:
        return math.ceil(amount / each - 1e-9) if each else (node_count + 1 if amount > 1e-9 else 0)
    need = max(nodes_for(used.cpus, per_node.cpus), nodes_for(used.gpus, per_node.gpus),
               nodes_for(used.memory_bytes, per_node.memory_bytes))
    raise conflict(f"node_count: work running in pool '{pool}' holds {', '.join(lacking)}; keep at least "
                   f"{need} nodes of this size, or stop work in the pool first", code="pool_in_use",
                   field="node_count")


async def delete_pool(platform: Platform, *, tenant_id: str, name: str) -> None:
    if name == PUBLIC_POOL:
        raise bad_request("name: the public pool cannot be deleted", field="name")
    doc = await _own_pool(platform, tenant_id=tenant_id, name=name)
    if doc is None:
        raise not_found("resource pool", name)
    in_use = await platform.mongo[ledger.ALLOCATIONS].count_documents({"pool": name})
    queued = await platform.mongo[ledger.QUEUE].count_documents({"pool": name})
    if in_use or queued:
        raise conflict(f"the pool '{name}' is in use: {in_use} running and {queued} queued jobs or instances; "
                       "stop or delete them first", code="pool_in_use")
    if doc.get("node_count") is not None and refusal(platform.settings, name) is None:
        _, nodes = await capacity(platform, name)
        if doc["node_count"] or nodes:
            # Its nodes go first (the provisioner scales the pool to 0, then drops the document).
            await platform.mongo[POOLS].update_one({"_id": name, "tenant_id": tenant_id},
                                                   {"$set": {"deleting": True, "node_count": 0}})
            return
    await platform.mongo[POOLS].delete_one({"_id": name, "tenant_id": tenant_id})


async def resolve_pool(platform: Platform, *, tenant_id: str, requested: str, field: str = "resource_pool") -> str:
    """The pool a request names: ``public``, one of the account's dedicated pools by name, or the
    guide's pool type ``dedicated`` (the account's only dedicated pool)."""
    if requested == PUBLIC_POOL:
        return PUBLIC_POOL
    if requested == DEDICATED:
        names = [d["_id"] async for d in platform.mongo[POOLS].find({"tenant_id": tenant_id, **LIVE},
                                                                     {"_id": 1}).limit(10)]
        if len(names) == 1:
            return names[0]
        if not names:
            raise bad_request(f"{field}: your account has no dedicated pool; create one (POST /api/v1/pools) "
                              "or use 'public'", field=field)
        raise bad_request(f"{field}: your account has several dedicated pools; name one of {', '.join(names)}",
                          field=field)
    if await platform.mongo[POOLS].find_one({"_id": requested, "tenant_id": tenant_id, **LIVE}, {"_id": 1}) is None:
        raise bad_request(f"{field}: '{requested}' is not a resource pool of your account; use 'public' or one of "
                          "your dedicated pools (GET /api/v1/pools)", field=field)
    return requested


async def placement(platform: Platform, *, tenant_id: str, requested: str, resources: Resources,
                    what: str, nodes: int = 1, field: str = "resource_pool") -> dict:
    """Check a request against its pool — the account may use it, and it could ever fit — and return
    the ``placement`` to store on the job: ``{"pool", "cpus", "gpus", "memory_bytes", "nodes"}``
    (``resources`` in all, in ``nodes`` equal shares on distinct nodes). A request
    larger than the whole pool is refused now, with the numbers, instead of queueing forever."""
    pool = await resolve_pool(platform, tenant_id=tenant_id, requested=requested, field=field)
    total, nodes_there = await capacity(platform, pool)
    lacking = resources.shortfall(total, where="in the whole pool")
    if lacking:
        raise bad_request(f"{field}: {what} needs {', '.join(lacking)} "
                          f"of pool '{pool}'; it could never start there", field=field)
    if platform.cluster.kind != "local":   # the local pool is this one machine: its total is its node
        _require_nodes_fit(nodes_there, share=resources.share(nodes), count=nodes, pool=pool, what=what,
                           field=field)
    return {"pool": pool, **resources.as_dict(), "nodes": nodes}


async def require_one_node_fits(platform: Platform, *, pool: str, resources: Resources, what: str,
                                field: str = "resource_pool") -> None:
    """For work that runs as one process on one node (an inference instance): refuse it now when no
    node of ``pool`` could ever hold it, even though the pool as a whole could."""
    _, nodes = await capacity(platform, pool)
    _require_nodes_fit(nodes, share=resources, count=1, pool=pool, what=what, field=field)


def _require_nodes_fit(nodes: list, *, share: Resources, count: int, pool: str, what: str, field: str) -> None:
    """Each of ``count`` shares runs as one process on a node of its own (a job's task, a training
    rank, an instance): refuse now when fewer than ``count`` nodes could ever hold one. A pool whose
    nodes are not known (none joined yet) is left to the queue."""
    fitting = [n for n in nodes if share.fits_in(n.resources)]
    if not nodes or len(fitting) >= count:
        return
    if not fitting:
        largest = max(nodes, key=lambda n: (n.resources.cpus, n.resources.gpus)).resources
        lacking = ", ".join(share.shortfall(largest, where="on its largest node"))
        raise bad_request(f"{field}: {what} runs on {'one node' if count == 1 else f'{count} distinct nodes'} "
                          f"and needs {lacking} of pool '{pool}'{' on each' if count > 1 else ''}; "
                          "it could never start there", field=field)
    raise bad_request(f"{field}: {what} needs {count} distinct nodes but pool '{pool}' has {len(fitting)} that "
                      f"could hold {share.cpus:g} CPUs{f' and {share.gpus:g} accelerators' if share.gpus else ''} "
                      "each; it could never start there", field=field)


async def account_exists(platform: Platform, account_id: str) -> bool:
    return await platform.mongo[USERS].find_one({"tenant_id": account_id}, {"_id": 1}) is not None
