"""Data at rest is owner-only (issue 14, item 9): the embedded data folder, its credentials and logs.

The attack: another account on the same machine reads the data folder, which holds every tenant's
weights, datasets and documents, the S3 credentials and logs with users' prompts.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.lib.embedded.servers import EmbeddedServers

pytestmark = pytest.mark.integration


def _open_to_others(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that its group or other users can use at all."""
    found = []
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder)] + [Path(folder) / n for n in files]:
            try:
                mode = stat.S_IMODE(path.lstat().st_mode)
            except FileNotFoundError:   # the servers delete temp files as they go
                continue
            if mode & 0o077 and not path.is_symlink():
                found.append(f"{path.relative_to(root)}: {oct(mode)}")
    return found


def test_the_running_data_folder_is_owner_only(embedded_servers: EmbeddedServers) -> None:
    d = embedded_servers.data_dir
    for folder in (d, d / "s3", d / "mongo", d / "logs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in (d / "credentials.json", d / "secantusd.toml", d / "logs" / "s3.log", d / "logs" / "mongo.log",
                 d / "logs" / "kafka.log"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    # What the servers themselves wrote (objects, the database, Kafka's log segments) too.
    assert _open_to_others(d) == []


def test_a_data_folder_left_open_by_an_older_version_is_closed_on_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    (data_dir / "logs").mkdir(parents=True)
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "logs", 0o755)
    (data_dir / "logs" / "s3.log").write_text("an old log\n")
    os.chmod(data_dir / "logs" / "s3.log", 0o644)
    servers = EmbeddedServers(data_dir)
    servers.start(timeout=60)
    try:
        assert _open_to_others(data_dir) == []
    finally:
        servers.stop()
