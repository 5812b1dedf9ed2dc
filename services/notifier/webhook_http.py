"""HTTP to webhook receivers that connects only to addresses it checked, in the same DNS lookup.

Checking a name and then letting an HTTP client resolve it again is open to DNS rebinding: the
second answer can be 127.0.0.1. Here the connection itself resolves the host once, refuses it unless
every address is allowed (services.notifier.endpoints), and connects to exactly those addresses. The
URL's name still goes into the Host header and into TLS (SNI and the certificate check), because
httpcore hands the network backend the name and only the backend turns it into an address.
"""
from __future__ import annotations

import asyncio
import typing

import httpcore
import httpx

from services.notifier.endpoints import AddressNotAllowed, EndpointRejected, allowed_addresses


class ConnectionFailed(Exception):
    """The receiver gave no HTTP response (refused, unreachable, timed out, TLS or protocol error)."""


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, behind the endpoint rules, for every connection it opens."""

    def __init__(self, *, settings, inner: httpcore.AsyncNetworkBackend | None = None):
        # Settings, not a copied flag: the operator's choice is read at each connection.
        self.settings = settings
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await allowed_addresses(host, port, allow_private=self.settings.webhook_allow_private)
        failure: Exception | None = None
        for address in addresses:  # the checked addresses, never the name again
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # allowed_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise AddressNotAllowed("webhooks are delivered over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class WebhookHttp:
    """POSTs to receivers: no proxies from the environment, no redirects, the response body unread."""

    def __init__(self, *, settings):
        self.settings = settings
        # Receivers are other people's servers, often closing idle connections after 5 s (uvicorn,
        # Node) or 2 s (gunicorn). Reusing one as it closes costs a failed attempt and a backoff, so
        # idle ones go after 1 s.
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=GuardedNetworkBackend(settings=settings), max_connections=100,
            max_keepalive_connections=20, keepalive_expiry=1.0)

    async def __aenter__(self) -> WebhookHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pool.aclose()

    async def post(self, url: str, *, body: bytes, headers: dict[str, str]) -> int:
        """The receiver's HTTP status code.

        Raises EndpointRejected (a subclass says which rule) or ConnectionFailed. Both carry the
        detail for the platform's log; what a tenant is shown must not (see delivery.py).
        """
        try:
            target = httpx.URL(url)  # IDNA-encodes the name, brackets IPv6 in the Host header
        except httpx.InvalidURL as exc:
            raise EndpointRejected(f"is not a valid URL ({exc})") from None
        request_url = httpcore.URL(scheme=target.raw_scheme, host=target.raw_host, port=target.port,
                                   target=target.raw_path)
        sent = [(b"Host", target.netloc)] + [(k.encode(), v.encode()) for k, v in headers.items()]
        seconds = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(seconds):  # the whole exchange, not each phase
                async with self._pool.stream("POST", request_url, headers=sent, content=body, extensions={
                        "timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}},
                ) as response:
                    return response.status
        except EndpointRejected:
            raise
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol, TimeoutError, OSError) as exc:
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc
