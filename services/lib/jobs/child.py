"""The child end of ``LocalProcessExecutor``: ``python -m services.lib.jobs.child FD PACKAGE [--reuse]``.

Receives work over the inherited socket (JSON), calls its entry with a channel on that socket and
reports ``done`` or ``error``; with ``--reuse`` it then waits for the next work item, otherwise it
exits. Only functions inside PACKAGE (``services`` in the product) can be named; nothing is unpickled.
"""
from __future__ import annotations

import importlib
import json
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from services.lib.jobs.executor import error_report
from services.lib.jobs.local_process import encode

class SocketChannel:
    def __init__(self, conn: Connection):
        self.conn = conn

    def send(self, kind: str, **data: Any) -> None:
        self.conn.send_bytes(encode({"kind": kind, "data": data}))

    def ask(self, kind: str, **data: Any) -> Any:
        self.conn.send_bytes(encode({"kind": kind, "data": data, "ask": True}))
        return json.loads(self.conn.recv_bytes())["answer"]


def resolve(entry: str, package: str = "services"):
    """The function an entry ("services.x.y:function") names; only functions of ``package``."""
    module, _, name = entry.partition(":")
    if not module.startswith(package + ".") or not name:
        raise ValueError(f"entry: '{entry}' is not a function of the {package} package")
    return getattr(importlib.import_module(module), name)


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child still stops at its next message to the closed socket


def serve_one(channel: SocketChannel, package: str) -> None:
    work = json.loads(channel.conn.recv_bytes())["work"]
    try:
        result = resolve(work["entry"], package)(work["args"], channel)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        raise
    except Exception as exc:   # reported to the parent, which raises it as WorkFailed
        channel.send("error", **error_report(exc))
        return
    channel.send("done", result=result)


def main(argv: list[str]) -> int:
    _die_with_parent()
    channel = SocketChannel(Connection(int(argv[0])))
    package, reuse = argv[1], "--reuse" in argv[2:]
    try:
        while True:
            serve_one(channel, package)
            if not reuse:
                return 0
    except (BrokenPipeError, EOFError, ConnectionResetError, OSError):
        return 0 if reuse else 1   # the parent closed the socket (done with us) or is gone
    except BaseException as exc:   # e.g. MemoryError while reporting: say what we can, exit non-zero
        try:
            channel.send("error", **{**error_report(exc), "input_error": False})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
