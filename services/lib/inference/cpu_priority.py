"""Run the engine's compute at a lower CPU priority than the threads that move its tokens.

On a machine with few cores a decode step keeps every core busy. The threads that carry a finished
token to the caller (the instance's event loop, the gateway, the client) then wait for a core
behind the next step: about 1.5 ms per token hop on 2 cores (benchmarks/README.md). Raising the
niceness of the compute threads alone (the scheduler thread, which joins onnxruntime's work, and
onnxruntime's own pool) lets those short wake-ups preempt the step. They use little CPU, so
decode speed is unchanged.

Linux only: there niceness belongs to a thread, and threads inherit it from the thread that
creates them, so building the onnxruntime sessions on a lowered thread lowers their pools too.
Elsewhere ``setpriority`` would renice the whole process, so nothing is done.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Enough for the scheduler to prefer a waking event loop over a compute thread at once, little
# enough that the compute still gets the cores whenever nothing else wants them.
DEFAULT_COMPUTE_NICENESS = 5


_PER_THREAD = sys.platform.startswith("linux")


def lower_this_thread(by: int) -> None:
    """Raise the calling thread's niceness by ``by`` (never lowers it: that needs privileges)."""
    if by <= 0 or not _PER_THREAD:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as exc:  # a sandbox without setpriority: run at the normal priority
        log.warning("could not lower the compute threads' CPU priority: %s", exc)


def on_lowered_thread(build: Callable[[], T], *, by: int) -> T:
    """``build()`` on a fresh thread whose niceness is raised by ``by``; its result or its error.

    Threads ``build`` starts (onnxruntime's intra-op pool) inherit that niceness and outlive it.
    """
    if by <= 0 or not _PER_THREAD:
        return build()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference-build",
                            initializer=lower_this_thread, initargs=(by,)) as pool:
        return pool.submit(build).result()
