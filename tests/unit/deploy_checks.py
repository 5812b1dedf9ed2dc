"""Checks shared by the deployment tests (docker-compose.yml, deploy/kubernetes/): the code is the truth.

A deployment file runs ``maas`` commands with ``MAAS_*`` variables in the image of deploy/Dockerfile;
these helpers parse such a command with the real CLI, know every ``MAAS_*`` variable the code reads,
build the real ``Settings`` from an environment, and read the Dockerfile. They take plain values
(an argv list, an env dict with final string values) so that each deployment format only has to
say where it keeps them.
"""
from __future__ import annotations

import importlib
import json
import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
from pydantic_settings import BaseSettings

from services.apps.cli import app as cli_app
from services.lib.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# Settings with no safe production default (the defaults point at 127.0.0.1 / dev credentials).
REQUIRED_SETTINGS = ("kafka_bootstrap", "mongo_url", "s3_endpoint", "s3_access_key", "s3_secret_key")
# MAAS_* variables read directly from os.environ rather than through Settings (verified in test_compose).
DIRECT_ENV = {"MAAS_LOG_LEVEL": ROOT / "services" / "apps" / "cli" / "main.py"}


# ------------------------------------------------------------------------------------ the CLI

def parse_maas(args: list[str], env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Parse ``maas <sub> ...`` with the real typer app, in the container's environment.

    click raises on an unknown subcommand, an unknown option or a bad value (e.g. --port abc);
    the container's env is applied because options such as --port also read MAAS_API_PORT.
    """
    assert args[:1] == ["maas"], f"not a maas command: {args}"
    group = typer.main.get_command(cli_app)  # typer's own click (vendored in recent typer)
    assert len(args) >= 2, f"{args}: no maas subcommand"
    sub = group.commands.get(args[1])
    assert sub is not None, f"{args}: 'maas {args[1]}' is not a command (known: {sorted(group.commands)})"
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MAAS_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, str(value))
        try:
            ctx = sub.make_context(args[1], list(args[2:]))
        except Exception as exc:  # click's UsageError / NoSuchOption / BadParameter
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            raise AssertionError(f"{args}: {message}") from exc
    return args[1], ctx.params


def served_services(params: dict[str, Any]) -> list[str]:
    return [s.strip() for s in str(params.get("services", "")).split(",") if s.strip()]


# ------------------------------------------------------------------------------------ settings

def service_settings_classes() -> list[type]:
    """The per-service option classes (services/<name>/settings.py, env prefix MAAS_<NAME>_)."""
    classes = []
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes += [obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, BaseSettings)
                    and obj is not BaseSettings and obj.__module__ == module.__name__]
    return classes


def settings_field_env() -> set[str]:
    names = {f"MAAS_{name.upper()}" for name in Settings.model_fields}
    for cls in service_settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        if cls is not Settings and prefix:
            names |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    return names


def check_known_env(where: str, keys) -> None:
    """Every MAAS_* name is a Settings field (or one of the few read directly)."""
    known = settings_field_env() | set(DIRECT_ENV)
    for key in keys:
        if key.startswith("MAAS_"):
            assert key in known, f"{where}: {key} is not a Settings field (MAAS_ + field name)"


def check_settings_env(where: str, env: dict[str, str], *, required=REQUIRED_SETTINGS) -> None:
    """``env`` (the image's ENV and the container's, final values) builds valid settings with the
    production values set: the ``required`` fields, whose defaults only fit a laptop."""
    for field in required:
        key = f"MAAS_{field.upper()}"
        assert env.get(key), f"{where}: {key} must be set (its default only fits a laptop)"
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MAAS_")]:
            mp.delenv(key)
        for key, value in env.items():
            if key.startswith("MAAS_"):
                mp.setenv(key, str(value))
        try:
            Settings(_env_file=None)
            for cls in service_settings_classes():
                cls()
        except Exception as exc:  # pydantic ValidationError
            raise AssertionError(f"{where}: invalid MAAS_* value: {exc}") from exc


# ------------------------------------------------------------------------------------ addresses

def host_port(address: str) -> tuple[str, int | None]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    return parts.hostname or "", parts.port


def address_hosts(value: str) -> list[str]:
    """Hosts in "h:p", "h1:p,h2:p", "scheme://h:p/..." or "mongodb://h1:p,h2:p/?..."."""
    if not value:
        return []
    netloc = value.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    return [host_port(part)[0] for part in netloc.split(",")]


# ------------------------------------------------------------------------------------ Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for the whole Dockerfile, continuation lines joined, comments dropped."""
    logical, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    return [(ln.split(None, 1)[0].upper(), (ln.split(None, 1) + [""])[1].strip()) for ln in logical]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    args = args.strip()
    return json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]


def dockerfile_entry_cmd() -> tuple[list[str], list[str]]:
    entrypoint, cmd = [], []
    for ins, args in dockerfile_final_stage():
        if ins == "ENTRYPOINT":
            entrypoint = exec_form(args)
        elif ins == "CMD":
            cmd = exec_form(args)
    return entrypoint, cmd


def dockerfile_env() -> dict[str, str]:
    env = {}
    for ins, args in dockerfile_final_stage():
        if ins == "ENV":
            for part in shlex.split(args):
                key, _, value = part.partition("=")
                env[key] = value
    return env

