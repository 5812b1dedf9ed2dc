"""Work entries the executor tests run in job processes (named as tests.unit.job_entries:NAME)."""
from __future__ import annotations

import os
import time

from services.lib.jobs.executor import stop_requested


def echo(args, channel):
    channel.send("log", line=f"hello {args['name']}")
    return {"name": args["name"], "pid": os.getpid(), "env_secret": os.environ.get("MAAS_S3_SECRET_KEY")}


def count_until_stopped(args, channel):
    done = 0
    while not stop_requested(channel):
        done += 1
        channel.send("progress", done=done)
    return done


def fail_on_input(args, channel):
    raise ValueError("learning_rate: must be a finite number >= 0")


def crash(args, channel):
    raise RuntimeError("boom")


def die(args, channel):
    os._exit(3)


def sleep_forever(args, channel):
    channel.send("started")
    while True:
        time.sleep(1)


def send_a_set(args, channel):
    return {"tags": {"a"}}   # a set becomes a list; anything not JSON is refused


def send_an_object(args, channel):
    return {"object": object()}


def convert_with_progress(args, channel):
    """Stands in for the preset conversion (services.registry.work): its milestones, then the folder."""
    for fraction in (0.2, 0.8, 1.0):
        channel.send("progress", fraction=fraction)
    return args["out_dir"]
