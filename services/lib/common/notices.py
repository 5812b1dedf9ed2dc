"""A word to API callers while their changes wait: the ``Warning`` header (RFC 9110's format,
``199 openmaas "text"``) on every console-API answer while this process's outbox relay is stalled.

With Kafka down a write still answers 201: its state is saved with its events, and the work those
events start (a validation, a job, a deployment) waits until the relay publishes them. Without a
word, a model then sits in ``creating`` as if forgotten. The CLI prints the header; the console
shows it as a banner. ``/v1`` (model calls) does not wait on events and carries no header.
"""
from __future__ import annotations

from collections.abc import Callable

from services.lib.common.outbox import Stall

HEADER = b"warning"
PREFIX = "/api/v1/"


def notice_text(stall: Stall) -> str:
    since = stall.since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f'199 openmaas "events cannot be published since {since} (the event bus, Kafka, is unavailable): '
            'changes are saved, and the work they start waits until it is back"')


class StallNotice:
    """ASGI middleware: adds the header while ``stall()`` answers a ``Stall``."""

    def __init__(self, app, *, stall: Callable[[], Stall | None]):
        self.app, self.stall = app, stall

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)

        async def send_with_notice(message):
            if message["type"] == "http.response.start":
                stall = self.stall()
                if stall is not None:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (HEADER, notice_text(stall).encode("latin-1", "replace"))]}
            await send(message)
        await self.app(scope, receive, send_with_notice)
