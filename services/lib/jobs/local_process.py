"""Run a job's work in a child process of this machine and relay what it says.

Why a process and not a thread: the worker's event loop (Kafka heartbeats, lease renewal, log
flushing, and in embedded mode every other service's HTTP and consumers) would otherwise share the
GIL with model code; a busy loop misses its consumer-group heartbeats and every service stalls.
A child also takes a crash (OOM, a native abort) without taking the service down, runs without the
platform's credentials (``child_env``), and returns its memory when it ends.

Protocol over a socket pair, JSON both ways (``services.lib.jobs.child`` is the other end): the parent
sends ``{"work": {"entry", "args"}}``; the child sends ``{"kind", "data", "ask"}`` messages and, for
an ``ask``, waits for ``{"answer"}``; a work item ends with ``done`` (the entry's return value) or
``error``. With ``reuse_processes`` a child that finished its work waits for the next one (short
work such as weight validation then skips the seconds of importing torch and transformers);
otherwise it exits. A child dies with its parent (Linux parent-death signal, otherwise at its next
message to a closed socket).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from services.lib.common.child_env import child_env
from services.lib.common.private_files import private_dir
from services.lib.jobs.executor import NOT_OVER, Listener, Work, WorkFailed, ending

_PROJECT_ROOT = Path(__file__).resolve().parents[3]   # the folder holding the `services` package
_POLL_SECONDS = 0.5


def encode(message: dict) -> bytes:
    return json.dumps(message, default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot cross to or from a job process (JSON only)")


@dataclass
class _Child:
    proc: subprocess.Popen
    conn: Connection
    stderr_path: Path
    works_done: int = 0


class LocalProcessExecutor:
    """Runs each work item in a child process; a relay thread serves the child's messages.

    ``reuse_processes``: keep up to ``max_idle`` finished children for the next work item, each for
    at most ``max_works_per_process`` items (what a model leaves behind in a process is returned when
    it is recycled). ``entry_package``: the only package whose functions a child will call.
    """

    def __init__(self, *, max_concurrent: int = 4, reuse_processes: bool = False, max_idle: int = 1,
                 max_works_per_process: int = 20, entry_package: str = "services", python: str = sys.executable,
                 kill_grace_seconds: float = 30):
        self.reuse_processes, self.max_idle, self.entry_package = reuse_processes, max_idle, entry_package
        self.max_works_per_process = max_works_per_process
        self.python, self.kill_grace_seconds = python, kill_grace_seconds
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._logs_dir: Path | None = None
        # Relaying hour-long work gets threads of its own: the default pool serves short I/O calls.
        self._threads = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="job-relay")

    async def run(self, work: Work, listener: Listener) -> Any:
        abandon = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, lambda: self.run_blocking(work, listener, abandon=abandon))
        except asyncio.CancelledError:
            abandon.set()   # the relay thread kills the child at its next poll
            raise

    def run_blocking(self, work: Work, listener: Listener, *, abandon: threading.Event | None = None) -> Any:
        child = self._take_idle() or self._start(work)
        reusable = False
        try:
            child.conn.send_bytes(encode({"work": {"entry": work.entry, "args": work.args}}))
            try:
                result = self._relay(child, listener, abandon or threading.Event())
            except WorkFailed as failed:
                reusable = failed.kind not in ("ProcessExited", "Abandoned")
                raise
            reusable = True
            return result
        finally:
            child.works_done += 1
            if not (reusable and self._keep(child)):
                self._stop(child)

    def close(self) -> None:
        """Stop the idle children (each exits when its socket closes); running work is not waited for."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            self._stop(child)

    # -- children -------------------------------------------------------------------------------

    def _start(self, work: Work) -> _Child:
        if self.reuse_processes:    # the child outlives this work's folder: its stderr lives in ours
            err = tempfile.NamedTemporaryFile(dir=self._own_logs_dir(), prefix="child-", suffix=".log", delete=False)
        else:
            err = open(private_dir(work.workdir) / "stderr.log", "wb")
        stderr_path = Path(err.name)
        ours, theirs = socket.socketpair()
        env = child_env({**work.env, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))})
        args = [self.python, "-m", "services.lib.jobs.child", str(theirs.fileno()), self.entry_package]
        if self.reuse_processes:
            args.append("--reuse")
        with err:
            proc = subprocess.Popen(args, env=env, stderr=err, pass_fds=[theirs.fileno()], umask=0o077)
        theirs.close()
        return _Child(proc=proc, conn=Connection(ours.detach()), stderr_path=stderr_path)

    def _own_logs_dir(self) -> Path:
        with self._lock:
            if self._logs_dir is None:
                self._logs_dir = private_dir(tempfile.mkdtemp(prefix="maas-job-processes-"))
            return self._logs_dir

    def _take_idle(self) -> _Child | None:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.proc.poll() is None:
                    return child
        return None

    def _keep(self, child: _Child) -> bool:
        if not self.reuse_processes or child.works_done >= self.max_works_per_process:
            return False
        with self._lock:
            if len(self._idle) >= self.max_idle:
                return False
            self._idle.append(child)
            return True

    def _stop(self, child: _Child) -> None:
        child.conn.close()          # a waiting child reads EOF and exits
        if child.proc.poll() is not None:
            return
        try:
            child.proc.wait(timeout=self.kill_grace_seconds)
        except subprocess.TimeoutExpired:
            child.proc.kill()       # only a child this executor started
            child.proc.wait(timeout=10)

    # -- one work item --------------------------------------------------------------------------

    def _relay(self, child: _Child, listener: Listener, abandon: threading.Event) -> Any:
        conn, proc = child.conn, child.proc
        while True:
            if abandon.is_set():
                proc.kill()
                raise WorkFailed("Abandoned", "the caller stopped waiting for the work")
            if not conn.poll(_POLL_SECONDS):
                if proc.poll() is not None:
                    raise self._exited(child)
                continue
            try:
                message = json.loads(conn.recv_bytes())
            except (EOFError, OSError):
                proc.wait(timeout=self.kill_grace_seconds)
                raise self._exited(child) from None
            kind, data = message["kind"], message.get("data") or {}
            if (result := ending(kind, data)) is not NOT_OVER:
                return result
            answer = listener(kind, data)
            if message.get("ask"):
                conn.send_bytes(encode({"answer": answer}))

    def _exited(self, child: _Child) -> WorkFailed:
        return WorkFailed("ProcessExited", f"the job process exited with code {child.proc.returncode}",
                          detail=_tail(child.stderr_path))


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""
