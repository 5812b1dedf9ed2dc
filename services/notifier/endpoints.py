"""Webhook endpoint rules: http(s) only, and no private addresses unless the platform allows them.

Checked when a subscription is created and again before every delivery (a name can start resolving
to another address later).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class EndpointRejected(ValueError):
    """The endpoint breaks a rule; the message says which."""


def check_syntax(url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise EndpointRejected(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointRejected(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointRejected("must be an http:// or https:// URL")
    if not parts.hostname:
        raise EndpointRejected("must name a host")
    if parts.username or parts.password:
        raise EndpointRejected("must not carry credentials; authenticate receivers by the signature")
    del port
    return url


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def resolve(url: str) -> list[str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise EndpointRejected(f"host '{parts.hostname}' cannot be resolved") from None
    return sorted({info[4][0] for info in infos})


async def check_address(url: str, *, allow_private: bool) -> None:
    """Reject hosts that resolve to private, loopback, link-local or otherwise non-public addresses."""
    addresses = await resolve(url)
    if allow_private:
        return
    for address in addresses:
        if _not_public(ipaddress.ip_address(address.split("%", 1)[0])):
            raise EndpointRejected(
                f"resolves to {address}, a private, loopback or link-local address; this platform only "
                "delivers to public addresses (an operator can allow private ones with MAAS_WEBHOOK_ALLOW_PRIVATE)")


async def check(url: str, *, allow_private: bool) -> str:
    check_syntax(url)
    await check_address(url, allow_private=allow_private)
    return url
