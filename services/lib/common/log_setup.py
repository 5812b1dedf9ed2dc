"""How a platform process logs: what an operator needs at the default level, everything at debug.

At ``info`` (the default) the foreground log of ``maas up`` carries our services' state changes,
warnings and errors; the libraries' per-request and per-node chatter (an httpx line for each health
probe of each instance every 2 s, onnxruntime's "skip to quantize" for every node of a model, Kafka
client reconnect loops, torch's tracer warnings during an export) is raised to warnings only.
``debug`` shows it all again.
"""
from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries whose INFO lines describe their own work, not the platform's.
CHATTY_LIBRARIES = ("httpx", "httpcore", "onnxruntime", "aiokafka", "kafka", "pymongo", "urllib3", "minio",
                    "faststream", "transformers", "optimum", "torch", "ray", "filelock")


def parse_level(value: str) -> int:
    """A level name as an operator writes it (any case); ValueError naming the choices otherwise."""
    name = (value or "info").strip().lower()
    if name not in LEVELS:
        raise ValueError(f"log level {value!r} is not one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


class RepeatFilter(logging.Filter):
    """Lets a warning or error through once per ``window`` seconds per (logger, message template):
    a retry loop against a dead server (Kafka clients reconnect many times a second, the outbox relay
    retries) says so once, then how many times it repeated, not thousands of lines a minute."""

    def __init__(self, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window, self.clock = window, clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}   # key -> (last let through, held back since)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.window:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.window:.0f} s]"
        return True


def configure_logging(level: str = "info") -> None:
    """Set the root logger to ``level``, quiet the chatty libraries unless it is ``debug``, and
    collapse repeated warnings and errors (``RepeatFilter``)."""
    numeric = parse_level(level)
    logging.basicConfig(level=numeric, format=FORMAT, force=True)
    if numeric > logging.DEBUG:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RepeatFilter())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    if numeric > logging.DEBUG:
        # torch.jit.TracerWarning, matched by name: importing torch here would cost every process a second.
        warnings.filterwarnings("ignore", message=r"(Converting a tensor to a Python|torch\.tensor results are "
                                                  r"registered as constants|Iterating over a tensor)")
