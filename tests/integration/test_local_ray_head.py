"""``maas up --ray``'s one-node Ray cluster: this machine's node joins as the public pool, on
127.0.0.1, and stopping it ends the cluster."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from services.apps.cli.local_ray import LocalRayHead

pytestmark = [pytest.mark.integration, pytest.mark.slow]   # a Ray cluster of its own

PROBE = """
import json, os, ray
ray.init(address="{address}", logging_level="ERROR", log_to_driver=False)
niceness = ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote())   # where our work runs
print(json.dumps([{{"alive": n["Alive"], "cpus": n["Resources"].get("CPU"), "labels": n.get("Labels"),
                    "ip": n["NodeManagerAddress"], "worker_niceness": niceness}} for n in ray.nodes()]))
"""


def test_the_local_head_is_the_public_pool_on_loopback():
    # Ray's socket paths must stay short: a folder directly under the temp dir.
    with tempfile.TemporaryDirectory(prefix="mr-") as tmp:
        head = LocalRayHead(data_dir=Path(tmp), cpus=1)
        address = head.start()
        try:
            assert head.token_file.stat().st_mode & 0o077 == 0      # the cluster's token: owner-only
            # Without the token the cluster refuses a driver; with it (driver_env) it is joined.
            refused = subprocess.run([sys.executable, "-c", PROBE.format(address=address)], capture_output=True,
                                     env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                                          "RAY_AUTH_TOKEN_PATH": str(Path(tmp) / "none")}, timeout=120)
            assert refused.returncode != 0
            env = {**os.environ, **head.driver_env}
            out = subprocess.run([sys.executable, "-c", PROBE.format(address=address)], env=env, check=True,
                                 capture_output=True, text=True, timeout=120).stdout
            [node] = json.loads(out.strip().splitlines()[-1])
            assert node["alive"] and node["cpus"] == 1 and node["ip"] == "127.0.0.1"
            assert node["labels"]["openmaas.io/pool"] == "public"
            assert node["worker_niceness"] == 0          # not Ray's default 15 (NODE_ENV)
        finally:
            head.stop()
        host, port = address.split(":")
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()
