"""The model folder an instance starts from, and the rule that the first instance of a model without
an ONNX export starts alone: the engine exports on its first load, and two instances exporting into
the same folder would trip over each other. Shared by every backend that starts instances from the
deployer's model cache (local processes, Ray actors on nodes that mount the same work folder).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.deployer.backend import Health, InstanceHandle, InstanceLaunch
from services.deployer.modelcache import ModelCache, has_export

log = logging.getLogger(__name__)

Spawn = Callable[[InstanceLaunch, "Path | None"], Awaitable[InstanceHandle]]
Probe = Callable[[InstanceHandle], Awaitable[Health]]


class ExportGate:
    def __init__(self, models: ModelCache | None, *, first_start_timeout: float):
        self.models, self.first_start_timeout = models, first_start_timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._unpublished: dict[str, str] = {}     # instance id -> model uri whose export may be new

    async def start(self, launch: InstanceLaunch, spawn: Spawn, probe: Probe) -> InstanceHandle:
        """Prepare the model folder and ``spawn`` the instance; the first one of a model that has no
        export yet is waited for (until its export is written, or it is ready or gone)."""
        model_dir = await self.models.prepare(launch.model_uri) if self.models else None
        if model_dir is None or has_export(model_dir):
            return await self._spawned(launch, model_dir, spawn)
        lock = self._locks.setdefault(str(model_dir), asyncio.Lock())
        async with lock:
            if has_export(model_dir):  # another instance finished the export while we waited
                return await self._spawned(launch, model_dir, spawn)
            handle = await self._spawned(launch, model_dir, spawn)
            await self._exported(handle, model_dir, probe)
            return handle

    async def _spawned(self, launch: InstanceLaunch, model_dir: Path | None, spawn: Spawn) -> InstanceHandle:
        handle = await spawn(launch, model_dir)
        if self.models is not None:
            self._unpublished[launch.instance_id] = launch.model_uri
        return handle

    async def _exported(self, handle: InstanceHandle, model_dir: Path, probe: Probe) -> None:
        deadline = time.monotonic() + self.first_start_timeout
        while not has_export(model_dir) and time.monotonic() < deadline:
            if await probe(handle) is not Health.not_ready:
                return
            await asyncio.sleep(0.5)

    def ready(self, instance_id: str) -> None:
        """The instance answers: its export (if it made one) can now serve the next start anywhere."""
        uri = self._unpublished.pop(instance_id, None)
        if uri and self.models is not None:
            asyncio.create_task(self._publish(uri))

    def forget(self, instance_id: str) -> None:
        self._unpublished.pop(instance_id, None)

    async def _publish(self, model_uri: str) -> None:
        try:
            await self.models.publish_exports(model_uri)
        except Exception:
            log.exception("caching the ONNX export of %s failed", model_uri)
