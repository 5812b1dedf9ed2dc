"""``maas audit``: who changed what, when, from where, and the result; filtered, paged, or as CSV."""
from __future__ import annotations

import csv
import os
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from services.apps.cli.client import CliError
from services.apps.cli.common import client, command
from services.apps.cli.output import JsonOption, console, emit, err_console, table, when

app = typer.Typer(help="The audit log of my account (the platform administrator: every account).",
                  no_args_is_help=True)
AUDIT = "/api/v1/audit"
MAX_LIMIT = 500
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

UserOption = typer.Option(None, "--user", "-u", help="a user id or username")
ActionOption = typer.Option(None, "--action", "-a", help="an action (maas:models:create) or a prefix ending in '*' "
                                                         "(maas:models:*)")
ResourceOption = typer.Option(None, "--resource", "-r", help="a path: its records and those of everything under it")
TIME_HELP = ("ISO 8601 (a time without a zone is local time) or an age such as 30m, 12h, 7d")
SinceOption = typer.Option(None, "--since", help=f"from this time: {TIME_HELP}")
UntilOption = typer.Option(None, "--until", help=f"before this time: {TIME_HELP}")
AccountOption = typer.Option(None, "--account", help="an account id (the platform administrator only)")


def parse_time(text: str | None, *, option: str, now: datetime | None = None) -> str | None:
    """An absolute UTC time for the API from an ISO time (local when it has no zone) or an age ("7d")."""
    if text is None:
        return None
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        at = (now or datetime.now(UTC)) - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    else:
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f"{option}: '{text}' is neither an ISO 8601 time (2026-12-01T09:30) nor an age "
                           "(30m, 12h, 7d)", field=option) from None
        if at.tzinfo is None:
            at = at.astimezone()   # the local zone: the CLI shows times in local time too
    return at.astimezone(UTC).isoformat()


def filters(*, user: str | None, action: str | None, resource: str | None, since: str | None,
            until: str | None, account: str | None) -> dict:
    return {"user": user, "action": action, "resource": resource, "account": account,
            "since": parse_time(since, option="--since"), "until": parse_time(until, option="--until")}


@command(app, "list")
def list_(user: str = UserOption, action: str = ActionOption, resource: str = ResourceOption,
          since: str = SinceOption, until: str = UntilOption, account: str = AccountOption,
          limit: int = typer.Option(50, "--limit", "-n", help=f"records per page (1-{MAX_LIMIT})"),
          page: int = typer.Option(1, "--page", help="which page (1 is the newest records)"),
          as_json: bool = JsonOption) -> None:
    """Audit records, newest first, one page at a time."""
    if not 1 <= limit <= MAX_LIMIT:
        raise CliError(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}", field="limit")
    if page < 1:
        raise CliError(f"--page must be 1 or more, not {page}", field="page")
    query = filters(user=user, action=action, resource=resource, since=since, until=until, account=account)
    offset = (page - 1) * limit
    with client() as c:
        data = c.get(AUDIT, **query, offset=offset, limit=limit)

    def render(d: dict) -> None:
        items = d["items"]
        shown = f"{offset + 1}-{offset + len(items)} of {d['total']}" if items else f"none of {d['total']} here"
        table(["time", "user", "action", "resource", "status", "client"],
              [(when(r["at"]), r.get("username") or r.get("user_id"), r.get("action"), r.get("resource"),
                r.get("status"), r.get("client")) for r in items], title=f"Audit records ({shown})")
        if offset + len(items) < d["total"]:
            console.print(f"[dim]next page: --page {page + 1}[/dim]")
    emit(data, as_json=as_json, render=render)


@command(app)
def export(output: str = typer.Option(..., "--output", "-o", help="the CSV file to write; '-' writes standard output"),
           user: str = UserOption, action: str = ActionOption, resource: str = ResourceOption,
           since: str = SinceOption, until: str = UntilOption, account: str = AccountOption) -> None:
    """Every matching audit record (newest first, at most 100,000) as CSV."""
    query = filters(user=user, action=action, resource=resource, since=since, until=until, account=account)
    with client() as c:
        if output == "-":
            c.download(f"{AUDIT}/export", sys.stdout.buffer, **query)
            sys.stdout.flush()
            return
        target = Path(output)
        if target.is_dir():
            raise CliError(f"--output: '{output}' is a folder; name a file", field="output")
        if not target.parent.is_dir():
            raise CliError(f"--output: the folder '{target.parent}' does not exist", field="output")
        # Written beside the target and renamed at the end: a failed export leaves no half-written file.
        fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent.resolve())
        try:
            with os.fdopen(fd, "wb") as sink:
                c.download(f"{AUDIT}/export", sink, **query)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    with target.open(encoding="utf-8", newline="") as written:
        records = max(sum(1 for _ in csv.reader(written)) - 1, 0)   # less the header row
    err_console.print(f"wrote {records} audit records to {output}", highlight=False)
