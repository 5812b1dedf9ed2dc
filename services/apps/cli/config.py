"""Where the CLI keeps the platform URL and the login token: ``cli.json`` in the user config dir.

``MAAS_CONFIG_DIR`` moves the folder (tests, several platforms); ``MAAS_URL`` and ``MAAS_TOKEN``
override the stored values for one command (scripts, CI).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from services.lib.common.private_files import private_dir

DEFAULT_URL = "http://127.0.0.1:8000"


def config_dir() -> Path:
    if os.environ.get("MAAS_CONFIG_DIR"):
        return Path(os.environ["MAAS_CONFIG_DIR"]).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("openmaas"))


def config_file() -> Path:
    return config_dir() / "cli.json"


@dataclass
class CliConfig:
    url: str = DEFAULT_URL
    token: str | None = None
    username: str | None = None


def load() -> CliConfig:
    """Stored values, then the environment on top."""
    stored = CliConfig()
    path = config_file()
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            stored = CliConfig(**{k: v for k, v in data.items() if k in CliConfig.__dataclass_fields__})
        except (ValueError, TypeError):
            pass  # a damaged file behaves like no file; `maas login` rewrites it
    if os.environ.get("MAAS_URL"):
        stored.url = os.environ["MAAS_URL"]
    if os.environ.get("MAAS_TOKEN"):
        stored.token = os.environ["MAAS_TOKEN"]
    stored.url = stored.url.rstrip("/")
    return stored


def save(config: CliConfig) -> Path:
    path = config_file()
    private_dir(path.parent)
    # The token is a bearer secret: readable by its owner only, from the first byte written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(config), f, indent=2)
    os.chmod(path, 0o600)
    return path


def clear_token() -> None:
    config = load()
    config.token, config.username = None, None
    save(config)
