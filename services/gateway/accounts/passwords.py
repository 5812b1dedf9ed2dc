"""Password hashes (scrypt), computed off the event loop.

scrypt takes tens of milliseconds of CPU on purpose; run on the event loop it would stall every
other request meanwhile, so the async helpers run it in a worker thread. A login for a username that
does not exist is checked against ``UNKNOWN_USER_HASH`` (a hash of a random password nobody knows),
so it costs the same as a wrong password and the answer time does not tell which usernames exist.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

# scrypt of a random password that was thrown away, with the same parameters as every user's hash.
UNKNOWN_USER_HASH = ("scrypt$b9f8ab3670448f45ca0e5128882443bb$504ca63f8efcdeb8bbc4024b2b282e7f9ac5cc94174f53fecf"
                     "1f40a535dba93400d6745bc84d76814af6cbb451b278a213f568afcab1f4dcf325c15e0e0de87b")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, salt_hex, _ = stored.split("$")
    return hmac.compare_digest(hash_password(password, salt=bytes.fromhex(salt_hex)), stored)


def password_matches(password: str, stored: str | None) -> bool:
    """``stored`` None (no such user): one scrypt all the same, and False."""
    matches = verify_password(password, stored if stored is not None else UNKNOWN_USER_HASH)
    return matches and stored is not None


async def hash_password_off_loop(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def password_matches_off_loop(password: str, stored: str | None) -> bool:
    return await asyncio.to_thread(password_matches, password, stored)
