"""The ``maas`` command: start the platform, and operate it over HTTP (login, models, tuning, …)."""
from __future__ import annotations

import os

import typer

from services.apps.cli import (account_cmds, audit_cmds, auth_cmds, backup_cmds, chat_cmds, compress_cmds, groups_cmds,
                          keys_cmds, models_cmds, notify_cmds, packages_cmds, platform_cmds, policies_cmds, pools_cmds,
                          services_cmds, storage_cmds, templates_cmds, tuning_cmds, users_cmds)
from services.lib.common.log_setup import configure_logging

# No locals in tracebacks: they would print the bearer token.
app = typer.Typer(help="OpenMaaS: self-hosted Model-as-a-Service.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)

platform_cmds.register(app)
backup_cmds.register(app)
auth_cmds.register(app)
app.add_typer(templates_cmds.app, name="templates")
app.add_typer(models_cmds.app, name="models")
app.add_typer(storage_cmds.app, name="storage")
app.add_typer(tuning_cmds.app, name="tune")
app.add_typer(compress_cmds.app, name="compress")
services_cmds.register(app)
app.add_typer(pools_cmds.app, name="pools")
app.add_typer(packages_cmds.app, name="packages")
app.add_typer(keys_cmds.app, name="keys")
chat_cmds.register(app)
app.add_typer(notify_cmds.app, name="notify")
account_cmds.register(app)
app.add_typer(users_cmds.app, name="users")
app.add_typer(groups_cmds.app, name="groups")
app.add_typer(policies_cmds.app, name="policies")
app.add_typer(audit_cmds.app, name="audit")


def main() -> None:
    try:
        configure_logging(os.environ.get("MAAS_LOG_LEVEL", "info"))
    except ValueError as exc:
        raise SystemExit(f"MAAS_LOG_LEVEL: {exc}") from None
    app(prog_name="maas")
