"""``maas keys``: API keys for the OpenAI-compatible API (the secret is shown once)."""
from __future__ import annotations

import typer

from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.output import JsonOption, console, emit, table, when

app = typer.Typer(help="API keys (at most 5; the secret is shown only when created).", no_args_is_help=True)
KEYS = "/api/v1/api-keys"


@command(app)
def create(description: str = typer.Option("", "--description", "-d"), as_json: bool = JsonOption) -> None:
    """Create an API key and print its secret (shown only now)."""
    with client() as c:
        key = c.post(KEYS, {"description": description})
    emit(key, as_json=as_json, render=lambda k: (
        console.print(f"[bold]{k['key']}[/bold]", highlight=False, soft_wrap=True),   # never broken over lines
        console.print("[yellow]Copy it now: the secret is not shown again.[/yellow]")))


@command(app, "list")
def list_(as_json: bool = JsonOption) -> None:
    """My API keys (masked) with their usage."""
    with client() as c:
        data = c.get(KEYS)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "key", "description", "requests", "tokens", "created", "last used"],
        [(k["id"], k["masked_key"], k["description"], k["usage"]["requests"], k["usage"]["total_tokens"],
          when(k["created_at"]), when(k["last_used_at"])) for k in d["items"]],
        title=f"API keys ({len(d['items'])}/{d['max_keys']})"))


@command(app)
def delete(key_id: str = typer.Argument(..., help="key id (see `maas keys list`)"),
           yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete an API key (it stops working at once)."""
    confirm_delete(f"API key {key_id}", yes=yes)
    with client() as c:
        c.delete(f"{KEYS}/{key_id}")
    console.print(f"deleted API key {key_id}")
