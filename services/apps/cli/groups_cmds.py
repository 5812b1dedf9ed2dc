"""``maas groups``: the user groups of my account, their members and policies."""
from __future__ import annotations

import typer

from services.apps.cli.client import Client, resolve
from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.output import JsonOption, console, emit, fields, table, when

app = typer.Typer(help="User groups: create, delete, give policies, list members.", no_args_is_help=True)
GROUPS = "/api/v1/iam/groups"
POLICIES = "/api/v1/iam/policies"


def find(c: Client, ident: str) -> dict:
    return resolve(c, GROUPS, ident, what="user group")


def find_policy(c: Client, ident: str) -> dict:
    """A system policy by name, or a custom policy by id or name."""
    return resolve(c, POLICIES, ident, what="policy")


def policy_names(g: dict) -> str:
    return ", ".join(p["name"] for p in g.get("policies", [])) or "-"


def render_group(g: dict) -> None:
    fields([("id", g["id"]), ("name", g["name"]), ("description", g.get("description", "")),
            ("policies", policy_names(g)),
            ("members", ", ".join(m["username"] for m in g.get("members", [])) or "-"),
            ("created", when(g.get("created_at")))], title=g["name"])


@command(app, "list")
def list_(as_json: bool = JsonOption) -> None:
    """The user groups of my account."""
    with client() as c:
        data = c.get(GROUPS)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "policies", "members", "description", "created"],
        [(g["id"], g["name"], policy_names(g), g["member_count"], g.get("description"), when(g.get("created_at")))
         for g in d["items"]], title=f"User groups ({d['total']})"))


@command(app)
def create(name: str = typer.Argument(...), description: str = typer.Option("", "--description", "-d"),
           policies: list[str] = typer.Option([], "--policy", "-p", help=(
               "a policy: FullAccess, CommonOperations, ReadOnly or a custom policy's name or id; repeatable")),
           as_json: bool = JsonOption) -> None:
    """Create a user group, optionally with policies."""
    with client() as c:
        policy_ids = [find_policy(c, p)["id"] for p in policies]
        g = c.post(GROUPS, {"name": name, "description": description, "policy_ids": policy_ids})
    emit(g, as_json=as_json, render=lambda g: console.print(
        f"created group [bold]{g['name']}[/bold] ({g['id']}), policies: {policy_names(g)}"))


@command(app)
def show(group: str = typer.Argument(..., help="group id or name"), as_json: bool = JsonOption) -> None:
    """A user group with its policies and members."""
    with client() as c:
        g = find(c, group)
    emit(g, as_json=as_json, render=render_group)


@command(app)
def members(group: str = typer.Argument(..., help="group id or name"), as_json: bool = JsonOption) -> None:
    """The members of a user group."""
    with client() as c:
        g = find(c, group)
    people = {"group": {"id": g["id"], "name": g["name"]}, "total": g["member_count"], "items": g["members"]}
    emit(people, as_json=as_json, render=lambda d: table(
        ["id", "username"], [(m["id"], m["username"]) for m in d["items"]],
        title=f"Members of {g['name']} ({d['total']})"))


@command(app)
def delete(group: str = typer.Argument(..., help="group id or name"),
           yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a user group (its members leave it and lose its policies)."""
    with client() as c:
        g = find(c, group)
        confirm_delete(f"user group {g['name']}", yes=yes)
        c.delete(f"{GROUPS}/{g['id']}")
    console.print(f"deleted user group {g['name']} ({g['id']})")


@command(app, "attach-policy")
def attach_policy(group: str = typer.Argument(..., help="group id or name"),
                  policy: str = typer.Argument(..., help="FullAccess, CommonOperations, ReadOnly or a custom policy"),
                  as_json: bool = JsonOption) -> None:
    """Give a group a policy (its members have it from their next call)."""
    with client() as c:
        g, p = find(c, group), find_policy(c, policy)
        g = c.post(f"{GROUPS}/{g['id']}/policies", {"policy_id": p["id"]})
    emit(g, as_json=as_json, render=lambda g: console.print(
        f"{g['name']} now holds {policy_names(g)}"))


@command(app, "detach-policy")
def detach_policy(group: str = typer.Argument(..., help="group id or name"),
                  policy: str = typer.Argument(..., help="a policy the group holds (name or id)"),
                  as_json: bool = JsonOption) -> None:
    """Take a policy from a group."""
    with client() as c:
        g, p = find(c, group), find_policy(c, policy)
        c.delete(f"{GROUPS}/{g['id']}/policies/{p['id']}")
        g = c.get(f"{GROUPS}/{g['id']}")
    emit(g, as_json=as_json, render=lambda g: console.print(
        f"{g['name']} now holds {policy_names(g)}"))
