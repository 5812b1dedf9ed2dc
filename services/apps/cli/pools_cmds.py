"""``maas pools``: the resource pools my account may use (the public pool and my dedicated ones), what
each holds and who waits for it; creating, resizing and deleting dedicated pools."""
from __future__ import annotations

from urllib.parse import quote

import typer

from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.output import JsonOption, amount, console, emit, fields, table, when

app = typer.Typer(help="Resource pools: the public pool and my account's dedicated pools.", no_args_is_help=True)
POOLS = "/api/v1/pools"


def share(used: dict, total: dict, key: str) -> str:
    return f"{amount(used[key])} / {amount(total[key])}"


def _path(name: str) -> str:
    return f"{POOLS}/{quote(name, safe='')}"


def _nodes(p: dict) -> str:
    """Joined nodes, and where the platform starts them, the desired count and the state."""
    if p.get("node_count") is None:
        return str(p["nodes"])
    text = f"{p['nodes']} of {p['node_count']} ({p.get('status', 'ready')})"
    return f"{text}: {p['status_message']}" if p.get("status_message") else text


def render_pool(p: dict) -> None:
    fields([("name", p["name"]), ("type", p["type"]), ("cluster", p["cluster"]), ("description", p.get("description")),
            ("created", when(p.get("created_at"))), ("nodes", _nodes(p)),
            ("CPUs (allocated / capacity)", share(p["allocated"], p["capacity"], "cpus")),
            ("free CPUs", amount(p["free"]["cpus"])),
            ("accelerators (allocated / capacity)", share(p["allocated"], p["capacity"], "gpus")),
            ("free accelerators", amount(p["free"]["gpus"]))], title=p["name"])
    if "node_list" not in p:
        return
    table(["node", "address", "CPUs", "accelerators"],
          [(n["id"], n["address"], amount(n["resources"]["cpus"]), amount(n["resources"]["gpus"]))
           for n in p["node_list"]], title="Nodes")
    table(["kind", "job", "CPUs", "accelerators", "since"],
          [(a["kind"], a["job_id"], amount(a["resources"]["cpus"]), amount(a["resources"]["gpus"]), when(a["since"]))
           for a in p["allocations"]], title="Allocations of my account")
    table(["position", "kind", "job", "name", "reason"],
          [(q["position"], q["kind"], q["job_id"], q.get("name"), q["reason"]) for q in p["queue"]],
          title="Waiting jobs of my account")


@command(app, "list")
def list_(as_json: bool = JsonOption) -> None:
    """The public pool and my account's dedicated pools with their capacity, allocated and free."""
    with client() as c:
        data = c.get(POOLS)
    emit(data, as_json=as_json, render=lambda d: table(
        ["name", "type", "cluster", "nodes", "CPUs (allocated / capacity)", "free CPUs",
         "accelerators (allocated / capacity)", "free accelerators", "description"],
        [(p["name"], p["type"], p["cluster"], p["nodes"], share(p["allocated"], p["capacity"], "cpus"),
          amount(p["free"]["cpus"]), share(p["allocated"], p["capacity"], "gpus"), amount(p["free"]["gpus"]),
          p.get("description") or "-") for p in d["items"]], title=f"Resource pools ({len(d['items'])})"))


@command(app)
def get(name: str = typer.Argument(..., help="'public' or a dedicated pool of my account"),
        as_json: bool = JsonOption) -> None:
    """A pool: its nodes, my allocations and my jobs waiting for it (with their positions)."""
    with client() as c:
        data = c.get(_path(name))
    emit(data, as_json=as_json, render=render_pool)


@command(app)
def create(name: str = typer.Argument(..., help=(
               "1-32 lowercase letters, digits and '-', starting and ending with a letter or digit")),
           description: str = typer.Option("", "--description", "-d", help="at most 256 characters"),
           as_json: bool = JsonOption) -> None:
    """Create a dedicated pool of my account (its nodes: those labelled openmaas.io/pool=NAME)."""
    with client() as c:
        data = c.post(POOLS, {"name": name, "description": description})

    def render(p: dict) -> None:
        console.print(f"created dedicated pool [bold]{p['name']}[/bold]: {p['nodes']} nodes, "
                      f"{amount(p['capacity']['cpus'])} CPUs, {amount(p['capacity']['gpus'])} accelerators",
                      highlight=False)
        if not p["nodes"]:
            console.print(f"[dim]start cluster nodes with the label openmaas.io/pool={p['name']} to give it "
                          "capacity[/dim]", highlight=False)
    emit(data, as_json=as_json, render=render)


@command(app)
def delete(name: str = typer.Argument(..., help="a dedicated pool of my account"),
           yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a dedicated pool nothing runs or waits on (the API refuses it while something does)."""
    confirm_delete(f"pool {name}", yes=yes)
    with client() as c:
        c.delete(_path(name))
    console.print(f"deleted pool {name}", highlight=False)


@command(app)
def resize(name: str = typer.Argument(..., help="a dedicated pool of my account"),
           nodes: int = typer.Option(..., "--nodes", "-n", help="how many nodes the platform keeps in the pool"),
           cpus: int = typer.Option(None, "--cpus", help="CPUs of each node (with --memory-gb)"),
           memory_gb: float = typer.Option(None, "--memory-gb", help="memory of each node in GiB (with --cpus)"),
           as_json: bool = JsonOption) -> None:
    """Resize a dedicated pool: the platform starts or stops its nodes (where it manages them; it
    never removes a node that runs work)."""
    body: dict = {"node_count": nodes}
    if cpus is not None or memory_gb is not None:
        if cpus is None or memory_gb is None:
            raise typer.BadParameter("give both --cpus and --memory-gb, or neither")
        body["node_resources"] = {"cpus": cpus, "memory_gb": memory_gb}
    with client() as c:
        data = c.patch(_path(name), body)
    emit(data, as_json=as_json, render=lambda p: console.print(
        f"pool [bold]{p['name']}[/bold]: nodes {_nodes(p)}", highlight=False))
