"""The KubeRay provisioner: a dedicated pool is one worker group of the RayCluster
(deploy/kubernetes/raycluster.yaml, ``groupName`` = the pool's name); resizing it is a JSON Patch of
that group's ``replicas`` through the Kubernetes API, with the pods of idle nodes named in
``scaleStrategy.workersToDelete`` when it shrinks, so KubeRay removes those and no busy one.

Talks to the API server in the cluster with the pod's service account (its token and CA are
mounted at the standard path; the Role in deploy/kubernetes/gateway.yaml lets it get and patch
RayClusters). A plain HTTP client (httpx) instead of the ``kubernetes`` package: two calls.
"""
from __future__ import annotations

from pathlib import Path

import httpx

from services.lib.common.settings import Settings
from services.lib.pools.provisioning import PoolNode, PoolTarget

# Where Kubernetes mounts a pod's service account (the same in every cluster).
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
JSON_PATCH = "application/json-patch+json"


def cpu_quantity(cpus: int) -> str:
    return str(cpus)


def memory_quantity(memory_bytes: int) -> str:
    return f"{memory_bytes // 2**20}Mi"


def plan(group: dict, index: int, target: PoolTarget, nodes: list[PoolNode]) -> tuple[list[dict], str]:
    """The JSON Patch operations that move worker group ``index`` toward ``target`` (none: nothing
    to change), and what keeps it from getting there."""
    base = f"/spec/workerGroupSpecs/{index}"
    current = int(group.get("replicas", 0))
    desired, message, doomed = target.count, "", []
    if desired < current:
        excess = current - desired
        doomed = sorted(n.name for n in nodes if n.idle and n.name)[:excess]
        if len(doomed) < excess:
            message = (f"waiting for {excess - len(doomed)} busy node(s) of pool '{target.pool}' to finish "
                       "their work before removing them")
        desired = current - len(doomed)
    ops: list[dict] = []
    if desired != current:
        ops.append({"op": "replace", "path": f"{base}/replicas", "value": desired})
    if desired < int(group.get("minReplicas", 0)):
        ops.append({"op": "replace", "path": f"{base}/minReplicas", "value": desired})
    if desired > int(group.get("maxReplicas", desired)):
        ops.append({"op": "replace", "path": f"{base}/maxReplicas", "value": desired})
    if doomed:
        ops.append({"op": "add", "path": f"{base}/scaleStrategy", "value": {"workersToDelete": doomed}})
    if target.cpus:
        containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or [{}]
        have = containers[0].get("resources") or {}
        want = {kind: {**(have.get(kind) or {}), "cpu": cpu_quantity(target.cpus),
                       "memory": memory_quantity(target.memory_bytes)} for kind in ("requests", "limits")}
        want = {**have, **want}     # keeps e.g. GPUs in the limits
        if want != have:
            # New pods get the shape; KubeRay leaves running ones as they are.
            ops.append({"op": "add", "path": f"{base}/template/spec/containers/0/resources", "value": want})
    if ops:
        # Guard: the group at this index is still the pool's (the spec may have changed since the GET).
        ops.insert(0, {"op": "test", "path": f"{base}/groupName", "value": target.pool})
    return ops, message


class KubeRayNodes:
    kind = "kuberay"

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None,
                 service_account: Path = SERVICE_ACCOUNT):
        self.cluster, self.namespace = settings.kuberay_cluster, settings.kuberay_namespace
        self.url = (f"{settings.kubernetes_api_url.rstrip('/')}/apis/ray.io/v1/namespaces/{self.namespace}"
                    f"/rayclusters/{self.cluster}")
        self._account = service_account
        ca = service_account / "ca.crt"
        verify: bool | str = str(ca) if transport is None and ca.exists() else True
        self._client = httpx.AsyncClient(transport=transport, verify=verify, timeout=10.0)

    def _headers(self) -> dict[str, str]:
        token = self._account / "token"
        # Read on every call: Kubernetes rotates projected service-account tokens.
        return {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}

    async def apply(self, target: PoolTarget, nodes: list[PoolNode]) -> str:
        r = await self._client.get(self.url, headers=self._headers())
        r.raise_for_status()
        groups = (r.json().get("spec") or {}).get("workerGroupSpecs") or []
        index = next((i for i, g in enumerate(groups) if g.get("groupName") == target.pool), None)
        if index is None:
            return (f"the RayCluster '{self.cluster}' has no worker group '{target.pool}'; add one "
                    "(docs/deploy-kubernetes.md)")
        ops, message = plan(groups[index], index, target, nodes)
        if ops:
            r = await self._client.patch(self.url, json=ops, headers={**self._headers(), "Content-Type": JSON_PATCH})
            r.raise_for_status()
        return message

    async def close(self) -> None:
        await self._client.aclose()

