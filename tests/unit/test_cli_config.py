"""The CLI's stored login: config dir, file permissions, environment overrides."""
from __future__ import annotations

import json
import stat

import pytest

from services.apps.cli import config as cli_config


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("MAAS_URL", raising=False)
    monkeypatch.delenv("MAAS_TOKEN", raising=False)
    return tmp_path / "cfg"


def test_nothing_stored_gives_the_local_default(config_dir):
    loaded = cli_config.load()
    assert loaded.url == cli_config.DEFAULT_URL and loaded.token is None


def test_saved_login_round_trips_and_only_its_owner_can_read_it(config_dir):
    path = cli_config.save(cli_config.CliConfig(url="http://maas:8000/", token="maas-secret", username="ann"))
    assert path == config_dir / "cli.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = cli_config.load()
    assert (loaded.url, loaded.token, loaded.username) == ("http://maas:8000", "maas-secret", "ann")


def test_environment_overrides_the_stored_values(config_dir, monkeypatch):
    cli_config.save(cli_config.CliConfig(url="http://stored:1", token="stored-token"))
    monkeypatch.setenv("MAAS_URL", "http://env:2")
    monkeypatch.setenv("MAAS_TOKEN", "env-token")
    loaded = cli_config.load()
    assert (loaded.url, loaded.token) == ("http://env:2", "env-token")


def test_logout_forgets_the_token_but_keeps_the_url(config_dir):
    cli_config.save(cli_config.CliConfig(url="http://maas:8000", token="t", username="ann"))
    cli_config.clear_token()
    data = json.loads((config_dir / "cli.json").read_text())
    assert data == {"url": "http://maas:8000", "token": None, "username": None}


def test_a_damaged_file_behaves_like_no_file(config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "cli.json").write_text("{not json")
    assert cli_config.load().token is None
