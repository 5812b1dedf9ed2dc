"""Data-parallel training on CPU: world_size rank processes, torch.distributed with gloo, DDP.

The calling process only coordinates: it starts the ranks, relays rank 0's callbacks (logs,
checkpoints, the stop question) over a socket pair to the caller's functions, and reports any
rank's failure with its traceback. Keeping the process group out of the caller leaves its threads,
RNG and torch.distributed state untouched, and lets a service run several trainings side by side.
The same machinery runs a single isolated process (TrainConfig.isolate) without a process group.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from services.lib.mlkit.training.config import TrainConfig, TrainResult
from services.lib.mlkit.training.data import Encoded
from services.lib.mlkit.training.loop import Comm, Hooks, RunInputs, run

_PROJECT_ROOT = Path(__file__).resolve().parents[4]     # the folder holding the `services` package


class GlooComm(Comm):
    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        # broadcast_buffers off: buffers (rotary tables) are not trained and every rank loaded the same.
        return DistributedDataParallel(module, broadcast_buffers=False, gradient_as_bucket_view=True)

    def gather_stats(self, stats: torch.Tensor) -> torch.Tensor:
        rows = [torch.empty_like(stats) for _ in range(self.world_size)]
        dist.all_gather(rows, stats)
        return torch.stack(rows)

    def agree(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def gather_objects(self, obj) -> list:
        out = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out if self.rank == 0 else []


class _PipeHooks(Hooks):
    """Rank 0's view of the caller's callbacks: messages to the coordinating process."""

    def __init__(self, conn):
        self._conn = conn
        super().__init__(on_log=self._log, on_checkpoint=self._checkpoint, should_stop=self._stop)

    def _log(self, record: dict) -> None:
        _send(self._conn, ["log", record])

    def _checkpoint(self, iteration: int, folder: Path) -> None:
        _send(self._conn, ["checkpoint", iteration, str(folder)])
        _recv(self._conn)                     # the caller's on_checkpoint has finished

    def _stop(self) -> bool:
        _send(self._conn, ["stop?"])
        return bool(_recv(self._conn))


# Everything between the coordinator and the ranks is JSON (and the samples an .npz without object
# arrays): neither side ever unpickles what the other wrote.
def _send(conn: Connection, message) -> None:
    conn.send_bytes(json.dumps(message).encode())


def _recv(conn: Connection):
    return json.loads(conn.recv_bytes())


def write_payload(folder: Path, inputs: RunInputs, **settings) -> Path:
    lengths = np.array([len(e.ids) for e in inputs.encoded], dtype=np.int64)
    np.savez(folder / "samples.npz", lengths=lengths,
             ids=np.concatenate([e.ids for e in inputs.encoded]) if inputs.encoded else np.zeros(0, np.int32),
             target=np.concatenate([e.target for e in inputs.encoded]) if inputs.encoded else np.zeros(0, bool))
    payload = folder / "payload.json"
    payload.write_text(json.dumps({
        "inputs": {"model_dir": str(inputs.model_dir), "config": dataclasses.asdict(inputs.config),
                   "output_dir": str(inputs.output_dir),
                   "resume_from": str(inputs.resume_from) if inputs.resume_from else None,
                   "fingerprint": inputs.fingerprint, "device": inputs.device},
        **settings}))
    return payload


def _read_payload(path: Path) -> tuple[RunInputs, dict]:
    payload = json.loads(path.read_text())
    with np.load(path.parent / "samples.npz", allow_pickle=False) as samples:
        bounds = np.cumsum(samples["lengths"])[:-1]
        encoded = [Encoded(ids=i, target=t) for i, t in
                   zip(np.split(samples["ids"], bounds), np.split(samples["target"], bounds))] \
            if len(samples["lengths"]) else []
    raw = payload.pop("inputs")
    inputs = RunInputs(model_dir=Path(raw["model_dir"]), encoded=encoded, config=TrainConfig(**raw["config"]),
                       output_dir=Path(raw["output_dir"]),
                       resume_from=Path(raw["resume_from"]) if raw["resume_from"] else None,
                       fingerprint=raw["fingerprint"], device=raw["device"])
    return inputs, payload


def _result_json(result: TrainResult) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}


def result_of(data: dict) -> TrainResult:
    paths = ("last_checkpoint", "final_dir")
    return TrainResult(**{k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(argv: list[str]) -> None:
    """Entry of one rank process: ``python -m services.lib.mlkit.training.rank RANK PAYLOAD [FD]``."""
    run_rank(int(argv[0]), Path(argv[1]), Connection(int(argv[2])) if len(argv) > 2 else None)


def run_rank(rank: int, payload_path: Path, conn: Connection | None) -> None:
    """One data-parallel rank, wherever it runs (a local process, a Ray task on another node); rank 0
    talks to the coordinator over ``conn``."""
    inputs, payload = _read_payload(payload_path)
    torch.set_num_threads(payload["threads"])
    master = payload.get("master") or f"127.0.0.1:{payload['port']}"
    if (master.startswith("127.") and "GLOO_SOCKET_IFNAME" not in os.environ
            and "lo" in {name for _, name in socket.if_nameindex()}):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"   # ranks talk over loopback, whatever the hostname resolves to
    world = payload["world_size"]
    hooks = _PipeHooks(conn) if rank == 0 else None
    if world == 1:            # an isolated single process: no process group needed
        result = run(inputs, comm=Comm(), hooks=hooks)
    else:
        dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=payload["timeout_s"]))
        try:
            result = run(inputs, comm=GlooComm(rank, world), hooks=hooks)
            dist.barrier()   # every rank is done before any tears gloo down under the others
        finally:
            dist.destroy_process_group()
    if conn is not None:
        _send(conn, ["done", _result_json(result)])
        conn.close()


def rank_process(argv: list[str]) -> None:
    """``rank_main`` as a process's whole life: its exit skips the interpreter's teardown, where
    gloo's threads can abort the process ("terminate called without an active exception") after
    the work is done."""
    rank_main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_distributed(inputs: RunInputs, hooks: Hooks, *, world_size: int, threads_per_rank: int,
                    timeout_s: float) -> TrainResult:
    """Start the ranks as fresh interpreters (``python -m``), so nothing of the caller's __main__,
    threads or torch state is copied or re-imported, and coordinate them until rank 0 is done."""
    with tempfile.TemporaryDirectory(prefix="maas-train-") as tmp:
        payload = write_payload(Path(tmp), inputs, threads=threads_per_rank, world_size=world_size,
                                 port=_free_port(), timeout_s=timeout_s)
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        procs: list[tuple[subprocess.Popen, Path]] = []
        try:
            for rank in range(world_size):
                err = Path(tmp) / f"rank{rank}.stderr"
                extra = [str(theirs.fileno())] if rank == 0 else []
                with open(err, "wb") as err_fh:
                    proc = subprocess.Popen([sys.executable, "-m", "services.lib.mlkit.training.rank", str(rank),
                                             str(payload), *extra], env=env, stderr=err_fh,
                                            pass_fds=[theirs.fileno()] if rank == 0 else ())
                procs.append((proc, err))
            theirs.close()           # rank 0 holds its end; ours closed makes its exit visible as EOF
            conn = Connection(ours.detach())
            try:
                result = coordinate(conn, hooks, _LocalRanks(procs))
            finally:
                conn.close()
            for proc, _ in procs:
                proc.wait(timeout=60)
            return result
        finally:
            theirs.close()
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()       # only the rank processes this call started
                    proc.wait(timeout=10)


class RankGroup(Protocol):
    """The running ranks, as the coordinator watches them."""

    def raise_if_failed(self) -> None:
        """Raise RuntimeError("training rank N failed ...") when a rank has failed."""

    def settle(self) -> None:
        """Rank 0 went silent: give a failing rank a moment to finish reporting its error."""


class _LocalRanks:
    def __init__(self, procs):
        self.procs = procs

    def raise_if_failed(self) -> None:
        _raise_rank_failure(self.procs)

    def settle(self) -> None:
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def coordinate(conn: Connection, hooks: Hooks, ranks: RankGroup) -> TrainResult:
    """Serve rank 0's callbacks until it reports its result; raise when a rank fails."""
    while True:
        ranks.raise_if_failed()
        if not conn.poll(0.05):
            continue
        try:
            kind, *args = _recv(conn)
        except (EOFError, OSError):
            ranks.settle()
            ranks.raise_if_failed()
            raise RuntimeError("training rank 0 exited without a result") from None
        if kind == "log":
            hooks.on_log(*args)
        elif kind == "checkpoint":
            iteration, folder = args
            hooks.on_checkpoint(iteration, Path(folder))
            _send(conn, True)
        elif kind == "stop?":
            _send(conn, bool(hooks.should_stop()))
        elif kind == "done":
            return result_of(args[0])


def _raise_rank_failure(procs) -> None:
    failed = [(rank, proc, err) for rank, (proc, err) in enumerate(procs) if proc.poll() not in (None, 0)]
    if not failed:
        return
    # Prefer the rank whose error is not just the broken connection to a peer that failed first.
    def tail(err: Path) -> str:
        return err.read_text(errors="replace")[-4000:] if err.is_file() else ""
    tails = [(rank, proc.returncode, tail(err)) for rank, proc, err in failed]
    rank, code, text = next((t for t in tails if "Connection closed by peer" not in t[2]), tails[0])
    raise RuntimeError(f"training rank {rank} failed (exit code {code}):\n{text}")
