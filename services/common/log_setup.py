"""How a platform process logs: what an operator needs at the default level, everything at debug.

At ``info`` (the default) the foreground log of ``maas up`` carries our services' state changes,
warnings and errors; the libraries' per-request and per-node chatter (an httpx line for each health
probe of each instance every 2 s, onnxruntime's "skip to quantize" for every node of a model, Kafka
client reconnect loops, torch's tracer warnings during an export) is raised to warnings only.
``debug`` shows it all again.
"""
from __future__ import annotations

import logging
import warnings

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


def configure_logging(level: str = "info") -> None:
    """Set the root logger to ``level`` and quiet the chatty libraries unless it is ``debug``."""
    numeric = parse_level(level)
    logging.basicConfig(level=numeric, format=FORMAT, force=True)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    if numeric > logging.DEBUG:
        # torch.jit.TracerWarning, matched by name: importing torch here would cost every process a second.
        warnings.filterwarnings("ignore", message=r"(Converting a tensor to a Python|torch\.tensor results are "
                                                  r"registered as constants|Iterating over a tensor)")
