"""``maas packages``: compute packages (guide: 套餐包) — CPU-hours and accelerator-hours on the public
pool, paid in advance and used before on-demand hours; granted by the platform administrator."""
from __future__ import annotations

import typer

from services.apps.cli.common import client, command
from services.apps.cli.output import JsonOption, amount, console, emit, table, when

app = typer.Typer(help="Compute packages: prepaid hours on the public pool.", no_args_is_help=True)
PACKAGES = "/api/v1/packages"


def left(p: dict, key: str) -> str:
    return f"{amount(p[f'{key}_left'])} / {amount(p[key])}"


@command(app, "list")
def list_(as_json: bool = JsonOption) -> None:
    """My account's packages: what is left of them and when they expire."""
    with client() as c:
        data = c.get(PACKAGES)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "CPU-hours left", "accelerator-hours left", "granted", "expires"],
        [(p["id"], p["name"], left(p, "cpu_hours"), left(p, "accelerator_hours"), when(p.get("granted_at")),
          when(p.get("expires_at"))) for p in d["items"]], title=f"Packages ({len(d['items'])})"))


@command(app)
def grant(account_id: str = typer.Argument(..., help="the account (tenant id) receiving the package"),
          name: str = typer.Option(..., "--name", help="the package's name, 1-64 characters"),
          cpu_hours: float = typer.Option(0.0, "--cpu-hours", min=0, help="CPU-hours on the public pool"),
          accelerator_hours: float = typer.Option(0.0, "--accelerator-hours", min=0,
                                                  help="accelerator-hours on the public pool"),
          valid_days: int = typer.Option(30, "--valid-days", min=1, help="it expires this many days from now"),
          as_json: bool = JsonOption) -> None:
    """Grant an account a package (the platform administrator only)."""
    with client() as c:
        data = c.post(PACKAGES, {"account_id": account_id, "name": name, "cpu_hours": cpu_hours,
                                 "accelerator_hours": accelerator_hours, "valid_days": valid_days})
    emit(data, as_json=as_json, render=lambda p: console.print(
        f"granted package {p['name']} ({p['id']}) to account {account_id}: {amount(p['cpu_hours'])} CPU-hours, "
        f"{amount(p['accelerator_hours'])} accelerator-hours, expires {when(p.get('expires_at'))}", highlight=False,
        markup=False))
