"""Our uvicorn servers keep idle connections open longer than the clients that call them do.

Were it the other way round, a client could send a request on a connection just as the server closes
it, and the call would fail with a read error (it happened in CI against uvicorn's 5 s default).
"""
from __future__ import annotations

import asyncio
import socket

import httpx
import uvicorn

from services.lib.common.http import SERVER_KEEP_ALIVE_S, server_config
from services.gateway.inference.upstream import POOL_KEEP_ALIVE_S


async def _client_port(scope, receive, send):
    """An ASGI app answering with the client's port, which tells one TCP connection from another."""
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(scope["client"][1]).encode()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_connection_idle_longer_than_uvicorns_default_is_still_open():
    port = _free_port()
    server = uvicorn.Server(server_config(_client_port, host="127.0.0.1", port=port, lifespan="off",
                                          log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        limits = httpx.Limits(keepalive_expiry=SERVER_KEEP_ALIVE_S)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            first = (await client.get("/")).text
            await asyncio.sleep(uvicorn.Config(_client_port).timeout_keep_alive + 1.5)
            second = (await client.get("/")).text
        assert second == first, "the server closed the idle connection; the client had to open a new one"
    finally:
        server.should_exit = True
        await task


def test_our_clients_give_up_idle_connections_before_the_servers_do():
    assert POOL_KEEP_ALIVE_S < SERVER_KEEP_ALIVE_S
    # httpx's default, used by the openai SDK and by our CLI and tests.
    assert httpx.AsyncClient()._transport._pool._keepalive_expiry < SERVER_KEEP_ALIVE_S
