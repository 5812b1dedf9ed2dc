"""Automatic prefix caching: the KV cache of prompts seen before, reused by prompts that start alike.

Chat requests repeat themselves: the same system prompt on every call, and each turn of a
conversation resends all earlier turns. Their keys and values do not depend on what follows them
(causal attention), so a prompt that starts with a cached prefix only prefills the rest.

As vLLM's automatic prefix caching: the tokens are cut into blocks of ``block_size``; a block is
known by a digest of its tokens chained to its parent's digest, so a block matches only after the
same whole prefix. Each block holds the keys and values of its positions in every layer, one array
(2 x layers, kv_heads, block_size, head_dim) in the backend's order (key, value of layer 0, ...).
Memory is bounded by ``capacity_bytes``: the least recently used block that no cached block
continues (a leaf) goes first, so a kept block is always reachable from the root.

Accounts never share entries: a request's ``salt`` (the gateway sends the caller's account:
``CACHE_SALT_HEADER``) starts its chain of digests, as vLLM's ``cache_salt`` does. A preset service
serves every account from one instance; shared entries would let one account learn, from
``cached_tokens`` or from the time to the first token, what another one's prompts begin with.

Used from the engine's scheduler thread only; the counters are read by other threads (plain ints).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_PREFIX_CACHE_BYTES = 1 << 30   # 1 GiB: ~23k tokens of SmolLM2-135M (fp32), ~2.7k of a 1.7B model
DEFAULT_BLOCK_SIZE = 16               # vLLM's default block size
CACHE_SALT_HEADER = "X-OpenMaaS-Cache-Salt"   # gateway -> instance: whose cache entries a request may use


@dataclass
class _Block:
    parent: bytes | None
    kv: np.ndarray
    children: int = 0


class PrefixCache:
    def __init__(self, *, capacity_bytes: int = DEFAULT_PREFIX_CACHE_BYTES, block_size: int = DEFAULT_BLOCK_SIZE):
        if capacity_bytes < 0:
            raise ValueError(f"prefix cache capacity must be >= 0 bytes (0 disables it), got {capacity_bytes}")
        if block_size < 1:
            raise ValueError(f"prefix cache block size must be >= 1 token, got {block_size}")
        self.capacity_bytes, self.block_size = capacity_bytes, block_size
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()   # least recently used first
        self.bytes = 0
        self.queries = 0     # prompt tokens looked up (vLLM's prefix_cache_queries)
        self.hits = 0        # of them found in the cache (prefix_cache_hits)

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    @property
    def blocks(self) -> int:
        return len(self._blocks)

    def _keys(self, tokens: np.ndarray, n_blocks: int, salt: str):
        """Digests of the first ``n_blocks`` blocks, each chained to the one before (the first to the salt)."""
        key = hashlib.blake2b(salt.encode(), digest_size=16).digest() if salt else b""
        ids = np.asarray(tokens, dtype=np.int64)
        for i in range(n_blocks):
            key = hashlib.blake2b(key + ids[i * self.block_size:(i + 1) * self.block_size].tobytes(),
                                  digest_size=16).digest()
            yield key

    def _touch(self, chain: list[bytes]) -> None:
        for key in chain:   # root first, so the leaf ends up the most recent
            self._blocks.move_to_end(key)

    def match(self, tokens, *, salt: str = "") -> tuple[int, np.ndarray | None]:
        """The longest cached block-aligned prefix of ``tokens`` that leaves at least one token to run
        (its logits are the answer's first): (its length, its keys and values
        (2 x layers, kv_heads, length, head_dim)), or (0, None). Counts the lookup."""
        if not self.enabled:
            return 0, None
        self.queries += len(tokens)
        chain = []
        for key in self._keys(tokens, (len(tokens) - 1) // self.block_size, salt):
            if key not in self._blocks:
                break
            chain.append(key)
        if not chain:
            return 0, None
        self._touch(chain)
        n = len(chain) * self.block_size
        self.hits += n
        return n, np.concatenate([self._blocks[k].kv for k in chain], axis=2)

    def insert(self, tokens, length: int, read: Callable[[int, int], np.ndarray], *, salt: str = "") -> None:
        """Cache the whole blocks of ``tokens[:length]``; ``read(start, end)`` gives the keys and values of
        those positions (2 x layers, kv_heads, end - start, head_dim), asked only for blocks not cached."""
        if not self.enabled:
            return
        keys = list(self._keys(tokens, min(length, len(tokens)) // self.block_size, salt))
        have = next((i for i, k in enumerate(keys) if k not in self._blocks), len(keys))
        self._touch(keys[:have])
        if have == len(keys):
            return
        kv = read(have * self.block_size, len(keys) * self.block_size)
        parent = keys[have - 1] if have else None
        for i in range(have, len(keys)):
            key = keys[i]
            if key in self._blocks:   # a block kept while an earlier one of its chain was evicted: unreachable
                self._evict(key)
            start = (i - have) * self.block_size
            block = _Block(parent, np.ascontiguousarray(kv[:, :, start:start + self.block_size]))
            if block.kv.nbytes > self.capacity_bytes:
                return
            self._blocks[key] = block
            self.bytes += block.kv.nbytes
            if parent is not None:
                self._blocks[parent].children += 1
            self._shrink(keep=key)
            if key not in self._blocks:   # no room even for this one: the rest would be unreachable
                return
            parent = key

    def _shrink(self, *, keep: bytes) -> None:
        """Evict least recently used leaves until within capacity (``keep`` and its chain last)."""
        while self.bytes > self.capacity_bytes:
            victim = next((k for k, b in self._blocks.items() if b.children == 0 and k != keep), None)
            if victim is None:
                victim = keep
            self._evict(victim)
            if victim == keep:
                return

    def _evict(self, key: bytes) -> None:
        block = self._blocks.pop(key)
        self.bytes -= block.kv.nbytes
        if block.parent is not None and block.parent in self._blocks:
            self._blocks[block.parent].children -= 1
        # Its descendants (only when an inner block goes: see insert) become unreachable: drop them too.
        if block.children:
            for k in [k for k, b in self._blocks.items() if b.parent == key]:
                self._evict(k)

    def clear(self) -> None:
        self._blocks.clear()
        self.bytes = 0
