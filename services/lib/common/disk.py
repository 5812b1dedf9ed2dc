"""Is the platform's disk full? The free space of the folders it writes to, watched.

Neither embedded server says "disk full": on ENOSPC SecantusDB answers ``InternalError`` and the S3
server a 500, which alone would read as an outage or a bug of ours. So when a call fails that way
while a watched folder is short of space, the API answers 507 ``insufficient_storage`` instead
(services/lib/common/errors.py), and ``/healthz`` reports the disk (services/lib/common/health.py).
The folders: ``work_dir`` (job work, uploads) and ``data_dir`` (the embedded servers' data, set by
``maas up``); with external servers (compose, Kubernetes) their own disks are theirs to watch.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from services.lib.common.settings import Settings


@dataclass(frozen=True)
class LowDisk:
    path: str
    free_bytes: int
    min_free_bytes: int

    def describe(self) -> str:
        """For the operator (the log, /healthz): names the folder."""
        return f"{_mib(self.free_bytes)} free in {self.path} (the platform keeps {_mib(self.min_free_bytes)} free)"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


USER_MESSAGE = ("the platform's disk is full, so this could not be saved; nothing else was changed. "
                "The operator has been told; try again once space is freed")


class DiskWatch:
    """``low()``: the first watched folder with less than ``min_free_bytes`` free, or None; read at
    most once a ``cache_seconds`` (one ``statvfs`` per folder)."""

    def __init__(self, paths: list[str], *, min_free_bytes: int, cache_seconds: float = 1.0):
        self.paths = [p for p in dict.fromkeys(paths) if p]
        self.min_free_bytes, self.cache_seconds = min_free_bytes, cache_seconds
        self._read: tuple[float, LowDisk | None] | None = None

    @classmethod
    def of(cls, settings: Settings) -> "DiskWatch":
        return cls([settings.data_dir, settings.work_dir], min_free_bytes=settings.min_free_disk_bytes)

    @property
    def watching(self) -> bool:
        return bool(self.paths)

    def low(self) -> LowDisk | None:
        read = self._read
        if read is not None and time.monotonic() - read[0] < self.cache_seconds:
            return read[1]
        found = None
        for path in self.paths:
            try:
                stat = os.statvfs(path)
            except OSError:   # not there (yet): nothing to say about it
                continue
            free = stat.f_bavail * stat.f_frsize
            if free < self.min_free_bytes:
                found = LowDisk(path, free, self.min_free_bytes)
                break
        self._read = (time.monotonic(), found)
        return found
