"""``maas usage``, ``maas usage compute``, ``maas events``: token usage, compute usage and event timelines
(``maas users`` is users_cmds.py)."""
from __future__ import annotations

import typer

from services.apps.cli.client import CliError
from services.apps.cli.common import client, command, handled
from services.apps.cli.output import JsonOption, amount, emit, table, when

RESOURCES = ("models", "tuning-jobs", "compression-jobs", "services")
COMPUTE_GROUPS = ("pool", "kind", "day")

# `maas usage` alone is the token usage it always was; `maas usage compute` is the compute usage.
usage_app = typer.Typer(help="Token usage of my account; `maas usage compute`: its compute hours.")


@usage_app.callback(invoke_without_command=True)
@handled
def usage(ctx: typer.Context, group_by: str = typer.Option("service", "--by", help="service, key or day"),
          days: int = typer.Option(30, "--days"), as_json: bool = JsonOption) -> None:
    """Token usage of your tenant over the last days."""
    if ctx.invoked_subcommand is not None:
        return
    with client() as c:
        data = c.get("/api/v1/usage", group_by=group_by, days=days)
    label = {"service": "service_name", "key": "key_id", "day": "day"}[group_by]
    emit(data, as_json=as_json, render=lambda d: table(
        [group_by, "requests", "prompt tokens", "completion tokens", "total tokens"],
        [(r.get(label), r["requests"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"])
         for r in d["items"]], title=f"Usage, last {days} days ({d['total_tokens']} tokens)"))


@command(usage_app, "compute")
def compute(group_by: str = typer.Option("pool", "--group-by", help="pool, kind or day"),
            days: int = typer.Option(30, "--days", min=1, max=366), as_json: bool = JsonOption) -> None:
    """Compute usage of my account: CPU-hours and accelerator-hours, from packages or on demand."""
    if group_by not in COMPUTE_GROUPS:
        raise CliError(f"--group-by must be one of {', '.join(COMPUTE_GROUPS)}, not '{group_by}'", field="group-by")
    with client() as c:
        data = c.get("/api/v1/usage/compute", group_by=group_by, days=days)

    def render(d: dict) -> None:
        rows = d["items"]
        cpu, acc = sum(r["cpu_hours"] for r in rows), sum(r["accelerator_hours"] for r in rows)
        table([group_by, "runs", "CPU-hours", "from packages", "on demand", "accelerator-hours", "from packages",
               "on demand"],
              [(r[group_by], r["runs"], amount(r["cpu_hours"]), amount(r["package_cpu_hours"]),
                amount(r["on_demand_cpu_hours"]), amount(r["accelerator_hours"]),
                amount(r["package_accelerator_hours"]), amount(r["on_demand_accelerator_hours"])) for r in rows],
              title=f"Compute usage, last {days} days ({amount(cpu)} CPU-hours, {amount(acc)} accelerator-hours)")
    emit(data, as_json=as_json, render=render)


def events(resource: str = typer.Argument(..., help="models, tuning-jobs, compression-jobs or services"),
           resource_id: str = typer.Argument(..., help="the resource's id"),
           as_json: bool = JsonOption) -> None:
    """The event timeline of a model, job or service (30 days)."""
    if resource not in RESOURCES:
        raise CliError(f"resource must be one of {', '.join(RESOURCES)}", field="resource")
    with client() as c:
        data = c.get(f"/api/v1/{resource}/{resource_id}/timeline", limit=500)
    emit(data, as_json=as_json, render=lambda d: table(
        ["time", "type", "kind", "message"],
        [(when(e["occurred_at"]), e["type"], e.get("kind"), e.get("message")) for e in d["items"]], title="Events"))


def register(root: typer.Typer) -> None:
    root.add_typer(usage_app, name="usage")
    command(root, "events")(events)
