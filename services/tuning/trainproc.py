"""Run ``services.mlkit.training.train`` in a child process and relay its callbacks.

Why a process and not a thread: the worker's event loop (Kafka, heartbeats, log flushing, and in
embedded mode every other service's HTTP and consumers) would otherwise share the GIL with the
training loop; on small models every handoff stalls a step. A child also takes a training crash
(OOM, a native abort) without taking the service down, and returns its memory when it ends.

Protocol over a socket pair (``multiprocessing.connection``): the child sends ``("log", record)``,
``("checkpoint", iteration, folder)`` (and waits for the parent's ack, so the folder is uploaded
before training goes on), ``("stop?",)`` (waits for the answer), then ``("done", result)`` or
``("error", kind, message, is_value_error, traceback)``. The child dies with its parent: Linux
parent-death signal, and otherwise at its next message to a closed socket.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from services.common.child_env import child_env
from services.common.private_files import private_dir

_PROJECT_ROOT = Path(__file__).resolve().parents[2]   # the folder holding the `services` package


class TrainingFailed(Exception):
    """The child's training raised; ``kind`` is the original exception type's name."""

    def __init__(self, kind: str, message: str, detail: str = ""):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.detail = kind, message, detail


def run_training(*, payload: dict, work: Path, on_log: Callable[[dict], None],
                 on_checkpoint: Callable[[int, Path], None], should_stop: Callable[[], bool]):
    """Blocking: start the child, serve its callbacks until it is done; its TrainResult.

    ``payload`` holds train()'s data arguments (model_dir, examples, config, output_dir, resume_from).
    ValueError from the trainer (bad inputs) is raised as ValueError; anything else as TrainingFailed.
    """
    # Pickle is safe here only because this process writes the payload into a folder no one else
    # can enter (0700); nothing a tenant writes is ever read back through it.
    private_dir(work)
    payload_file = work / "train-payload.pkl"
    payload_file.write_bytes(pickle.dumps(payload))
    stderr_file = work / "train-stderr.log"
    ours, theirs = socket.socketpair()
    # The child trains on user data and never touches storage: it gets no platform credentials.
    env = child_env({"PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))})
    with open(stderr_file, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "services.tuning.trainproc", str(payload_file),
                                 str(theirs.fileno())], env=env, stderr=err, pass_fds=[theirs.fileno()])
    theirs.close()
    conn = Connection(ours.detach())
    try:
        while True:
            if not conn.poll(0.5):
                if proc.poll() is not None:
                    raise TrainingFailed("ProcessExited", f"the training process exited with code {proc.returncode}",
                                         _tail(stderr_file))
                continue
            try:
                kind, *args = conn.recv()
            except EOFError:
                proc.wait(timeout=30)
                raise TrainingFailed("ProcessExited", f"the training process exited with code {proc.returncode}",
                                     _tail(stderr_file)) from None
            if kind == "log":
                on_log(*args)
            elif kind == "checkpoint":
                on_checkpoint(*args)
                conn.send(True)
            elif kind == "stop?":
                conn.send(bool(should_stop()))
            elif kind == "done":
                return args[0]
            elif kind == "error":
                name, message, is_value_error, detail = args
                if is_value_error:
                    raise ValueError(message)
                raise TrainingFailed(name, message, detail)
    finally:
        conn.close()
        if proc.poll() is None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()            # only the child this call started
                proc.wait(timeout=10)


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child still stops at its next message to the closed socket


def child_main(argv: list[str]) -> int:
    _die_with_parent()
    payload = pickle.loads(Path(argv[0]).read_bytes())   # written by our parent, owner-only (run_training)
    conn = Connection(int(argv[1]))

    def on_log(record: dict) -> None:
        conn.send(("log", record))

    def on_checkpoint(iteration: int, folder: Path) -> None:
        conn.send(("checkpoint", iteration, folder))
        conn.recv()

    def should_stop() -> bool:
        conn.send(("stop?",))
        return bool(conn.recv())

    from services.mlkit.training import train

    try:
        result = train(**payload, on_log=on_log, on_checkpoint=on_checkpoint, should_stop=should_stop)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return 1   # the parent is gone
    except BaseException as exc:   # report everything, then exit non-zero
        try:
            conn.send(("error", type(exc).__name__, str(exc), isinstance(exc, ValueError), traceback.format_exc()))
        except OSError:
            pass
        return 1
    conn.send(("done", result))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
