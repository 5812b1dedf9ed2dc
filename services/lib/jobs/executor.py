"""Where a job's work runs, seen from the job engine.

A job kind describes its work as a ``Work``: an entry point of ours (``"package.module:function"``,
chosen by code, never by a user) and JSON arguments. An ``Executor`` runs it somewhere — a child
process here (``LocalProcessExecutor``), a cluster later — and relays what the work says while it
runs to a ``Listener``. The work talks through a ``Channel``: ``send`` for news (logs, progress),
``ask`` for questions whose answer it waits for (may I go on? is this checkpoint stored?).

Everything crossing the boundary is JSON: no side ever unpickles what the other wrote.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.lib.common.cluster import PUBLIC_POOL, Resources

# (kind, data) -> the answer for an ``ask``; ignored for a ``send``. Called from a relay thread,
# never the event loop: listeners hand work to the loop with run_coroutine_threadsafe.
Listener = Callable[[str, dict], Any]


@dataclass(frozen=True)
class Placement:
    """Where work may run: a resource pool and what it takes there (admitted by services.lib.pools)."""
    pool: str = PUBLIC_POOL
    resources: Resources = Resources(cpus=1.0)   # in all: ``nodes`` equal shares on distinct nodes
    nodes: int = 1
    # The node(s) the pool's ledger gave the run (one per share; cluster mode): the work runs there.
    node_ids: tuple[str, ...] = ()

    @property
    def per_node(self) -> Resources:
        return self.resources.share(self.nodes)


@dataclass(frozen=True)
class Work:
    entry: str                       # "services.x.y:function"; it is called as function(args, channel)
    args: dict[str, Any]             # JSON-serialisable
    workdir: Path                    # a private folder of the caller's run: the executor's own files
    env: dict[str, str] = field(default_factory=dict)   # extra environment (no credentials)
    placement: Placement = Placement()


class WorkFailed(Exception):
    """The work raised. ``kind`` is the original exception's type name; ``input_error`` says it was a
    ValueError (our code's way of saying the inputs are wrong, with a message naming the field)."""

    def __init__(self, kind: str, message: str, *, detail: str = "", input_error: bool = False):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.detail, self.input_error = kind, message, detail, input_error


class JobCancelled(Exception):
    """The job was stopped or deleted while its work ran."""


class Channel(Protocol):
    """What the work uses to talk to whoever runs it."""

    def send(self, kind: str, **data: Any) -> None: ...

    def ask(self, kind: str, **data: Any) -> Any: ...


class Executor(Protocol):
    async def run(self, work: Work, listener: Listener) -> Any:
        """Run ``work`` to its end and return what its entry returned; raises WorkFailed."""
        ...


# The two messages that end a work item, the same whatever carries them (a socket, a Ray mailbox).
NOT_OVER = object()


def error_report(exc: BaseException) -> dict[str, Any]:
    """The ``error`` message's data for an exception raised by the work (ValueError: bad inputs)."""
    return {"type": type(exc).__name__, "message": str(exc), "input_error": isinstance(exc, ValueError),
            "traceback": traceback.format_exc()}


def ending(kind: str, data: dict) -> Any:
    """The work's result for a ``done`` message; raises WorkFailed for an ``error``; NOT_OVER for
    any other message (news or a question for the listener)."""
    if kind == "done":
        return data.get("result")
    if kind == "error":
        raise WorkFailed(data["type"], data["message"], detail=data.get("traceback", ""),
                         input_error=bool(data.get("input_error")))
    return NOT_OVER


def ignore_messages(kind: str, data: dict) -> None:
    """The listener of work that asks nothing and whose news nobody reads."""
    return None


def stop_requested(channel: Channel) -> bool:
    """The usual question of long work: should it stop now (and save what it can)?"""
    return bool(channel.ask("stop?"))

