"""``maas policies``: system policies and my account's custom policies, written in the guide's JSON
format in a file (``{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": [...]}]}``).

The file's text is sent as is, so the API's "line L, column C" points into the file; a refused
document is printed with that line of the file and a caret under the column.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from services.apps.cli.client import CliError
from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.groups_cmds import POLICIES, find_policy
from services.apps.cli.output import JsonOption, console, emit, err_console, fields, print_error, table, when

app = typer.Typer(help="Policies: the system ones and custom ones from a JSON file (validated, with the line "
                       "and column of a mistake).", no_args_is_help=True)
# The platform caps a document at 6,144 characters; a file far larger is not a policy (and not read whole).
MAX_FILE_BYTES = 64 * 1024
_POSITION = re.compile(r"line (\d+), column (\d+)")

FileOption = typer.Option(..., "--file", "-f", help="the policy document (JSON); '-' reads standard input")


def read_document(path: str) -> str:
    if path == "-":
        text = sys.stdin.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            raise CliError("--file: standard input is longer than a policy can be (6,144 characters)", field="file")
        return text
    file = Path(path)
    if not file.is_file():
        raise CliError(f"--file: '{path}' is not a file", field="file")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise CliError(f"--file: '{path}' is {file.stat().st_size} bytes; a policy is at most 6,144 characters",
                       field="file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"--file: '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})", field="file") from None


def source_excerpt(text: str, message: str) -> list[str]:
    """The line a "line L, column C" message points at, and a caret under the column ([] if none)."""
    found = _POSITION.search(message)
    if not found:
        return []
    line, column = int(found.group(1)), int(found.group(2))
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return []
    source = lines[line - 1].replace("\t", " ")
    prefix = f"  {line} | "
    return [prefix + source, " " * (len(prefix) + max(column - 1, 0)) + "^"]


def with_document(path: str, call: Callable[[str], Any]) -> Any:
    """``call(text of the file)``; a refused document is printed with the line it is at, exit 1."""
    text = read_document(path)
    try:
        return call(text)
    except CliError as exc:
        excerpt = source_excerpt(text, exc.message) if exc.status == 400 else []
        if not excerpt:
            raise
        print_error(exc)
        err_console.print(escape(f"  in {'standard input' if path == '-' else path}:"), highlight=False)
        for line in excerpt:
            err_console.print(escape(line), highlight=False)
        raise typer.Exit(1) from None


def render_policy(p: dict) -> None:
    fields([("id", p["id"]), ("name", p["name"]), ("type", p["type"]), ("description", p.get("description", "")),
            ("groups", ", ".join(g["name"] for g in p.get("groups", [])) or "-"),
            ("updated", when(p.get("updated_at")))], title=p["name"])
    console.print(p["document"], markup=False, highlight=False)


@command(app, "list")
def list_(as_json: bool = JsonOption) -> None:
    """System policies and my account's custom policies."""
    with client() as c:
        data = c.get(POLICIES)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "type", "description", "updated"],
        [(p["id"], p["name"], p["type"], p.get("description"), when(p.get("updated_at"))) for p in d["items"]],
        title=f"Policies ({d['total']})"))


@command(app)
def show(policy: str = typer.Argument(..., help="a system policy's name, or a custom policy's name or id"),
         as_json: bool = JsonOption) -> None:
    """A policy's document and the groups that hold it."""
    with client() as c:
        p = find_policy(c, policy)
    emit(p, as_json=as_json, render=render_policy)


@command(app)
def create(name: str = typer.Argument(...), file: str = FileOption,
           description: str = typer.Option("", "--description", "-d"), as_json: bool = JsonOption) -> None:
    """Create a custom policy from a JSON file."""
    with client() as c:
        p = with_document(file, lambda text: c.post(POLICIES, {"name": name, "description": description,
                                                                "document": text}))
    emit(p, as_json=as_json, render=lambda p: console.print(f"created policy [bold]{p['name']}[/bold] ({p['id']})"))


@command(app)
def update(policy: str = typer.Argument(..., help="a custom policy's name or id"),
           file: str = typer.Option(None, "--file", "-f", help="a new document (JSON); '-' reads standard input"),
           name: str = typer.Option(None, "--name", help="a new name"),
           description: str = typer.Option(None, "--description", "-d"), as_json: bool = JsonOption) -> None:
    """Change a custom policy (every group holding it has the change from its members' next call)."""
    if file is None and name is None and description is None:
        raise CliError("give --file, --name or --description to change", field="file")
    with client() as c:
        p = find_policy(c, policy)
        body = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
        path = f"{POLICIES}/{p['id']}"
        p = (with_document(file, lambda text: c.patch(path, {**body, "document": text})) if file is not None
             else c.patch(path, body))
    emit(p, as_json=as_json, render=lambda p: console.print(f"updated policy [bold]{p['name']}[/bold] ({p['id']})"))


@command(app)
def delete(policy: str = typer.Argument(..., help="a custom policy's name or id"),
           yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a custom policy (no group may hold it)."""
    with client() as c:
        p = find_policy(c, policy)
        confirm_delete(f"policy {p['name']}", yes=yes)
        c.delete(f"{POLICIES}/{p['id']}")
    console.print(f"deleted policy {p['name']} ({p['id']})")


@command(app)
def validate(file: str = FileOption, as_json: bool = JsonOption) -> None:
    """Check a policy document without saving it: the actions each statement covers, or the line and
    column of the first mistake."""
    with client() as c:
        result = with_document(file, lambda text: c.post(f"{POLICIES}/validate", {"document": text}))

    def render(r: dict) -> None:
        console.print("[green]valid[/green]")
        table(["#", "effect", "actions", "covers"],
              [(i, s["effect"], ", ".join(s["actions"]), f"{len(s['matches'])}: {', '.join(s['matches'])}")
               for i, s in enumerate(r["statements"])], title="Statements")
    emit(result, as_json=as_json, render=render)
