"""Small ASGI pieces shared by every HTTP service."""
from __future__ import annotations

import json

from services.lib.common.errors import error_body


class BodySizeLimit:
    """Reject bodies over ``max_bytes`` with 413 before they are read into memory.

    Upload routes (streamed to object storage) are exempt.
    """

    def __init__(self, app, *, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()):
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope, send):
        # /v1 answers OpenAI's error shape (an OpenAI SDK raises its typed error from it).
        body = json.dumps(error_body(scope["path"], 413, "payload_too_large",
                                     f"request body exceeds {self.max_bytes} bytes", field="body")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


# Idle keep-alive connections stay open this long. Clients must give up on an idle connection before the
# server closes it, or a request sent on it as it closes fails with a read error. httpx (so the openai SDK)
# and our gateway's aiohttp pool drop idle connections after 5 and 30 s; uvicorn's own default is 5 s.
SERVER_KEEP_ALIVE_S = 75


def server_config(app, *, host: str, port: int, **options):
    """The uvicorn config every HTTP server of ours runs with."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, timeout_keep_alive=SERVER_KEEP_ALIVE_S, **options)
