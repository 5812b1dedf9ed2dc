"""Model folders on this machine for local instances, and the ONNX export cache in object storage.

A version's weights are downloaded once per machine (instances of the same version share the
folder). The engine exports HF weights to ONNX on its first load, into ``<folder>/onnx`` (or
``onnx-gqa``); that export is uploaded to ``s3://<system bucket>/onnx-cache/<key>/`` so the next
instance, on any machine, downloads it instead of exporting again. The cache lives apart from the
weights so that jobs reading a version's folder (tuning, compression) never download it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from pathlib import Path

from services.lib.common.objectstore import ObjectPath, ObjectStore
from services.lib.mlkit.onnx_export import EXPORT_MARKER, is_onnx_folder

log = logging.getLogger(__name__)
EXPORT_DIRS = ("onnx", "onnx-gqa")   # where services.lib.mlkit.onnx_export.ensure_onnx puts its exports
COMPLETE = ".complete"


def cache_key(model_uri: str) -> str:
    return hashlib.sha1(ObjectPath.parse(model_uri).as_prefix().uri.encode()).hexdigest()[:20]


def has_export(folder: Path) -> bool:
    """True when the engine can start without exporting (an ONNX model, or a finished export)."""
    return is_onnx_folder(folder) or any((folder / d / EXPORT_MARKER).is_file() for d in EXPORT_DIRS)


class ModelCache:
    def __init__(self, store: ObjectStore, root: Path, *, cache_bucket: str):
        self.store, self.root, self.cache_bucket = store, Path(root), cache_bucket
        self._locks: dict[str, asyncio.Lock] = {}
        self._published: set[str] = set()

    def folder(self, model_uri: str) -> Path:
        return self.root / cache_key(model_uri)

    def _remote_export(self, model_uri: str, kind: str) -> ObjectPath:
        return ObjectPath(self.cache_bucket, f"onnx-cache/{cache_key(model_uri)}/{kind}/")

    async def prepare(self, model_uri: str) -> Path:
        """The local folder of ``model_uri`` with any cached export, downloading what is missing."""
        key = cache_key(model_uri)
        lock = self._locks.setdefault(key, asyncio.Lock())
        folder = self.folder(model_uri)
        async with lock:
            if (folder / COMPLETE).is_file():
                return folder
            if folder.exists():  # an interrupted download: start over
                await asyncio.to_thread(shutil.rmtree, folder)
            folder.mkdir(parents=True)
            files = await self.store.download_prefix(ObjectPath.parse(model_uri).as_prefix(), folder)
            if not files:
                raise FileNotFoundError(f"no weights under {model_uri}")
            for kind in EXPORT_DIRS:
                remote = self._remote_export(model_uri, kind)
                if await self.store.exists(ObjectPath(remote.bucket, remote.key + EXPORT_MARKER)):
                    await self.store.download_prefix(remote, folder / kind)
                    log.info("using the cached ONNX export %s", remote.uri)
            (folder / COMPLETE).write_text(model_uri + "\n")
        return folder

    async def publish_exports(self, model_uri: str) -> int:
        """Upload finished exports not in the cache yet (marker last, so a reader never sees half)."""
        folder = self.folder(model_uri)
        uploaded = 0
        for kind in EXPORT_DIRS:
            local = folder / kind
            remote = self._remote_export(model_uri, kind)
            tag = remote.uri
            if tag in self._published or not (local / EXPORT_MARKER).is_file():
                continue
            marker = ObjectPath(remote.bucket, remote.key + EXPORT_MARKER)
            await self.store.ensure_bucket(remote.bucket)
            if not await self.store.exists(marker):
                for file in sorted(p for p in local.rglob("*") if p.is_file() and p.name != EXPORT_MARKER):
                    await self.store.put_file(ObjectPath(remote.bucket, remote.key + file.relative_to(local).as_posix()),
                                              file)
                await self.store.put_file(marker, local / EXPORT_MARKER)
                uploaded += 1
                log.info("cached the ONNX export of %s at %s", model_uri, remote.uri)
            self._published.add(tag)
        return uploaded
