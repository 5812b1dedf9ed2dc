"""``maas users``: the IAM users of my account (account administrators), and new accounts (the
platform administrator)."""
from __future__ import annotations

import typer

from services.apps.cli.client import CliError, Client, resolve
from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.groups_cmds import find as find_group
from services.apps.cli.output import JsonOption, console, emit, fields, status_text, table, when

app = typer.Typer(help="The users of my account: create, disable, delete, put in groups.", no_args_is_help=True)
USERS = "/api/v1/iam/users"
ROLES = ("admin", "member")


def find(c: Client, ident: str) -> dict:
    return resolve(c, USERS, ident, what="user", key="username")


def role(u: dict) -> str:
    return f"{u['account_role']} (platform admin)" if u.get("platform_admin") else u["account_role"]


def group_names(u: dict) -> str:
    return ", ".join(g["name"] for g in u.get("groups", [])) or "-"


def render_user(u: dict) -> None:
    fields([("id", u["id"]), ("username", u["username"]), ("role", role(u)), ("status", status_text(u["status"])),
            ("groups", group_names(u)), ("created", when(u.get("created_at")))], title=u["username"])


@command(app, "list")
def list_(as_json: bool = JsonOption) -> None:
    """The users of my account."""
    with client() as c:
        data = c.get(USERS)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "username", "role", "status", "groups", "created"],
        [(u["id"], u["username"], role(u), status_text(u["status"]), group_names(u), when(u.get("created_at")))
         for u in d["items"]], title=f"Users ({d['total']})"))


@command(app)
def create(username: str = typer.Argument(...),
           password: str = typer.Option(..., "--password", "-p", prompt=True, hide_input=True,
                                        confirmation_prompt=True, help="at least 8 characters"),
           admin: bool = typer.Option(False, "--admin", help="an administrator of the account (default: a member)"),
           groups: list[str] = typer.Option([], "--group", "-g", help="a user group (id or name); repeatable"),
           new_account: bool = typer.Option(False, "--new-account", help=(
               "create a new account with this user as its administrator (the platform administrator only)")),
           as_json: bool = JsonOption) -> None:
    """Create a user in my account (a member of the given groups), or with --new-account a new account."""
    with client() as c:
        if new_account:
            if admin or groups:
                raise CliError("--admin and --group do not go with --new-account: the user administers the new "
                               "account, which has no groups yet", field="new-account")
            data = c.post("/api/v1/users", {"username": username, "password": password})
            emit(data, as_json=as_json, render=lambda d: console.print(
                f"created account {d['tenant_id']} with administrator [bold]{d['username']}[/bold] "
                f"(bucket {d['default_bucket']})"))
            return
        group_ids = [find_group(c, g)["id"] for g in groups]
        data = c.post(USERS, {"username": username, "password": password,
                              "account_role": "admin" if admin else "member", "group_ids": group_ids})
    emit(data, as_json=as_json, render=lambda u: console.print(
        f"created user [bold]{u['username']}[/bold] ({u['id']}), {role(u)}, groups: {group_names(u)}"))


@command(app)
def show(user: str = typer.Argument(..., help="user id or username"), as_json: bool = JsonOption) -> None:
    """A user of my account with their groups."""
    with client() as c:
        u = find(c, user)
    emit(u, as_json=as_json, render=render_user)


def _update(user: str, body: dict, as_json: bool, done: str) -> None:
    with client() as c:
        u = c.patch(f"{USERS}/{find(c, user)['id']}", body)
    emit(u, as_json=as_json, render=lambda u: console.print(f"{u['username']}: {done}"))


@command(app)
def disable(user: str = typer.Argument(..., help="user id or username"), as_json: bool = JsonOption) -> None:
    """Disable a user: their tokens and API keys are refused from their next call."""
    _update(user, {"status": "disabled"}, as_json, "disabled (their sessions and API keys stop working)")


@command(app)
def enable(user: str = typer.Argument(..., help="user id or username"), as_json: bool = JsonOption) -> None:
    """Enable a disabled user again (their sessions work again)."""
    _update(user, {"status": "active"}, as_json, "enabled")


@command(app, "set-role")
def set_role(user: str = typer.Argument(..., help="user id or username"),
             new_role: str = typer.Argument(..., metavar="ROLE", help="admin or member"),
             as_json: bool = JsonOption) -> None:
    """Make a user an administrator of the account, or a member."""
    if new_role not in ROLES:
        raise CliError(f"ROLE must be one of {', '.join(ROLES)}, not '{new_role}'", field="ROLE")
    _update(user, {"account_role": new_role}, as_json, f"now {new_role}")


@command(app)
def delete(user: str = typer.Argument(..., help="user id or username"),
           yes: bool = typer.Option(False, "--yes", "-y"), as_json: bool = JsonOption) -> None:
    """Delete a user with their sessions and API keys (they stop working at once)."""
    with client() as c:
        try:
            u = find(c, user)
            user_id, label = u["id"], f"{u['username']} ({u['id']})"
        except CliError as exc:
            if exc.status != 404:
                raise
            # Not in my account: the platform administrator deletes other accounts' users by id (the API
            # answers 404 to anyone else).
            user_id, label = user, user
        confirm_delete(f"user {label}", yes=yes)
        data = c.delete(f"/api/v1/users/{user_id}")

    def render(d: dict) -> None:
        console.print(f"deleted user {label}")
        if d.get("account_disabled"):
            console.print(f"[yellow]account {d['tenant_id']} had no other administrator and is now "
                          "disabled[/yellow]")
    emit(data, as_json=as_json, render=render)


def _membership(user: str, group: str, *, add: bool) -> tuple[dict, dict]:
    """(the user, the group as it is now)."""
    with client() as c:
        u, g = find(c, user), find_group(c, group)
        if add:
            return u, c.post(f"/api/v1/iam/groups/{g['id']}/members", {"user_id": u["id"]})
        c.delete(f"/api/v1/iam/groups/{g['id']}/members/{u['id']}")
        return u, c.get(f"/api/v1/iam/groups/{g['id']}")


@command(app, "add-to-group")
def add_to_group(user: str = typer.Argument(..., help="user id or username"),
                 group: str = typer.Argument(..., help="group id or name"), as_json: bool = JsonOption) -> None:
    """Add a user to a group (its policies apply from their next call)."""
    u, g = _membership(user, group, add=True)
    emit(g, as_json=as_json, render=lambda g: console.print(
        f"added {u['username']} to {g['name']} ({g['member_count']} members)"))


@command(app, "remove-from-group")
def remove_from_group(user: str = typer.Argument(..., help="user id or username"),
                      group: str = typer.Argument(..., help="group id or name"), as_json: bool = JsonOption) -> None:
    """Remove a user from a group."""
    u, g = _membership(user, group, add=False)
    emit(g, as_json=as_json, render=lambda g: console.print(
        f"removed {u['username']} from {g['name']} ({g['member_count']} members)"))
