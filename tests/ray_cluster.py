"""A real multi-node Ray cluster inside this machine (``ray.cluster_utils.Cluster``: every node is a
real raylet), bound to loopback, for the cluster-mode tests. ../shared/INFRA.md has the recipe."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import ray
from ray.cluster_utils import Cluster

from services.lib.common.cluster import NODE_ENV, POOL_LABEL


@dataclass
class MiniCluster:
    cluster: object = None
    nodes: dict[str, list] = field(default_factory=dict)     # pool -> its nodes (ray's node handles)

    @property
    def address(self) -> str:
        return self.cluster.address

    def start(self) -> "MiniCluster":
        # Every node on 127.0.0.1 (tests talk to loopback only); children inherit the setting.
        self._saved_env = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", *NODE_ENV)}
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.update(NODE_ENV)     # as every node of the platform's clusters (the raylets read it)
        # The head runs no work of ours: it has no pool label and no CPUs.
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        ray.init(address=self.cluster.address, namespace="openmaas-tests", logging_level="WARNING",
                 log_to_driver=False)
        return self

    def add_node(self, pool: str, *, cpus: float = 1, memory_gb: float | None = None):
        """A node of ``pool``. Its memory is stated (default: 4 GiB per CPU, as the instance specs
        size it), never detected: every node of this one machine would report the machine's memory,
        which depends on the machine and its load, and the platform's admissions read it."""
        memory = int((4 * cpus if memory_gb is None else memory_gb) * 2**30)
        node = self.cluster.add_node(num_cpus=cpus, memory=memory, labels={POOL_LABEL: pool})
        self.cluster.wait_for_nodes()
        self.nodes.setdefault(pool, []).append(node)
        return node

    def remove_node(self, node) -> None:
        for nodes in self.nodes.values():
            if node in nodes:
                nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def node_ids(self, pool: str) -> set[str]:
        return {n.node_id for n in self.nodes.get(pool, [])}

    def stop(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
