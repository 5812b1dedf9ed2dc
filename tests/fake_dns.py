"""A test double for DNS: made-up names answer from a script, every other name resolves as usual.

It replaces ``socket.getaddrinfo``, which asyncio's resolver and every client in the process call,
so the platform under test resolves the made-up names exactly as it would real ones.
"""
from __future__ import annotations

import socket


class FakeDns:
    def __init__(self, monkeypatch, answers: dict[str, list[str]]):
        """``answers[name]``: the address of each successive lookup of ``name``; the last one repeats."""
        self.answers = answers
        self.asked: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            name = host.decode() if isinstance(host, bytes) else host
            if name not in self.answers:
                return real(host, port, family, type, proto, flags)
            self.asked.append(name)
            script = self.answers[name]
            address = script[min(self.asked.count(name), len(script)) - 1]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
