"""``maas usage``, ``maas events``: token usage and event timelines (``maas users`` is users_cmds.py)."""
from __future__ import annotations

import typer

from services.cli.client import CliError
from services.cli.common import client, command
from services.cli.output import JsonOption, emit, table, when

RESOURCES = ("models", "tuning-jobs", "compression-jobs", "services")


def usage(group_by: str = typer.Option("service", "--by", help="service, key or day"),
          days: int = typer.Option(30, "--days"), as_json: bool = JsonOption) -> None:
    """Token usage of your tenant over the last days."""
    with client() as c:
        data = c.get("/api/v1/usage", group_by=group_by, days=days)
    label = {"service": "service_name", "key": "key_id", "day": "day"}[group_by]
    emit(data, as_json=as_json, render=lambda d: table(
        [group_by, "requests", "prompt tokens", "completion tokens", "total tokens"],
        [(r.get(label), r["requests"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"])
         for r in d["items"]], title=f"Usage, last {days} days ({d['total_tokens']} tokens)"))


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
    command(root, "usage")(usage)
    command(root, "events")(events)
