"""A backing server is unavailable: which one, from the exception its client raised.

While MongoDB or S3 is down their clients raise connection errors (after the bounded waits set in
services/lib/common/mongo.py and objectstore.py). The API answers those with 503 and Retry-After
(services/lib/common/errors.py) rather than a 500: the request was fine, the platform cannot serve it now.
"""
from __future__ import annotations

import logging
import time

from pymongo.errors import ConnectionFailure
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

log = logging.getLogger(__name__)

MONGODB, OBJECT_STORE, DISK = "mongodb", "object_store", "disk"
LABELS = {MONGODB: "MongoDB", OBJECT_STORE: "object storage (S3)"}

# ConnectionFailure covers ServerSelectionTimeoutError, AutoReconnect and NetworkTimeout; minio
# raises urllib3's errors once its retries are spent (MaxRetryError), or one of them mid-transfer.
_BY_DEPENDENCY: tuple[tuple[str, tuple[type[BaseException], ...]], ...] = (
    (MONGODB, (ConnectionFailure,)),
    (OBJECT_STORE, (MaxRetryError, NewConnectionError, ProtocolError, Urllib3Timeout)),
)
ERRORS: tuple[type[BaseException], ...] = tuple(cls for _, classes in _BY_DEPENDENCY for cls in classes)

def dependency_of(exc: BaseException) -> str | None:
    """``mongodb`` or ``object_store`` when ``exc`` (or what it was raised from) says that server is unreachable."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for name, classes in _BY_DEPENDENCY:
            if isinstance(current, classes):
                return name
        current = current.__cause__   # only an explicit 'raise ... from': not any error in an except block
    return None


def message(dependency: str) -> str:
    return f"{LABELS.get(dependency, dependency)} is unavailable right now; try again shortly"


class OutageLog:
    """Logs that calls fail on a dependency at most once a minute per dependency, not once per call."""

    def __init__(self, *, every_s: float = 60.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def note(self, dependency: str, exc: BaseException, *, path: str, detail: str = "") -> None:
        now = time.monotonic()
        if now - self._last.get(dependency, -self.every_s) >= self.every_s:
            self._last[dependency] = now
            if dependency == DISK:
                log.warning("the disk is full: %s; calls that fail on storage answer 507 (first call: %s, "
                            "%s: %s; logged once a minute)", detail, path, type(exc).__name__, str(exc)[:300])
                return
            log.warning("%s unavailable (%s: %s); answering 503 (first call: %s; logged once a minute)",
                        LABELS.get(dependency, dependency), type(exc).__name__, str(exc)[:300], path)
