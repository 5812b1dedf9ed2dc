"""The `maas` command tree: the platform commands unchanged, every client command present, completion."""
from __future__ import annotations

import shlex
import subprocess
import sys

import typer.main

from services.apps.cli import app, main


def _params(command) -> dict:
    return {p.name: p for p in command.params}


def test_platform_commands_keep_their_options():
    group = typer.main.get_command(app)
    up = _params(group.commands["up"])
    assert up["host"].default == "127.0.0.1" and up["port"].default == 8000 and "--data-dir" in up["data_dir"].opts
    serve = _params(group.commands["serve"])
    assert serve["services"].default == "all" and serve["host"].envvar == "MAAS_API_HOST"
    assert serve["port"].default == 8000 and serve["port"].envvar == "MAAS_API_PORT"
    assert "bootstrap-admin" in group.commands
    for name in ("backup", "restore"):   # the data folder of `maas up`, like up itself
        assert "--data-dir" in _params(group.commands[name])["data_dir"].opts
    assert callable(main)


def test_serve_help_names_every_service():
    from services.runtime import SERVICES

    serve = _params(typer.main.get_command(app).commands["serve"])
    listed = {name.strip() for name in serve["services"].help.split(":", 1)[1].split(",")}
    assert listed == set(SERVICES)


def test_every_operation_has_a_command():
    group = typer.main.get_command(app)
    expected = {
        "login": None, "logout": None, "whoami": None, "deploy": None, "chat": None, "usage": None, "events": None,
        "users": {"list", "create", "show", "disable", "enable", "set-role", "delete", "add-to-group",
                  "remove-from-group"},
        "groups": {"list", "create", "show", "delete", "attach-policy", "detach-policy", "members"},
        "policies": {"list", "show", "create", "update", "delete", "validate"},
        "audit": {"list", "export"},
        "auth": {"logout", "sessions", "password"},
        "templates": {"list", "show"},
        "models": {"list", "show", "create", "delete", "versions", "version", "add-version"},
        "storage": {"buckets", "ls", "upload"},
        "tune": {"estimate", "create", "list", "show", "watch", "logs", "stop", "continue", "delete", "checkpoints",
                 "convert"},
        "compress": {"estimate", "create", "list", "show", "watch", "logs", "stop", "continue", "specs", "delete"},
        "services": {"list", "show", "specs", "start", "stop", "scale", "qps", "upgrade", "delete", "events", "logs",
                     "metrics", "call", "moderation"},
        "presets": {"list", "claim"},
        "keys": {"create", "list", "delete"},
        "notify": {"topics", "create-topic", "delete-topic", "subscribe", "subscriptions", "unsubscribe",
                   "deliveries", "rules", "add-rule", "delete-rule"},
    }
    for name, subcommands in expected.items():
        assert name in group.commands, name
        if subcommands:
            assert subcommands <= set(group.commands[name].commands), (name, set(group.commands[name].commands))


def test_json_output_option_on_listing_commands():
    group = typer.main.get_command(app)
    for path in (("models", "list"), ("templates", "list"), ("tune", "list"), ("compress", "list"),
                 ("services", "list"), ("keys", "list"), ("users", "list"), ("users", "show"), ("groups", "list"),
                 ("groups", "show"), ("groups", "members"),
                 ("policies", "list"), ("policies", "show"), ("policies", "validate"), ("audit", "list")):
        command = group.commands[path[0]].commands[path[1]]
        assert "--json" in _params(command)["as_json"].opts, path


def test_module_entry_point_and_shell_completion():
    out = subprocess.run([sys.executable, "-m", "services.apps.cli", "--help"], capture_output=True, text=True, check=True)
    assert "models" in out.stdout and "tune" in out.stdout
    # Typer's --show-completion is a flag: it finds the shell among the process's parents, so it runs
    # as a child of bash here (under a pytest whose parents hold no shell, e.g. init, it finds none).
    # Two commands: bash runs a lone `bash -c` command in its own process (exec), no longer a parent.
    script = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m services.apps.cli --show-completion; exit $?"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert script.returncode == 0 and "complete" in script.stdout and "_MAAS_COMPLETE" in script.stdout.upper()
