"""Resource pools (guide chapter 3): the public pool every account shares and dedicated pools that
one account owns, each a set of compute nodes (``services.lib.common.cluster``).

``ledger``: admission — what is allocated in each pool, never more than it holds;
``service``: the pools an account may use, their capacity and queue, and the create-time checks a
job or service request passes; ``api``: ``/api/v1/pools``; ``provisioning``: resizing dedicated
pools (the desired nodes and the provisioner protocol), ``kuberay``: its KubeRay adapter.
"""
