#!/usr/bin/env python
"""What the authorization check adds to a gateway call's CPU time (issue 13: at most 2%).

    python benchmarks/bench_authz.py [--calls 300] [--rounds 12]

Starts its own embedded servers and builds the app for the gateway and the registry in this process,
without its lifespan: no Kafka consumers, outbox relay or background refreshers run, so the process's
CPU time (``time.process_time``, motor's I/O threads included) is the calls' own. Requests go
straight into the ASGI app (no sockets, a client of a few microseconds). The caller is a member of
an account whose group holds CommonOperations and a custom policy with an Allow and a Deny: the full
path of a member, not an administrator's shortcut.

Two calls, each in three variants, interleaved round by round with the order rotating:
- ``GET /api/v1/models`` with a login token (console API; the route's ``Authorized`` dependency)
  and ``GET /v1/models`` with an API key (OpenAI API; the key owner's grant, checked per call);
- *on*: the grants as shipped (``services.lib.iam.store.Authorizer``: cached per user and ``iam_rev``);
- *off*: an allow-all grant (``AllowAll``): no groups or policies read, nothing evaluated;
- *cold*: the grant cache emptied before every call, so each call reads the groups and the policies
  again and compiles them: what the first call after an IAM change of the account costs.

A console call reads its user's document, on and off alike (its status: a disabled user is refused
at once, item 8); an API key's owner is read with the key by the gateway's view of it, not per call.
That lookup is authentication, done with or without policies; the benchmark reports its CPU cost
beside the ratios so that nothing is hidden. It also times the evaluation alone.

Prints a table to stderr and, as the last line on stdout, one JSON object with every figure.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def step(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


async def asgi_get(app, path: str, token: str) -> int:
    """One GET through the whole ASGI app (middleware, routing, dependencies, endpoint); its status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 50000), "server": ("bench", 80), "state": {}}
    status = 0

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def setup(platform):
    """An account: its administrator, a member in a group with CommonOperations and a custom policy,
    the member's login token and API key."""
    from services.lib.common.auth import USERS, principal_of
    from services.gateway.accounts import iam_service, sessions
    from services.gateway.keys import service as keys
    from services.gateway.accounts.identity import create_user

    owner = await create_user(platform, username="bench-owner", password="bench-password-1", role="user")
    tenant = owner["tenant_id"]
    document = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["maas:models:*", "maas:*:list*"]},
                                                {"Effect": "Deny", "Action": ["maas:pools:*", "maas:models:delete"]}]}
    policy = await iam_service.create_policy(platform, tenant_id=tenant, name="no-pools", description="",
                                             document=json.dumps(document))
    group = await iam_service.create_group(platform, tenant_id=tenant, name="bench-team", description="",
                                           policy_ids=["CommonOperations", policy["id"]])
    user = await iam_service.create_user(platform, tenant_id=tenant, username="bench-member",
                                         password="bench-password-1", account_role="member", group_ids=[group["id"]])
    doc = await platform.mongo[USERS].find_one({"_id": user["id"]})
    token = (await sessions.start_session(platform, user=doc, name="bench"))["token"]
    key = (await keys.create_key(platform, principal=principal_of(doc), description="bench"))["key"]
    return doc, token, key


async def measure(app, variant: str, path: str, token: str, calls: int) -> float:
    """CPU microseconds per call of ``calls`` calls of ``path`` under ``variant``."""
    from services.gateway.keys import service as keys
    from services.lib.iam.store import AllowAll, Authorizer

    platform = app.state.platform
    app.state.authorizer = AllowAll() if variant == "off" else Authorizer(platform.mongo)
    keys.callers()._entries.clear()   # the key's view carries the grant it was loaded with
    await asgi_get(app, path, token)  # warm: the grant, the key's view, the route
    started = time.process_time()
    for _ in range(calls):
        if variant == "cold":
            app.state.authorizer = Authorizer(platform.mongo)
            keys.callers()._entries.clear()
        status = await asgi_get(app, path, token)
        if status != 200:
            raise RuntimeError(f"{path} ({variant}) answered {status}")
    return (time.process_time() - started) / calls * 1e6


async def evaluation_alone(app, user: dict) -> dict:
    """The evaluation by itself, hot (a cached grant) and compiled from scratch."""
    from services.lib.common.auth import principal_of
    from services.lib.iam.authorize import decide
    from services.lib.iam.evaluator import compile_policy
    from services.lib.iam.store import Authorizer

    principal = principal_of(user)
    grant = await Authorizer(app.state.platform.mongo).grant(principal)
    n = 200_000
    started = time.process_time()
    for _ in range(n):
        decide(principal, grant, "maas:models:list")
    hot = (time.process_time() - started) / n * 1e6
    n = 2000
    started = time.process_time()
    for _ in range(n):
        compile_policy.cache_clear()
        grant = await Authorizer(app.state.platform.mongo).grant(principal)
        decide(principal, grant, "maas:models:list")
    cold = (time.process_time() - started) / n * 1e6
    return {"decide_hot_us": round(hot, 3), "load_compile_decide_us": round(cold, 1)}


async def user_lookup_cost(platform, user_id: str, calls: int) -> float:
    from services.lib.common.auth import USER_FIELDS, USERS

    started = time.process_time()
    for _ in range(calls):
        await platform.mongo[USERS].find_one({"_id": user_id}, USER_FIELDS)
    return (time.process_time() - started) / calls * 1e6


async def main(args) -> dict:
    import os

    from services.lib.common import audit, outbox
    from services.lib.common.settings import get_settings
    from services.lib.embedded.servers import EmbeddedServers

    work = Path(tempfile.mkdtemp(prefix="bench-authz-"))
    step("starting the embedded servers")
    servers = EmbeddedServers(work / "data")
    servers.start(timeout=120)
    try:
        os.environ.update(servers.settings_env())
        get_settings.cache_clear()
        from services.runtime import build_app, select_services

        services = "gateway,registry"
        app = build_app(get_settings().model_copy(update={"work_dir": str(work / "work")}), services=services)
        platform = app.state.platform
        await platform.mongo.ensure_indexes([*outbox.INDEXES, *audit.INDEXES,
                                             *(i for s in select_services(services) for i in s.indexes)])
        user, token, key = await setup(platform)
        # (path, secret, variants): the OpenAI API has no "cold" call: its key's grant is loaded by the
        # gateway's background refresher, never on a call that has a fresh view.
        paths = {"console GET /api/v1/models": ("/api/v1/models", token, ["on", "off", "cold"]),
                 "OpenAI GET /v1/models": ("/v1/models", key, ["on", "off"])}
        cpu = {(p, v): [] for p, (_, _, variants) in paths.items() for v in variants}
        step(f"{args.rounds} rounds of {args.calls} calls per path and variant, interleaved")
        for round_ in range(args.rounds):
            for name, (path, secret, variants) in paths.items():
                shift = round_ % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    cpu[(name, variant)].append(await measure(app, variant, path, secret, args.calls))
        lookup = await user_lookup_cost(platform, user["_id"], args.calls * 4)
        alone = await evaluation_alone(app, user)
    finally:
        servers.stop()
    return report(args, paths, cpu, lookup, alone)


def report(args, paths, cpu, lookup: float, alone: dict) -> dict:
    table = Table(title="CPU per call (µs, medians of rounds); ratios are paired medians, round by round")
    for column in ("call", "on", "off", "cold", "on / off", "cold / off", "status lookup / on"):
        table.add_column(column, justify="right" if column != "call" else "left")
    figures = {}
    for name in paths:
        on, off, cold = cpu[(name, "on")], cpu[(name, "off")], cpu.get((name, "cold"))
        ratio = statistics.median(a / b for a, b in zip(on, off))
        figures[name] = {"on_us": round(statistics.median(on), 1), "off_us": round(statistics.median(off), 1),
                         "on_over_off": round(ratio, 4), "rounds": {"on": on, "off": off}}
        cold_cells = ["-", "-"]
        if cold:
            cold_ratio = statistics.median(a / b for a, b in zip(cold, off))
            figures[name].update(cold_us=round(statistics.median(cold), 1), cold_over_off=round(cold_ratio, 4))
            figures[name]["rounds"]["cold"] = cold
            cold_cells = [f"{statistics.median(cold):.0f}", f"{cold_ratio:.4f}"]
        # Only a console call reads the user per call; a key's owner is read by the key's view.
        share = f"{lookup / statistics.median(on):.3f}" if cold else "-"
        table.add_row(name, f"{statistics.median(on):.0f}", f"{statistics.median(off):.0f}", cold_cells[0],
                      f"{ratio:.4f}", cold_cells[1], share)
    console.print(table)
    console.print(f"user status lookup (one find_one by _id; console calls, on and off alike): {lookup:.0f} µs CPU; "
                  f"evaluation alone: {alone['decide_hot_us']} µs hot, {alone['load_compile_decide_us']} µs "
                  "reading the groups and policies and compiling them")
    return {"calls": args.calls, "rounds": args.rounds, "paths": figures, "user_lookup_us": round(lookup, 1),
            **alone}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per path, variant and round")
    parser.add_argument("--rounds", type=int, default=12)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
