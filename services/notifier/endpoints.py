"""Webhook endpoint rules: http(s) only, and no private addresses unless the platform allows them.

Checked when a subscription is created (so the tenant hears of a mistake at once) and, for every
connection, by services.notifier.webhook_http, which connects only to the addresses that one lookup
returned and this module allowed: a name cannot pass the check and then resolve elsewhere.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
PRIVATE_HINT = ("this platform only delivers to public addresses (an operator can allow private ones "
                "with MAAS_WEBHOOK_ALLOW_PRIVATE=true)")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 forms that carry an IPv4 address the kernel or a translator may route to, which
# ipaddress.is_global does not look inside (Python 3.11): IPv4-compatible, SIIT, local-use NAT64.
_NEVER_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EndpointRejected(ValueError):
    """The endpoint breaks a rule; the message says which."""


class HostNotFound(EndpointRejected):
    """The endpoint's host does not resolve."""


class AddressNotAllowed(EndpointRejected):
    """The endpoint's host resolves to an address this platform does not deliver to."""


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


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast, looking inside IPv6 forms that embed an IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NEVER_PUBLIC):
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
    return ip.is_global and not ip.is_multicast


def _parse(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])  # a zone ("%eth0") is not part of the address


async def allowed_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` once; its addresses, in resolver order, if every one of them is allowed.

    All must pass, not just one: the client may connect to any of them.
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise HostNotFound(f"host '{host}' cannot be resolved") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise HostNotFound(f"host '{host}' cannot be resolved")
    if not allow_private and not all(is_public(_parse(a)) for a in addresses):
        # The address itself is not named: the answer would map the platform's private network.
        raise AddressNotAllowed(f"host '{host}' resolves to a private, loopback or link-local address; "
                                + PRIVATE_HINT)
    return addresses


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None  # check_syntax ran first
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


async def check(url: str, *, allow_private: bool) -> str:
    """The endpoint, if its syntax is valid and its host resolves to allowed addresses."""
    check_syntax(url)
    host, port = _host_port(url)
    await allowed_addresses(host, port, allow_private=allow_private)
    return url
