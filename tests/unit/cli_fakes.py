"""A faked console API for the CLI's unit tests: `maas ...` runs in-process against answers registered
per (method, path), and every request it made is recorded."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest
from typer.testing import CliRunner

from services.apps.cli import app
from services.apps.cli import config as cli_config
from services.apps.cli.client import Client

NOT_FOUND = {"error": {"code": "not_found", "message": "not found"}}


@dataclass
class Call:
    method: str
    path: str
    params: dict
    body: object


@dataclass
class FakeApi:
    """Answers registered (method, path) pairs; anything else is the API's 404."""
    routes: dict = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    sequences: dict = field(default_factory=dict)

    def on(self, method: str, path: str, body=None, *, status: int = 200, text: str | None = None) -> None:
        self.routes[(method, path)] = (status, body, text)

    def on_each(self, method: str, path: str, *bodies) -> None:
        """Answer these bodies in turn, the last one from then on (a resource that changes while polled)."""
        self.sequences[(method, path)] = list(bodies)

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append(Call(request.method, request.url.path, dict(request.url.params), body))
        queue = self.sequences.get((request.method, request.url.path))
        if queue:
            return httpx.Response(200, json=queue.pop(0) if len(queue) > 1 else queue[0])
        status, payload, text = self.routes.get((request.method, request.url.path), (404, NOT_FOUND, None))
        if text is not None:
            return httpx.Response(status, text=text, headers={"content-type": "text/csv; charset=utf-8"})
        if status == 204:
            return httpx.Response(204)
        return httpx.Response(status, json=payload)

    def sent(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if (c.method, c.path) == (method, path)]


@pytest.fixture
def api(monkeypatch, tmp_path) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setenv("MAAS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("MAAS_URL", raising=False)
    monkeypatch.delenv("MAAS_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    cli_config.save(cli_config.CliConfig(url="http://maas", token="maas-t", username="root"))
    original = Client.__init__

    def faked(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.http.close()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"},
                                 transport=httpx.MockTransport(fake.handler))
    monkeypatch.setattr(Client, "__init__", faked)
    return fake


def no_sleep(monkeypatch, time_module, *, what: str = "the wait") -> None:
    """The CLI polls without sleeping (``time_module``: the ``time`` its command module imported); a
    poll that would never end fails instead of hanging."""
    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) > 20:
            raise AssertionError(f"{what} did not end")
    monkeypatch.setattr(time_module, "sleep", sleep)


def maas(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)
