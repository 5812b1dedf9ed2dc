"""``maas login``, ``maas logout``, ``maas whoami``, and ``maas auth``: sessions and password."""
from __future__ import annotations

import typer

from services.apps.cli import config as cli_config
from services.apps.cli.client import CliError, Client
from services.apps.cli.common import client, command
from services.apps.cli.output import JsonOption, console, emit, err_console, fields, print_error, table, when

auth_app = typer.Typer(help="My sessions and password; log out (the token stops working).", no_args_is_help=True)
sessions_app = typer.Typer(help="My sessions (logins that have not expired): list, revoke.", no_args_is_help=True)
auth_app.add_typer(sessions_app, name="sessions")
SESSIONS = "/api/v1/auth/sessions"


def log_out() -> None:
    """Revoke the token on the platform, then forget it here (forgotten even where the platform could
    not be told: exit 1 then, saying the token still works until it expires)."""
    if not cli_config.load().token:
        console.print("Not logged in.")
        return
    try:
        with Client() as c:
            c.post("/api/v1/auth/logout")
    except CliError as exc:
        cli_config.clear_token()
        if exc.status == 401:
            console.print("Logged out (the token had already expired or been revoked).")
            return
        print_error(exc)
        err_console.print("  the token is forgotten here, but the platform still accepts it until it expires",
                          highlight=False)
        raise typer.Exit(1) from None
    cli_config.clear_token()
    console.print("Logged out: the token is revoked.")


@command(auth_app, "logout")
def auth_logout() -> None:
    """Revoke my token on the platform and forget it here."""
    log_out()


@command(sessions_app, "list")
def sessions_list(as_json: bool = JsonOption) -> None:
    """My sessions: where and when each logged in, when it expires (the current one marked)."""
    with client() as c:
        data = c.get(SESSIONS, limit=200)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "client", "created", "last seen", "expires", "current"],
        [(s["id"], s["name"], s.get("client"), when(s["created_at"]), when(s.get("last_seen_at")),
          when(s["expires_at"]), "yes" if s["current"] else "") for s in d["items"]],
        title=f"Sessions ({d['total']})"))


@command(sessions_app, "revoke")
def sessions_revoke(session_id: str = typer.Argument(..., help="a session id (see `maas auth sessions list`)")) -> None:
    """End one of my sessions (its token stops working)."""
    with client() as c:
        mine = c.get(SESSIONS, limit=200)["items"]
        c.delete(f"{SESSIONS}/{session_id}")
    if any(s["id"] == session_id and s["current"] for s in mine):
        cli_config.clear_token()
        console.print(f"revoked session {session_id}, the one this CLI used: log in again with `maas login`")
    else:
        console.print(f"revoked session {session_id}")


@command(auth_app, "password")
def password(
    current: str = typer.Option(..., "--current", prompt="Current password", hide_input=True),
    new: str = typer.Option(..., "--new", prompt="New password", hide_input=True, confirmation_prompt=True,
                            help="at least 8 characters"),
    as_json: bool = JsonOption,
) -> None:
    """Change my password (my other sessions end; this one and my API keys keep working)."""
    with client() as c:
        data = c.post("/api/v1/auth/password", {"current_password": current, "new_password": new})
    emit(data, as_json=as_json, render=lambda d: console.print(
        f"Password changed; {d['revoked_sessions']} other session(s) ended."))


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
                try:
                    me = c.get("/api/v1/auth/me")
                except CliError as exc:
                    if exc.status == 401:
                        exc.hint = "that token is wrong, expired or revoked: log in with --username instead"
                    raise
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
        """Revoke the stored token on the platform and forget it (same as `maas auth logout`)."""
        log_out()

    @command(app)
    def whoami(as_json: bool = JsonOption) -> None:
        """Who the stored token belongs to."""
        with Client() as c:
            me = c.get("/api/v1/auth/me")
            url = c.url
        emit({**me, "url": url}, as_json=as_json, render=lambda m: fields([
            ("url", m["url"]), ("username", m["username"]), ("role", m["role"]),
            ("account role", m.get("account_role")), ("tenant", m["tenant_id"]),
            ("default bucket", m["default_bucket"])]))

    app.add_typer(auth_app, name="auth")


__all__ = ["CliError", "register"]
