#!/usr/bin/env python
"""Event-pipeline benchmark: end-to-end latency of the platform and FastStream/aiokafka throughput.

    python benchmarks/bench_event_pipeline.py [--quick] [--models N] [--messages M]

Starts its own embedded servers (Tansu Kafka on nanio S3, SecantusDB, nanio) in a temporary folder
and stops them at the end. Two parts:

1. **Pipeline latency.** The whole platform runs in this process (``build_app`` + uvicorn on a free
   port, as in ``tests/integration/conftest.py``). N models are created one after another from an
   uploaded tiny model, first with ``validate_weights=false``, then with validation on. For each,
   the clock runs from ``POST /api/v1/models`` returning to the ``ModelVersionStatusChanged``
   event being received by a separate aiokafka consumer on the registry topic (no HTTP polling).
   The outbox documents (``created_at``/``published_at``) and a timing wrapper around each event
   handler split that time into stages (relay, Kafka delivery, handler). "State committed" is when
   the registry handler committed the version's new status (the outbox ``created_at`` of the
   status event, written in the same transaction just before the commit).

2. **Kafka throughput.** M JSON messages of ~1 KB, published and consumed with raw aiokafka and
   with FastStream on the same broker in the same run, each measurement on a fresh topic (3
   partitions, as the platform creates them). Figures are msgs/s and FastStream/aiokafka ratios.
   The platform is stopped before this part so it does not compete for the CPU.

Prints rich tables and, as the very last line, one JSON object with every figure (for CI logs).
Nothing is asserted: this reports, it does not pass or fail.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform as _platform
import re
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# Tables and progress go to stderr; stdout carries only the JSON line. Wide enough for CI logs.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
PARTITIONS = 3
MSG_BYTES = 1024


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(pct(values, 50), 1), "p99": round(pct(values, 99), 1),
            "max": round(max(values), 1) if values else float("nan"),
            "mean": round(statistics.fmean(values), 1) if values else float("nan")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class LogTally(logging.Handler):
    """Counts client warnings/errors (normalised) instead of printing each; summarised at the end."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.name}: " + re.sub(r"\d+", "N", record.getMessage().splitlines()[0])[:160]
        self.counts[key] = self.counts.get(key, 0) + 1


def broker_log_errors(path: Path) -> dict[str, int]:
    """ERROR lines in the Tansu log, grouped by their text (timestamps, colours and numbers removed)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            if " ERROR " not in line:
                continue
            text = re.sub(r"\d+", "N", line.split(" ERROR ", 1)[1])[:200]
            counts[text] = counts.get(text, 0) + 1
    return counts


def step(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


# ---------------------------------------------------------------------------------------------
# part 1: pipeline latency
# ---------------------------------------------------------------------------------------------

class RegistryObserver:
    """A plain aiokafka consumer (no group, all partitions, from the end) on the registry topic.

    Records the wall-clock receipt time of every event and wakes whoever waits for a model's
    ``ModelVersionStatusChanged``.
    """

    def __init__(self, bootstrap: str, topic: str, *, fetch_max_wait_ms: int = 10):
        from aiokafka import AIOKafkaConsumer

        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         fetch_max_wait_ms=fetch_max_wait_ms)
        self.received: dict[tuple[str, str], float] = {}   # (event type, model_id) -> time.time()
        self.by_id: dict[str, float] = {}                  # envelope id -> time.time()
        self.status: dict[str, str] = {}                   # model_id -> status from the event
        self._waiters: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.topic) or set(range(PARTITIONS))
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, not lazily on the first fetch
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name="registry-observer")

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000)
            now = time.time()
            for records in batches.values():
                for rec in records:
                    try:
                        env = json.loads(rec.value)
                    except ValueError:
                        continue
                    model_id = (env.get("data") or {}).get("model_id")
                    self.by_id.setdefault(env.get("id"), now)
                    if not model_id:
                        continue
                    self.received.setdefault((env.get("type"), model_id), now)
                    if env.get("type") == "ModelVersionStatusChanged":
                        self.status[model_id] = env["data"].get("status")
                        fut = self._waiters.pop(model_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(now)

    async def wait_status(self, model_id: str, timeout: float) -> float:
        key = ("ModelVersionStatusChanged", model_id)
        if key in self.received:
            return self.received[key]
        fut = asyncio.get_running_loop().create_future()
        self._waiters[model_id] = fut
        return await asyncio.wait_for(fut, timeout)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.consumer.stop()


class HandlerTimes:
    """Wraps every event handler of the hosted services to stamp its start and end (by envelope id).

    Benchmark-only instrumentation (two ``time.time()`` calls per event); the handler dicts are
    restored by :meth:`restore`. It splits each hop into Kafka delivery and handler time.
    """

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self._saved: list[tuple[dict, Any, Any]] = []

    def install(self) -> None:
        from services.runtime import SERVICES

        for spec in SERVICES.values():
            for consumer in spec.consumers:
                for event_cls, handler in list(consumer.handlers.items()):
                    self._saved.append((consumer.handlers, event_cls, handler))
                    consumer.handlers[event_cls] = self._wrap(handler)

    def _wrap(self, handler):
        async def timed(platform, envelope, event):
            self.start.setdefault(envelope.id, time.time())
            try:
                return await handler(platform, envelope, event)
            finally:
                self.end.setdefault(envelope.id, time.time())
        return timed

    def restore(self) -> None:
        for handlers, event_cls, handler in reversed(self._saved):
            handlers[event_cls] = handler
        self._saved.clear()


async def _hold_preset_imports(platform) -> list[str]:
    """Take the preset-import lease so the one-time SmolLM2 conversion does not run during the benchmark.

    ``presets._claim`` skips a template whose lease is held; the benchmark never uses preset weights.
    """
    from services.lib.catalog.templates import default_catalog
    from services.registry.models import PRESETS

    ids = [t.id for t in default_catalog() if t.preset_weights is not None]
    now = datetime.now(UTC)
    for template_id in ids:
        await platform.mongo[PRESETS].update_one(
            {"_id": template_id},
            {"$set": {"status": "importing", "progress": 0.0, "lease_until": now + timedelta(days=1),
                      "updated_at": now, "holder": "benchmark"}},
            upsert=True)
    return ids


async def _upload_folder(api, folder: Path, dest: str) -> str:
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        r = await api.put(f"/api/v1/storage/objects/{dest}/{file.name}", content=file.read_bytes())
        r.raise_for_status()
    return dest


async def _create_one(api, observer: RegistryObserver, *, name: str, path: str, validate: bool,
                      timeout: float = 120) -> dict[str, Any]:
    t0 = time.time()
    r = await api.post("/api/v1/models", json={"name": name, "template_id": "qwen2-custom", "weights_path": path,
                                               "validate_weights": validate})
    t_ret = time.time()
    if r.status_code != 201:
        raise RuntimeError(f"POST /api/v1/models failed: {r.status_code} {r.text}")
    model_id = r.json()["id"]
    t_event = await observer.wait_status(model_id, timeout)
    return {"model_id": model_id, "t_post": t0, "t_return": t_ret, "t_event": t_event,
            "status": observer.status.get(model_id)}


async def _breakdown(platform, times: HandlerTimes, runs: list[dict]) -> None:
    """Attach outbox and handler timestamps (seconds since the epoch) to each run, in place."""
    from services.lib.common.outbox import OUTBOX

    subjects = [f"models/{r['model_id']}" for r in runs]
    events: dict[tuple[str, str], dict] = {}
    async for d in platform.mongo[OUTBOX].find({"envelope.subject": {"$in": subjects}},
                                               {"envelope.type": 1, "envelope.subject": 1, "created_at": 1,
                                                "published_at": 1}):
        events[(d["envelope"]["subject"], d["envelope"]["type"])] = d
    for r in runs:
        subject = f"models/{r['model_id']}"
        req = events.get((subject, "WeightValidationRequested"), {})
        done = events.get((subject, "WeightValidationCompleted"), {})
        status = events.get((subject, "ModelVersionStatusChanged"), {})
        r.update({
            "req_created": ts(req.get("created_at")), "req_published": ts(req.get("published_at")),
            "worker_start": times.start.get(req.get("_id")),
            "done_created": ts(done.get("created_at")), "done_published": ts(done.get("published_at")),
            "registry_start": times.start.get(done.get("_id")),
            "status_created": ts(status.get("created_at")), "status_published": ts(status.get("published_at")),
        })


# (JSON key, label, start stamp, end stamp, explanation)
SEGMENTS = [
    ("post_round_trip", "POST round trip (not in e2e)", "t_post", "t_return",
     "HTTP request incl. the create transaction"),
    ("relay_request", "relay: commit → published (request)", "req_created", "req_published",
     "outbox relay picks up WeightValidationRequested, Kafka ack"),
    ("worker_delivery", "worker: Kafka delivery", "req_published", "worker_start",
     "to the registry-weights group's handler"),
    ("worker_handler", "worker: import handler", "worker_start", "done_created",
     "download, (validate), copy weights, commit"),
    ("relay_completed", "relay: commit → published (completed)", "done_created", "done_published",
     "WeightValidationCompleted"),
    ("registry_delivery", "registry: Kafka delivery", "done_published", "registry_start",
     "to the registry group's handler"),
    ("registry_handler", "registry: handler → state committed", "registry_start", "status_created",
     "version/task/model updates"),
    ("relay_status", "relay: commit → published (status)", "status_created", "status_published",
     "ModelVersionStatusChanged"),
    ("observer_delivery", "observer delivery", "status_published", "t_event",
     "measurement consumer (fetch_max_wait_ms=10)"),
]
E2E = [  # (JSON key, label, start stamp, end stamp)
    ("e2e_state_ms", "E2E: POST return → state committed", "t_return", "status_created"),
    ("e2e_event_ms", "E2E: POST return → status event observed", "t_return", "t_event"),
]


def _ms(runs: list[dict], start: str, end: str) -> list[float]:
    return [(r[end] - r[start]) * 1000 for r in runs if r.get(start) is not None and r.get(end) is not None]


async def pipeline_bench(settings, n_models: int, tmp: Path) -> dict[str, Any]:
    import httpx
    import uvicorn

    from contracts.events import REGISTRY_TOPIC
    from services.lib.common.bus import topic_name
    from services.lib.common.http import server_config
    from services.gateway.accounts.identity import ensure_bootstrap_admin
    from services.lib.mlkit.tiny import build_tiny_model
    from services.runtime import build_app

    t_boot = time.perf_counter()
    times = HandlerTimes()
    times.install()
    try:
        app = build_app(settings, services="all")  # binds the wrapped handlers
    finally:
        times.restore()
    platform = app.state.platform
    held = await _hold_preset_imports(platform)
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    server_task = asyncio.create_task(server.serve(), name="uvicorn")
    observer: RegistryObserver | None = None
    try:
        while not server.started:
            if server_task.done():
                server_task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.05)
        admin = await ensure_bootstrap_admin(platform)
        assert admin is not None, "fresh database expected"
        step(f"platform up on :{port} in {time.perf_counter() - t_boot:.1f}s (preset imports held: {held})")
        observer = RegistryObserver(settings.kafka_bootstrap, topic_name(settings, REGISTRY_TOPIC))
        await observer.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {admin.token}"}) as api:
            bucket = (await api.get("/api/v1/auth/me")).json()["default_bucket"]
            folder = build_tiny_model(tmp / "tiny" / "model")
            path = await _upload_folder(api, folder, f"{bucket}/bench-tiny")
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            # Warm-up, not counted: consumer-group joins, first model load, connection pools.
            t_warm = time.perf_counter()
            for validate in (False, True):
                warm = await _create_one(api, observer, name=f"warmup-{int(validate)}", path=path,
                                         validate=validate, timeout=180)
                if warm["status"] != "created":
                    raise RuntimeError(f"warm-up model ended {warm['status']!r}, not 'created'")
            step(f"warm-up done in {time.perf_counter() - t_warm:.1f}s (incl. consumer group joins)")
            modes: dict[str, list[dict]] = {}
            for label, validate in (("no_validation", False), ("validation", True)):
                t_mode = time.perf_counter()
                runs = []
                for i in range(n_models):
                    runs.append(await _create_one(api, observer, name=f"bench-{label.replace('_', '-')}-{i}",
                                                  path=path, validate=validate))
                modes[label] = runs
                bad = [r for r in runs if r["status"] != "created"]
                if bad:
                    raise RuntimeError(f"{len(bad)} model(s) did not end 'created': {bad[:3]}")
                step(f"{n_models} models ({label}) in {time.perf_counter() - t_mode:.1f}s")
        for runs in modes.values():
            await _breakdown(platform, times, runs)
    finally:
        if observer is not None:
            await observer.stop()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server_task, 60)

    result: dict[str, Any] = {"models_per_mode": n_models, "tiny_model_bytes": size,
                              "end_point": "ModelVersionStatusChanged received by a separate aiokafka consumer"}
    for label, runs in modes.items():
        result[label] = {
            **{key: summary(_ms(runs, start, end)) for key, _, start, end in E2E},
            "segments_ms": {key: summary(_ms(runs, start, end)) for key, _, start, end, _ in SEGMENTS},
        }
    return result


def print_pipeline(res: dict[str, Any]) -> None:
    for label in ("no_validation", "validation"):
        data = res[label]
        table = Table(title=f"Pipeline latency, validate_weights={label == 'validation'} "
                            f"({res['models_per_mode']} models, sequential), ms",
                      title_justify="left", show_lines=False)
        table.add_column("stage")
        for col in ("p50", "p99", "max", "mean"):
            table.add_column(col, justify="right")
        table.add_column("what", style="dim")
        for key, seg_label, _, _, what in SEGMENTS:
            s = data["segments_ms"][key]
            table.add_row(seg_label, f"{s['p50']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}", f"{s['mean']:.1f}", what)
        table.add_section()
        for key, name, _, _ in E2E:
            s = data[key]
            table.add_row(f"[bold]{name}[/bold]", f"[bold]{s['p50']:.1f}", f"[bold]{s['p99']:.1f}",
                          f"[bold]{s['max']:.1f}", f"{s['mean']:.1f}", "")
        console.print(table)
    console.print("[dim]Stages use wall-clock stamps from the outbox documents (created_at = just before the "
                  "transaction commits, published_at = after the Kafka ack) and from a timing wrapper around each "
                  "event handler (start). Stage percentiles need not add up to the e2e ones.[/dim]")


# ---------------------------------------------------------------------------------------------
# part 2: throughput, FastStream vs raw aiokafka
# ---------------------------------------------------------------------------------------------

def make_messages(count: int) -> list[dict]:
    base = {"id": "", "type": "BenchEvent", "version": 1, "tenant_id": "bench", "subject": "bench/0",
            "occurred_at": "2026-01-01T00:00:00+00:00", "data": {"seq": 0, "payload": ""}}
    pad = MSG_BYTES - len(json.dumps(base).encode()) - 40  # room for the id and seq
    msgs = []
    for i in range(count):
        msgs.append({**base, "id": uuid.uuid4().hex, "subject": f"bench/{i % 97}",
                     "data": {"seq": i, "payload": "x" * pad}})
    return msgs


async def create_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def _encode(m: dict) -> bytes:
    return json.dumps(m).encode()


async def _windowed(futures_iter, window: int) -> None:
    pending = []
    async for fut in futures_iter:
        pending.append(fut)
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    if pending:
        await asyncio.gather(*pending)


class _Timer:
    """Wall and process-CPU time of a block (the broker runs in other processes: CPU = client cost)."""

    def __enter__(self) -> "_Timer":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0

    def figures(self, n: int) -> dict[str, float]:
        return {"msgs_per_s": n / self.wall, "cpu_us_per_msg": self.cpu / n * 1e6}


async def pub_raw_stream(producer, topic: str, msgs: list[dict], window: int) -> dict[str, float]:
    async def gen():
        for m in msgs:
            yield await producer.send(topic, _encode(m))
    with _Timer() as t:
        await _windowed(gen(), window)
    return t.figures(len(msgs))


async def pub_fs_stream(broker, topic: str, msgs: list[dict], window: int) -> dict[str, float]:
    async def gen():
        for m in msgs:
            yield await broker.publish(m, topic=topic, no_confirm=True)
    with _Timer() as t:
        await _windowed(gen(), window)
    return t.figures(len(msgs))


def _chunks(msgs: list[dict], size: int):
    for i in range(0, len(msgs), size):
        yield i // size, msgs[i:i + size]


async def pub_raw_batch(producer, topic: str, msgs: list[dict], batch: int, window: int) -> dict[str, float]:
    async def gen():
        for idx, chunk in _chunks(msgs, batch):
            b = producer.create_batch()
            for m in chunk:
                if b.append(key=None, value=_encode(m), timestamp=None) is None:
                    raise RuntimeError("batch overflow: lower --batch")
            yield await producer.send_batch(b, topic, partition=idx % PARTITIONS)
    with _Timer() as t:
        await _windowed(gen(), window)
    return t.figures(len(msgs))


async def pub_fs_batch(broker, topic: str, msgs: list[dict], batch: int, window: int) -> dict[str, float]:
    async def gen():
        for idx, chunk in _chunks(msgs, batch):
            yield await broker.publish_batch(*chunk, topic=topic, partition=idx % PARTITIONS, no_confirm=True)
    with _Timer() as t:
        await _windowed(gen(), window)
    return t.figures(len(msgs))


async def pub_raw_confirmed(producer, topic: str, msgs: list[dict]) -> dict[str, float]:
    with _Timer() as t:
        for m in msgs:
            await producer.send_and_wait(topic, _encode(m))
    return t.figures(len(msgs))


async def pub_fs_confirmed(broker, topic: str, msgs: list[dict]) -> dict[str, float]:
    with _Timer() as t:
        for m in msgs:
            await broker.publish(m, topic=topic)
    return t.figures(len(msgs))


class _Counter:
    """Counts consumed messages; the timed span runs from partition assignment to the last message."""

    def __init__(self, target: int):
        self.target, self.n = target, 0
        self.started = time.perf_counter()
        self.assigned: tuple[float, float] | None = None   # (wall, cpu) when partitions were assigned
        self.last: tuple[float, float] | None = None
        self.done = asyncio.Event()

    def mark_assigned(self) -> None:
        if self.assigned is None:
            self.assigned = (time.perf_counter(), time.process_time())

    def hit(self, k: int = 1) -> None:
        self.n += k
        self.last = (time.perf_counter(), time.process_time())
        if self.n >= self.target:
            self.done.set()

    def listener(self):
        from aiokafka import ConsumerRebalanceListener

        counter = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked) -> None:
                pass

            def on_partitions_assigned(self, assigned) -> None:
                if assigned:
                    counter.mark_assigned()

        return _Listener()

    def result(self) -> dict[str, float]:
        if self.assigned is None or self.last is None or self.last[0] <= self.assigned[0]:
            return {"msgs_per_s": float("nan"), "cpu_us_per_msg": float("nan"), "consumed": self.n,
                    "join_s": float("nan")}
        wall, cpu = self.last[0] - self.assigned[0], self.last[1] - self.assigned[1]
        return {"msgs_per_s": self.n / wall, "cpu_us_per_msg": cpu / self.n * 1e6, "consumed": self.n,
                "join_s": self.assigned[0] - self.started}


async def _await_counter(counter: _Counter, cap_s: float, join_timeout: float = 60) -> None:
    """Wait for the assignment (group join), then at most cap_s for all messages."""
    deadline = time.perf_counter() + join_timeout
    while counter.assigned is None:
        if time.perf_counter() > deadline:
            raise TimeoutError("consumer got no partitions (group join?)")
        await asyncio.sleep(0.005)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.done.wait(), max(0.0, counter.assigned[0] + cap_s - time.perf_counter()))


async def consume_raw(bootstrap: str, topic: str, target: int, cap_s: float, *, per_message: bool) -> dict:
    from aiokafka import AIOKafkaConsumer

    counter = _Counter(target)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    await consumer.start()
    consumer.subscribe([topic], listener=counter.listener())

    async def loop():
        if per_message:
            async for rec in consumer:
                json.loads(rec.value)
                counter.hit()
        else:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                k = 0
                for records in batches.values():
                    for rec in records:
                        json.loads(rec.value)
                        k += 1
                if k:
                    counter.hit(k)

    task = asyncio.create_task(loop())
    try:
        await _await_counter(counter, cap_s)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await consumer.stop()
    return counter.result()


async def consume_fs(broker, topic: str, target: int, cap_s: float, *, batch: bool = False,
                     platform_ack: bool = False) -> dict:
    from faststream import AckPolicy

    counter = _Counter(target)
    kwargs: dict[str, Any] = {"group_id": f"bench-fs-{uuid.uuid4().hex[:8]}", "auto_offset_reset": "earliest",
                              "listener": counter.listener()}
    if platform_ack:
        # as services/runtime.py subscribes (the session settings only shorten the group join)
        kwargs.update(ack_policy=AckPolicy.NACK_ON_ERROR, session_timeout_ms=6000, heartbeat_interval_ms=1500)
    sub = broker.subscriber(topic, batch=batch, **kwargs)

    if batch:
        @sub
        async def handle_batch(body: list[dict]) -> None:
            counter.hit(len(body))
    else:
        @sub
        async def handle(body: dict) -> None:
            counter.hit()

    await broker.start()
    try:
        await _await_counter(counter, cap_s)
    finally:
        await broker.stop()
    return counter.result()


def _fs_broker(bootstrap: str, producer_kw: dict, *, platform_settings=None):
    """A plain KafkaBroker, or one with the platform's middleware and client id (``bus.make_broker``)."""
    from faststream.kafka import KafkaBroker

    if platform_settings is None:
        return KafkaBroker(bootstrap, logger=None, **producer_kw)
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

    from services.lib.common.telemetry import tracer_provider

    return KafkaBroker(bootstrap, logger=None, client_id=platform_settings.service_name,
                       middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider(platform_settings))],
                       **producer_kw)


def _median_fig(figs: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median rate (its CPU figure comes with it), plus every round's rate."""
    ordered = sorted(figs, key=lambda f: f["msgs_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds_msgs_per_s": [f["msgs_per_s"] for f in figs]}


async def throughput_bench(settings, n_msgs: int, n_confirmed: int, cap_s: float, batch: int, window: int,
                           producer_kw: dict, rounds: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    bootstrap = settings.kafka_bootstrap
    run = uuid.uuid4().hex[:6]
    msgs = make_messages(n_msgs)
    size = len(_encode(msgs[0]))
    publish_cases = ["stream-raw", "stream-fs", "stream-fsplat", "batch-raw", "batch-fs",
                     "confirmed-raw", "confirmed-fs", "confirmed-fsplat"]
    consume_cases = ["c-raw-getmany", "c-fs-batch", "c-raw-iter", "c-fs", "c-fsplat"]
    topics = {c: f"bench.{run}.{c}" for c in ["warmup"] + consume_cases}
    topics.update({f"{c}.{r}": f"bench.{run}.r{r}.{c}" for c in publish_cases for r in range(rounds)})
    await create_topics(bootstrap, list(topics.values()))

    # The same producer settings on both sides.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_kw)
    broker = _fs_broker(bootstrap, producer_kw)
    plat = _fs_broker(bootstrap, producer_kw, platform_settings=settings)
    kw0 = {**producer_kw, "linger_ms": 0}
    producer0 = AIOKafkaProducer(bootstrap_servers=bootstrap, **kw0)
    broker0 = _fs_broker(bootstrap, kw0)
    plat0 = _fs_broker(bootstrap, kw0, platform_settings=settings)
    clients = [producer, broker, plat, producer0, broker0, plat0]
    for client in clients:
        await client.start()
    out: dict[str, Any] = {"messages": n_msgs, "message_bytes": size, "partitions": PARTITIONS,
                           "producer": producer_kw, "window": window, "batch_msgs": batch,
                           "confirmed_messages": n_confirmed, "publish_rounds": rounds}
    try:
        warm = msgs[: min(2000, n_msgs)]
        await pub_raw_stream(producer, topics["warmup"], warm, window)
        await pub_fs_stream(broker, topics["warmup"], warm, window)
        await pub_fs_stream(plat, topics["warmup"], warm, window)
        await pub_raw_batch(producer, topics["warmup"], warm, batch, max(1, window // batch))
        await pub_fs_batch(broker, topics["warmup"], warm, batch, max(1, window // batch))
        await pub_raw_confirmed(producer0, topics["warmup"], warm[:30])
        await pub_fs_confirmed(broker0, topics["warmup"], warm[:30])
        await pub_fs_confirmed(plat0, topics["warmup"], warm[:30])
        step("throughput: warm-up done; publishing")

        # Raw and FastStream alternate, on fresh topics each round; the median round is reported.
        samples: dict[str, dict[str, list[dict[str, float]]]] = {}

        def keep(kind: str, who: str, fig: dict[str, float]) -> None:
            samples.setdefault(kind, {}).setdefault(who, []).append(fig)

        wb = max(1, window // batch)
        few = msgs[:n_confirmed]
        for r in range(rounds):
            keep("stream", "aiokafka", await pub_raw_stream(producer, topics[f"stream-raw.{r}"], msgs, window))
            keep("stream", "faststream", await pub_fs_stream(broker, topics[f"stream-fs.{r}"], msgs, window))
            keep("stream", "faststream_platform", await pub_fs_stream(plat, topics[f"stream-fsplat.{r}"], msgs, window))
            keep("batch", "aiokafka", await pub_raw_batch(producer, topics[f"batch-raw.{r}"], msgs, batch, wb))
            keep("batch", "faststream", await pub_fs_batch(broker, topics[f"batch-fs.{r}"], msgs, batch, wb))
            # One at a time (what the outbox relay does): linger would only add its delay to every send,
            # so this pair runs with linger_ms=0, the platform's setting.
            keep("confirmed", "aiokafka", await pub_raw_confirmed(producer0, topics[f"confirmed-raw.{r}"], few))
            keep("confirmed", "faststream", await pub_fs_confirmed(broker0, topics[f"confirmed-fs.{r}"], few))
            keep("confirmed", "faststream_platform",
                 await pub_fs_confirmed(plat0, topics[f"confirmed-fsplat.{r}"], few))
        pub = {kind: {who: _median_fig(figs) for who, figs in by.items()} for kind, by in samples.items()}
        out["publish"] = pub

        # Fill one fresh topic per consumer measurement, identically, with the raw producer (untimed).
        for case in consume_cases:
            await pub_raw_batch(producer, topics[case], msgs, batch, max(1, window // batch))
        step("throughput: topics filled; consuming (each consumer joins a fresh group first, ~5 s)")
    finally:
        for client in clients:
            await client.stop()

    con: dict[str, dict[str, Any]] = {}
    con["batch"] = {
        "aiokafka": await consume_raw(bootstrap, topics["c-raw-getmany"], n_msgs, cap_s, per_message=False),
        "faststream": await consume_fs(_fs_broker(bootstrap, {}), topics["c-fs-batch"], n_msgs, cap_s, batch=True)}
    con["per_message"] = {
        "aiokafka": await consume_raw(bootstrap, topics["c-raw-iter"], n_msgs, cap_s, per_message=True),
        "faststream": await consume_fs(_fs_broker(bootstrap, {}), topics["c-fs"], n_msgs, cap_s),
        "faststream_platform": await consume_fs(_fs_broker(bootstrap, {}, platform_settings=settings),
                                                topics["c-fsplat"], n_msgs, cap_s, platform_ack=True)}
    out["consume"] = con
    out["consume_cap_s"] = cap_s
    return out


PUBLISH_LABELS = {
    "stream": "publish: send() futures, {window} in flight",
    "batch": "publish_batch: {batch} msgs per call",
    "confirmed": "publish one at a time, await each ack",
}
CONSUME_LABELS = {
    "batch": "consume batches: getmany() vs batch=True subscriber",
    "per_message": "consume per message: async for vs subscriber",
}
PLATFORM_NOTES = {
    "publish": "  … broker with the platform's OTel middleware",
    "consume": "  … subscribed as the platform does (NACK_ON_ERROR, OTel)",
}


def _fmt_rate(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f}"


def print_throughput(res: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Prints the table; returns the FastStream/aiokafka ratios of msgs/s and of CPU µs per message."""
    ratios: dict[str, float] = {}
    cpu_ratios: dict[str, float] = {}
    kw = ", ".join(f"{k}={v}" for k, v in res["producer"].items())
    table = Table(title=f"Kafka throughput: {res['messages']:,} msgs of {res['message_bytes']} B per measurement, "
                        f"{res['partitions']} partitions, producer {kw}; publish: median of {res['publish_rounds']} "
                        "round(s)", title_justify="left")
    for col in ("measurement", "aiokafka msg/s", "FastStream msg/s", "FS/aiokafka", "CPU µs/msg aiokafka → FS"):
        table.add_column(col, justify="left" if col == "measurement" else "right")

    def add(kind: str, key: str, label: str, d: dict[str, Any]) -> None:
        raw = d["aiokafka"]
        for which, row_label in (("faststream", label), ("faststream_platform", PLATFORM_NOTES[kind])):
            if which not in d:
                continue
            fs = d[which]
            r = fs["msgs_per_s"] / raw["msgs_per_s"]
            name = f"{kind}.{key}" + ("" if which == "faststream" else ".platform")
            ratios[name] = r
            cpu_ratios[name] = fs["cpu_us_per_msg"] / raw["cpu_us_per_msg"]
            extra = f" ({fs['consumed']:,} in {res['consume_cap_s']:.0f}s cap)" if fs.get("consumed", 0) and \
                fs["consumed"] < res["messages"] else ""
            table.add_row(row_label, _fmt_rate(raw["msgs_per_s"]) if which == "faststream" else "",
                          _fmt_rate(fs["msgs_per_s"]) + extra, f"{r:.2f}" if r >= 0.095 else f"{r:.3f}",
                          f"{raw['cpu_us_per_msg']:.0f} → {fs['cpu_us_per_msg']:.0f}")

    for key, d in res["publish"].items():
        label = PUBLISH_LABELS[key].format(window=res["window"], batch=res["batch_msgs"])
        if key == "confirmed":
            label += f" ({res['confirmed_messages']} msgs, linger_ms=0)"
        add("publish", key, label, d)
    table.add_section()
    for key, d in res["consume"].items():
        add("consume", key, CONSUME_LABELS[key], d)
    console.print(table)
    joins = [d[w]["join_s"] for d in res["consume"].values() for w in d]
    console.print(f"[dim]Consume rates run from partition assignment to the last message (group joins, "
                  f"{min(joins):.1f}-{max(joins):.1f}s here, excluded). CPU is this process's CPU time per message "
                  "(the broker runs in its own process). FastStream adds content-type and correlation_id headers "
                  "to each message it publishes. On a small machine the broker competes for the CPU: msgs/s ratios "
                  "move by ±30% between runs, CPU µs/msg much less.[/dim]")
    return ratios, cpu_ratios


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


async def run_all(args, tmp: Path) -> dict[str, Any]:
    from services.lib.common.settings import get_settings

    settings = get_settings().model_copy(update={"work_dir": str(tmp / "work")})
    (tmp / "work").mkdir()
    results: dict[str, Any] = {}
    if not args.skip_pipeline:
        step(f"part 1: pipeline latency, {args.models} models per mode")
        results["pipeline"] = await pipeline_bench(settings, args.models, tmp)
    if not args.skip_throughput:
        step(f"part 2: throughput, {args.messages:,} messages per measurement")
        producer_kw = {"acks": "all" if args.acks == "all" else int(args.acks), "linger_ms": args.linger_ms,
                       "max_batch_size": args.max_batch_kib * 1024}
        results["throughput"] = await throughput_bench(settings, args.messages, args.confirmed, args.consume_cap,
                                                       args.batch, args.window, producer_kw, args.rounds)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer models and messages (CI smoke run)")
    parser.add_argument("--models", type=int, help="models per mode (default 30, --quick 10)")
    parser.add_argument("--messages", type=int, help="messages per throughput measurement (default 20000, --quick 3000)")
    parser.add_argument("--confirmed", type=int, help="messages for the one-at-a-time publish (default 300, --quick 100)")
    parser.add_argument("--consume-cap", type=float, help="seconds a consumer may run after its first message "
                                                          "(default 10, --quick 4)")
    parser.add_argument("--acks", default="1", choices=["0", "1", "all"], help="producer acks, both sides (default 1)")
    parser.add_argument("--linger-ms", type=int, default=5, help="producer linger_ms, both sides (default 5)")
    parser.add_argument("--max-batch-kib", type=int, default=256,
                        help="producer max_batch_size in KiB, both sides (default 256; aiokafka's default is 16)")
    parser.add_argument("--batch", type=int, default=200, help="messages per publish_batch call (must fit max-batch)")
    parser.add_argument("--window", type=int, default=1000, help="publish futures in flight before awaiting them")
    parser.add_argument("--rounds", type=int, help="publish rounds, median reported (default 3, --quick 1)")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder (its path is printed)")
    args = parser.parse_args()
    args.models = args.models or (10 if args.quick else 30)
    args.messages = args.messages or (3000 if args.quick else 20000)
    args.confirmed = args.confirmed or (100 if args.quick else 300)
    args.consume_cap = args.consume_cap or (4.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tally = LogTally()
    for name in ("aiokafka", "faststream"):  # counted and summarised, not printed one by one
        logging.getLogger(name).addHandler(tally)
        logging.getLogger(name).propagate = False

    from services.lib.common.settings import get_settings
    from services.lib.embedded.servers import EmbeddedServers

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-"))
    servers = EmbeddedServers(tmp / "embedded")
    saved_env = {k: os.environ.get(k) for k in ("MAAS_KAFKA_BOOTSTRAP", "MAAS_MONGO_URL", "MAAS_S3_ENDPOINT",
                                               "MAAS_S3_ACCESS_KEY", "MAAS_S3_SECRET_KEY", "MAAS_S3_SECURE")}
    try:
        servers.start(timeout=60)
        step(f"embedded servers up in {tmp} ({', '.join(f'{k} {v:.1f}s' for k, v in servers.startup_times.items())})")
        os.environ.update(servers.settings_env())
        get_settings.cache_clear()
        results = asyncio.run(run_all(args, tmp))
    finally:
        servers.stop()
        tansu_errors = broker_log_errors(servers.log_path("kafka"))
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        if args.keep:
            console.print(f"data kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    console.print()
    if "pipeline" in results:
        print_pipeline(results["pipeline"])
    if "throughput" in results:
        ratios, cpu_ratios = print_throughput(results["throughput"])
        results["throughput"]["ratios_msgs_per_s"] = ratios
        results["throughput"]["ratios_cpu_per_msg"] = cpu_ratios
    if tally.counts or tansu_errors:
        console.print("[yellow]Client warnings/errors during the run (counted):[/yellow]")
        for key, n in sorted(tally.counts.items(), key=lambda kv: -kv[1]):
            console.print(f"  {n:4d} × {key}", markup=False, highlight=False)
        for key, n in sorted(tansu_errors.items(), key=lambda kv: -kv[1]):
            console.print(f"  {n:4d} × tansu {key}", markup=False, highlight=False)
    elapsed = time.perf_counter() - t_start
    console.print(f"[dim]total {elapsed:.0f}s[/dim]")
    record = {
        "benchmark": "event_pipeline", "schema": 1, "quick": args.quick,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": _platform.python_version(), "machine": _platform.machine()},
        "kafka": "tansu (s3 storage on nanio)", "elapsed_s": elapsed, **results,
        "log_errors": {"clients": tally.counts, "tansu": tansu_errors},
    }
    sys.stdout.flush()
    print(json.dumps(_round(record), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
