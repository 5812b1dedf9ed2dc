"""The QPS limit of a service (guide 8 "流量限制"): a token bucket, in its GCRA form.

GCRA (the generic cell rate algorithm, behind many API gateways' rate limiters) keeps one number per
key: the theoretical arrival time ``tat`` of the next request if requests came exactly every
``1/qps`` seconds. A request at time ``t`` is admitted when ``tat - t <= tolerance`` (then ``tat``
moves on by ``1/qps``), otherwise refused with the wait until it would be admitted (Retry-After).
This is a token bucket refilled at ``qps`` per second holding ``qps x burst_seconds + 1`` tokens:

- a service that was idle takes ``qps`` simultaneous requests at once (a QPS limit of 10 does not
  refuse 3 requests that arrive together);
- under sustained overload exactly ``qps`` requests per second get through: a slot in which no
  request happened to arrive (arrival jitter, a busy event loop) is caught up later instead of
  being lost, which a bucket of a few requests or a strict one-second window would lose (they admit
  only 70-90% of the limit under a 2x overload of random arrivals);
- no window of T seconds ever admits more than ``qps x (T + burst_seconds) + 1``.

State lives in this process: the embedded platform runs one gateway. Several gateway processes
would each allow the full limit; they need the same algorithm as one atomic update in a shared
store (Redis, MongoDB) behind ``acquire``.
"""
from __future__ import annotations

import time
from collections.abc import Callable

_MAX_KEYS = 10_000   # past this many keys, forget those whose bucket is full again


class QpsLimiter:
    def __init__(self, *, burst_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.burst_seconds, self.clock = burst_seconds, clock
        self._tat: dict[str, float] = {}

    async def acquire(self, key: str, qps: int) -> float | None:
        """None when admitted, else the seconds until a request would be (for Retry-After)."""
        now = self.clock()
        slot = f"{key}:{qps}"     # a changed limit starts afresh (with a full bucket)
        interval = 1.0 / qps
        tolerance = self.burst_seconds
        tat = max(self._tat.get(slot, now), now)
        if tat - now > tolerance + 1e-9:   # float sums of 1/qps must not cost a request
            return tat - tolerance - now
        self._tat[slot] = tat + interval
        if len(self._tat) > _MAX_KEYS:
            self._forget_full(now)
        return None

    def _forget_full(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat < now]:
            del self._tat[key]
