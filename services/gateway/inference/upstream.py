"""The gateway's HTTP client for model instances.

aiohttp rather than httpx on this hop: every first token waits for it, and on loopback aiohttp's
C parser takes about a quarter of httpx's CPU per streamed call (0.14 vs 0.56 ms) and half its time
to the first byte (benchmarks/bench_gateway.py measures the whole path).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from services.lib.inference.prefix_cache import CACHE_SALT_HEADER


class InstanceUnreachable(Exception):
    """The instance refused or dropped the connection before answering: another may take the call."""


class UpstreamTimeout(Exception):
    """The instance did not answer in time."""


class UpstreamBroken(Exception):
    """The instance's answer broke off mid-stream."""


class UpstreamResponse:
    """One instance answer: status, then the body read whole or as it arrives. ``release()`` once."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc

    async def blocks(self) -> AsyncIterator[bytes]:
        """Each read as it arrives (several SSE events may come in one)."""
        try:
            async for block in self._response.content.iter_any():
                yield block
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc

    def release(self) -> None:
        # A body read to its end returns the connection to the pool; one left unread closes it.
        self._response.release()


# Below the instances' SERVER_KEEP_ALIVE_S: the pool drops an idle connection before the server can.
POOL_KEEP_ALIVE_S = 30


class Upstream:
    def __init__(self, *, connect_timeout: float, read_timeout: float):
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was made in.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0, keepalive_timeout=POOL_KEEP_ALIVE_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False,
                                                  auto_decompress=False)
        return self._session

    async def post_json(self, url: str, content: bytes, *, secret: str, cache_salt: str = "") -> UpstreamResponse:
        """POST to an instance with its secret (it answers nobody else: services.lib.inference.auth);
        ``cache_salt``: the caller's account, so that accounts never share prefix-cache entries."""
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
        if cache_salt:
            headers[CACHE_SALT_HEADER] = cache_salt
        try:
            response = await self._client().post(url, data=content, headers=headers)
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise InstanceUnreachable(str(exc)) from exc
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc
        return UpstreamResponse(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
