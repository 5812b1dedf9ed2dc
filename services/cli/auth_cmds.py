"""``maas login``, ``maas logout``, ``maas whoami``."""
from __future__ import annotations

import typer

from services.cli import config as cli_config
from services.cli.client import CliError, Client
from services.cli.common import command
from services.cli.output import JsonOption, console, emit, fields


def register(app: typer.Typer) -> None:
    @command(app)
    def login(
        url: str = typer.Option(None, "--url", help=f"platform URL (default: the stored one, else {cli_config.DEFAULT_URL})"),
        username: str = typer.Option(None, "--username", "-u", help="account name (prompted when missing)"),
        password: str = typer.Option(None, "--password", "-p", help="password (prompted, hidden, when missing)"),
        token: str = typer.Option(None, "--token", help="store an existing bearer token instead of a password"),
    ) -> None:
        """Log in and store the URL and token in the user config dir."""
        stored = cli_config.load()
        base = (url or stored.url).rstrip("/")
        if token:
            with Client(base, token) as c:
                me = c.get("/api/v1/auth/me")
            username = me["username"]
        else:
            username = username or typer.prompt("Username")
            password = password or typer.prompt("Password", hide_input=True)
            with Client(base, token="") as c:
                answer = c.post("/api/v1/auth/login", {"username": username, "password": password})
            token = answer["token"]
        path = cli_config.save(cli_config.CliConfig(url=base, token=token, username=username))
        console.print(f"Logged in to [bold]{base}[/bold] as [bold]{username}[/bold] (saved in {path})")

    @command(app)
    def logout() -> None:
        """Forget the stored token."""
        cli_config.clear_token()
        console.print("Logged out.")

    @command(app)
    def whoami(as_json: bool = JsonOption) -> None:
        """Who the stored token belongs to."""
        with Client() as c:
            me = c.get("/api/v1/auth/me")
            url = c.url
        emit({**me, "url": url}, as_json=as_json, render=lambda m: fields([
            ("url", m["url"]), ("username", m["username"]), ("role", m["role"]), ("tenant", m["tenant_id"]),
            ("default bucket", m["default_bucket"])]))


__all__ = ["CliError", "register"]
