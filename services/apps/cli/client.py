"""The HTTP client of the CLI: bearer auth, the API's error body turned into a readable error."""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import httpx

from services.apps.cli import config as cli_config


class CliError(Exception):
    """An error the CLI prints as is (no traceback) and exits with status 1."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 field: str | None = None, details: list[dict] | None = None, hint: str | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.field = message, status, code, field
        self.details, self.hint = details or [], hint


def error_from_response(response: httpx.Response) -> CliError:
    """The console API's ``{"error": {code, message, field}}`` or OpenAI's ``{"error": {message, param}}``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or response.reason_phrase)
        field = error.get("field") or error.get("param")
        details = error.get("details") if isinstance(error.get("details"), list) else []
        code = error.get("code") or error.get("type")
    else:
        text = response.text.strip()
        message, field, details, code = (text[:500] or response.reason_phrase), None, [], None
    hint = _hint_401(response) if response.status_code == 401 else None
    return CliError(message, status=response.status_code, code=code, field=field, details=details, hint=hint)


def platform_warning(response: httpx.Response) -> str | None:
    """The text of a ``Warning: 199 openmaas "..."`` header, if the answer has one."""
    value = response.headers.get("warning", "")
    if not value.startswith("199 openmaas "):
        return None
    return value[len("199 openmaas "):].strip().strip('"')


def _hint_401(response: httpx.Response) -> str:
    """What to do about a refused credential, by which one was refused: a password while logging in,
    an API key on /v1, or the stored login token everywhere else."""
    try:
        path = response.request.url.path
    except RuntimeError:   # a response made without its request (tests)
        path = ""
    if path.startswith("/api/v1/auth/login"):
        return "check the username and password (they are case-sensitive)"
    if path == "/v1" or path.startswith("/v1/"):
        return ("the API key is wrong, expired or deleted: create one with `maas keys create`, "
                "or leave out --api-key to chat through your login")
    return "your login expired or was revoked: log in again with `maas login` (or set MAAS_TOKEN)"


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0):
        stored = cli_config.load()
        self.url = (url or stored.url).rstrip("/")
        self.token = token if token is not None else stored.token
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # httpx logs every request at INFO: noise in a CLI's output.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._warned: set[str] = set()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unreachable(self, exc: Exception) -> CliError:
        return CliError(f"cannot reach the platform at {self.url}: {exc}",
                        hint="is it running (`maas up`)? Set the URL with `maas login --url URL` or MAAS_URL")

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        if not self.token and not path.startswith("/api/v1/auth/login"):
            raise CliError("not logged in", hint="run `maas login` first (or set MAAS_TOKEN)")
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._warn(response)
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _warn(self, response: httpx.Response) -> None:
        """The platform's ``Warning`` header (e.g. its event bus is down: the change is saved, the work it
        starts waits), on stderr once per command."""
        text = platform_warning(response)
        if text and text not in self._warned:
            self._warned.add(text)
            print(f"warning: {text}", file=sys.stderr)

    def call(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        content_type = response.headers.get("content-type", "")
        return response.json() if "json" in content_type else response.text

    def get(self, path: str, /, **params) -> Any:
        # Positional-only: "path" is also a query parameter of some routes (storage listing).
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, json=body if body is not None else {})

    def put(self, path: str, body: dict) -> Any:
        return self.call("PUT", path, json=body)

    def patch(self, path: str, body: dict) -> Any:
        return self.call("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def download(self, path: str, sink: BinaryIO, /, **params) -> int:
        """Stream a GET's body into ``sink`` (a CSV export can be large); the bytes written."""
        if not self.token:
            raise CliError("not logged in", hint="run `maas login` first (or set MAAS_TOKEN)")
        written = 0
        try:
            with self.http.stream("GET", path, params={k: v for k, v in params.items() if v is not None},
                                  timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return written

    def stream_events(self, path: str, body: dict, *, headers: dict | None = None) -> Iterator[dict]:
        """Server-sent events of a streaming chat: each ``data:`` payload as a dict, until [DONE]."""
        try:
            with self.http.stream("POST", path, json=body, headers=headers, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if isinstance(event, dict) and "error" in event:
                        error = event["error"]
                        raise CliError(str(error.get("message", error)), code=error.get("code"),
                                       field=error.get("param") or error.get("field"))
                    yield event
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None


def resolve(client: Client, collection: str, ident: str, *, what: str, key: str = "name") -> dict:
    """A resource by id or by exact name (``collection`` is the list path, e.g. /api/v1/models;
    ``key`` the name's field, e.g. ``username``)."""
    try:
        return client.get(f"{collection}/{ident}")
    except CliError as exc:
        if exc.status not in (404, 400):
            raise
    listing = client.get(collection, name=ident, limit=200)
    matches = [item for item in listing.get("items", []) if item.get(key) == ident]
    if len(matches) == 1:
        return client.get(f"{collection}/{matches[0]['id']}")
    if len(matches) > 1:
        raise CliError(f"{len(matches)} {what}s are named '{ident}'; use the id")
    raise CliError(f"{what} '{ident}' does not exist (neither an id nor a name)", status=404)
