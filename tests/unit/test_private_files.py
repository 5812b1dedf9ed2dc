"""Owner-only folders and files (services.lib.common.private_files) and where the platform uses them."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.apps.cli import config as cli_config
from services.apps.cli import platform_cmds
from services.lib.common.private_files import open_private_append, private_dir, write_private_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """A permissive umask, as on many desktops; restored afterwards."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_folders_are_born_and_kept_owner_only(tmp_path, open_umask):
    made = private_dir(tmp_path / "a" / "b")
    assert _mode(tmp_path / "a") == 0o700 and _mode(made) == 0o700
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    assert _mode(private_dir(wide)) == 0o700


def test_files_are_owner_only_from_the_first_byte(tmp_path, open_umask):
    log = tmp_path / "x.log"
    log.write_text("old\n")
    os.chmod(log, 0o644)
    with open_private_append(log) as f:
        f.write(b"new\n")
    assert _mode(log) == 0o600 and log.read_text() == "old\nnew\n"
    write_private_text(tmp_path / "c.toml", "x = 1\n")
    assert _mode(tmp_path / "c.toml") == 0o600


def test_the_cli_keeps_its_login_in_an_owner_only_folder(tmp_path, monkeypatch, open_umask):
    monkeypatch.setenv("MAAS_CONFIG_DIR", str(tmp_path / "cfg"))
    path = cli_config.save(cli_config.CliConfig(token="maas-secret"))
    assert _mode(path.parent) == 0o700 and _mode(path) == 0o600


class _FakeServers:
    """Stands in for EmbeddedServers: `maas up` is tested for what it creates itself."""

    def __init__(self, data_dir):
        self.data_dir = data_dir

    def start(self):
        pass

    def supervise(self, *, on_restart):
        pass

    def stop(self):
        pass

    def settings_env(self):
        return {}


@pytest.fixture
def restored_environ():
    """``maas up`` exports its servers' and Ray head's variables for the platform it hosts (in this
    process and its children): the test process gets its own back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_maas_up_makes_everything_it_writes_owner_only(tmp_path, monkeypatch, open_umask, restored_environ):
    from services.lib.embedded import servers

    async def no_admin():
        return None

    async def no_presets():
        return []

    written = {}

    def serve(**_):   # stands in for the platform: it writes a file, as the services do
        work = Path(os.environ["MAAS_WORK_DIR"]) / "telemetry"
        work.mkdir()
        (work / "traces.jsonl").write_text("{}\n")
        written["umask"] = os.umask(0o077)

    monkeypatch.setattr(servers, "EmbeddedServers", _FakeServers)
    monkeypatch.setattr(platform_cmds, "_bootstrap_admin", no_admin)
    monkeypatch.setattr(platform_cmds, "_preset_imports", no_presets)
    monkeypatch.setattr(platform_cmds, "_serve", serve)
    monkeypatch.delenv("MAAS_WORK_DIR", raising=False)
    data_dir = tmp_path / "home" / "data"
    platform_cmds.up(data_dir=data_dir, host="127.0.0.1", port=8000, ray=False, log_level="info")
    assert written["umask"] == 0o077
    assert _mode(data_dir) == 0o700 and _mode(data_dir / "work") == 0o700
    assert _mode(data_dir / "work" / "telemetry") == 0o700
    assert _mode(data_dir / "work" / "telemetry" / "traces.jsonl") == 0o600


class _FakeHead:
    started = stopped = False

    def __init__(self, *, data_dir):
        self.data_dir, self.address = data_dir, ""

    @property
    def driver_env(self):
        return {"RAY_AUTH_TOKEN_PATH": str(self.data_dir / "ray" / "auth_token")}

    def start(self):
        _FakeHead.started, self.address = True, "127.0.0.1:6390"
        return self.address

    def stop(self):
        _FakeHead.stopped = True


class _FakePoolNodes:
    """The dedicated pools' node supervisor (it would dial the fake head's Ray)."""
    started = stopped = False

    def __init__(self, head):
        self.head = head

    def start(self):
        _FakePoolNodes.started = True
        return self

    def stop(self):
        _FakePoolNodes.stopped = True


def test_maas_up_ray_runs_the_platform_on_its_own_ray_head(tmp_path, monkeypatch, open_umask, restored_environ):
    from services.lib.embedded import servers

    async def no_admin():
        return None

    async def no_presets():
        return []

    seen = {}
    monkeypatch.setattr(servers, "EmbeddedServers", _FakeServers)
    monkeypatch.setattr(platform_cmds, "LocalRayHead", _FakeHead)
    monkeypatch.setattr(platform_cmds, "PoolNodeSupervisor", _FakePoolNodes)
    monkeypatch.setattr(platform_cmds, "_bootstrap_admin", no_admin)
    monkeypatch.setattr(platform_cmds, "_preset_imports", no_presets)
    monkeypatch.setattr(platform_cmds, "_serve", lambda **_: seen.update(
        address=os.environ.get("MAAS_RAY_ADDRESS"), token=os.environ.get("RAY_AUTH_TOKEN_PATH")))
    for name in ("MAAS_WORK_DIR", "MAAS_RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    platform_cmds.up(data_dir=data_dir, host="127.0.0.1", port=8000, ray=True, log_level="info")
    assert seen == {"address": "127.0.0.1:6390", "token": str(data_dir / "ray" / "auth_token")}
    assert _FakeHead.started and _FakeHead.stopped      # stopped with the platform
    assert _FakePoolNodes.started and _FakePoolNodes.stopped   # the pools' nodes too
