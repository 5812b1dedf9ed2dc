"""Work entries the Ray executor tests run on cluster nodes (tests.unit.ray_entries:NAME)."""
from __future__ import annotations

import os
import time

import ray


def where(args, channel):
    channel.send("log", line="hello from a node")
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def slow_where(args, channel):
    channel.send("started", node_id=ray.get_runtime_context().get_node_id())
    time.sleep(args.get("seconds", 60))
    return "finished"


def many_logs(args, channel):
    for n in range(args["count"]):
        channel.send("log", line=str(n))
    return args["count"]
