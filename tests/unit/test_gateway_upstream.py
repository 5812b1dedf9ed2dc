"""The gateway's client for instances, against real sockets that misbehave."""
from __future__ import annotations

import asyncio
import socket

import pytest

from services.gateway.inference.upstream import InstanceUnreachable, Upstream, UpstreamBroken, UpstreamTimeout

SECRET = "instance-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _server(answer, heads: list[bytes] | None = None):
    """A one-trick HTTP server: reads each request's head (kept in ``heads``) and body, then runs ``answer(writer)``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        while not writer.is_closing():
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:   # the client closed the connection
                return
            if heads is not None:
                heads.append(head)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            await answer(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def upstreams():
    """Make Upstream clients; all are closed after the test."""
    made: list[Upstream] = []

    def make(read_timeout: float = 5.0) -> Upstream:
        made.append(Upstream(connect_timeout=1, read_timeout=read_timeout))
        return made[-1]

    yield make
    for upstream in made:
        await upstream.close()


async def test_a_streamed_answer_arrives_in_reads_and_the_connection_is_reused(upstreams):
    connections = []

    async def answer(writer):
        connections.append(writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in (b"data: 1\n\n", b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    server, url = await _server(answer)
    upstream = upstreams()
    response = await upstream.post_json(f"{url}/v1/chat/completions", b'{"a": 1}', secret=SECRET)
    assert response.status == 200
    assert b"".join([b async for b in response.blocks()]) == b"data: 1\n\ndata: [DONE]\n\n"
    response.release()
    second = await upstream.post_json(f"{url}/v1/chat/completions", b"{}", secret=SECRET)
    assert await second.read() == b"data: 1\n\ndata: [DONE]\n\n"
    second.release()
    assert len({id(w) for w in connections}) == 1   # keep-alive: one connection served both
    server.close()


async def test_every_call_carries_the_instances_secret(upstreams):
    async def answer(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    heads: list[bytes] = []
    server, url = await _server(answer, heads)
    response = await upstreams().post_json(f"{url}/v1/chat/completions", b"{}", secret=SECRET)
    assert await response.read() == b"{}"
    response.release()
    fields = dict(line.split(b": ", 1) for line in heads[0].split(b"\r\n")[1:] if line)
    assert {k.lower(): v for k, v in fields.items()}[b"authorization"] == f"Bearer {SECRET}".encode()
    server.close()


async def test_a_refused_connection_is_unreachable(upstreams):
    with pytest.raises(InstanceUnreachable):
        await upstreams().post_json(f"http://127.0.0.1:{_free_port()}/v1/chat/completions", b"{}", secret=SECRET)


async def test_an_answer_cut_off_mid_stream_is_broken(upstreams):
    async def answer(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _server(answer)
    response = await upstreams().post_json(f"{url}/v1/chat/completions", b"{}", secret=SECRET)
    received = []
    with pytest.raises(UpstreamBroken):
        async for block in response.blocks():
            received.append(block)
    assert b"".join(received) == b"data: 1\n\n"
    response.release()
    server.close()


async def test_a_silent_instance_times_out(upstreams):
    async def answer(writer):
        await asyncio.sleep(5)

    server, url = await _server(answer)
    with pytest.raises(UpstreamTimeout):
        await upstreams(read_timeout=0.2).post_json(f"{url}/v1/chat/completions", b"{}", secret=SECRET)
    server.close()
