"""MAAS_METRICS_TOKEN: how it is validated and matched (the HTTP side: tests/integration/test_metrics_access.py)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.lib.common.metrics_access import _is_metrics_token
from services.lib.common.settings import Settings


def test_a_short_metrics_token_is_refused_naming_the_rule(monkeypatch):
    monkeypatch.setenv("MAAS_METRICS_TOKEN", "short")
    with pytest.raises(ValidationError, match=r"(?s)metrics_token.*at least 32 characters"):
        Settings(_env_file=None)


def test_the_metrics_token_is_secret_and_matched_exactly(monkeypatch):
    token = "t" * 40
    monkeypatch.setenv("MAAS_METRICS_TOKEN", token)
    settings = Settings(_env_file=None)
    assert token not in repr(settings)
    assert _is_metrics_token(token, settings=settings)
    assert not _is_metrics_token(token[:-1], settings=settings)
    assert not _is_metrics_token("", settings=Settings(_env_file=None, metrics_token=""))
