"""Shared plumbing of the client commands: error handling, the client, waiting with a spinner."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import typer

from services.apps.cli.client import CliError, Client
from services.apps.cli.output import err_console, print_error


def handled(fn: Callable) -> Callable:
    """``fn`` whose CliError becomes a printed message and exit status 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except CliError as exc:
            print_error(exc)
            raise typer.Exit(1) from None
    return wrapper


def command(app: typer.Typer, name: str | None = None, **kwargs):
    """Register a command whose CliError becomes a printed message and exit status 1."""
    def decorate(fn: Callable) -> Callable:
        app.command(name, **kwargs)(handled(fn))
        return fn
    return decorate


def client() -> Client:
    return Client()


def wait_until(fetch: Callable[[], Any], done: Callable[[Any], bool], *, message: Callable[[Any], str],
               timeout: float, interval: float = 1.0, quiet: bool = False) -> Any:
    """Poll ``fetch`` until ``done``; a spinner shows ``message(latest)`` meanwhile."""
    deadline = time.monotonic() + timeout
    value = fetch()
    with err_console.status(message(value)) as status:
        while not done(value):
            if time.monotonic() > deadline:
                raise CliError(f"still not finished after {timeout:.0f} s ({message(value)})",
                               hint="check again later with the show command")
            time.sleep(interval)
            value = fetch()
            if not quiet:
                status.update(message(value))
    return value


def confirm_delete(what: str, *, yes: bool) -> None:
    """The console's rule: a deletion needs the word DELETE typed (or --yes in scripts)."""
    if yes:
        return
    typed = typer.prompt(f"Deleting {what} cannot be undone. Type DELETE to confirm", default="",
                         show_default=False)
    if typed.strip() != "DELETE":
        raise CliError("not deleted: the confirmation was not 'DELETE'")
