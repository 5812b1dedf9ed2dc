"""Object storage (S3 protocol) through the minio client.

The minio client is synchronous; every call runs in a worker thread so the event loop stays free.
Paths are written ``bucket/prefix`` in the API and ``s3://bucket/prefix`` in events.
"""
from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from minio import Minio
from minio.error import S3Error

from services.common.settings import Settings

PART_SIZE = 16 * 1024 * 1024  # multipart upload part size for large files


@dataclass(frozen=True)
class ObjectPath:
    bucket: str
    key: str  # may be a prefix ("folder/") or "" for the whole bucket

    @classmethod
    def parse(cls, text: str) -> "ObjectPath":
        text = text.strip()
        for scheme in ("s3://", "obs://"):
            if text.startswith(scheme):
                text = text[len(scheme):]
        bucket, _, key = text.lstrip("/").partition("/")
        return cls(bucket=bucket, key=key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def as_prefix(self) -> "ObjectPath":
        key = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return ObjectPath(self.bucket, key)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    is_dir: bool


class ObjectStore:
    def __init__(self, settings: Settings):
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )

    async def _run(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def ensure_bucket(self, bucket: str) -> None:
        if not await self._run(self.client.bucket_exists, bucket):
            try:
                await self._run(self.client.make_bucket, bucket)
            except S3Error as exc:  # created concurrently
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def bucket_exists(self, bucket: str) -> bool:
        return await self._run(self.client.bucket_exists, bucket)

    async def put_bytes(self, path: ObjectPath, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._run(self.client.put_object, path.bucket, path.key, io.BytesIO(data), len(data),
                        content_type=content_type)

    async def put_stream(self, path: ObjectPath, stream: BinaryIO, *, length: int = -1) -> int:
        result = await self._run(self.client.put_object, path.bucket, path.key, stream, length,
                                 part_size=PART_SIZE)
        stat = await self._run(self.client.stat_object, result.bucket_name, result.object_name)
        return stat.size

    async def put_file(self, path: ObjectPath, file: Path) -> None:
        await self._run(self.client.fput_object, path.bucket, path.key, str(file), part_size=PART_SIZE)

    async def get_bytes(self, path: ObjectPath) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(path.bucket, path.key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        return await self._run(read)

    async def list(self, path: ObjectPath, *, recursive: bool = False) -> list[ObjectInfo]:
        def collect() -> list[ObjectInfo]:
            return [ObjectInfo(key=o.object_name, size=o.size or 0, is_dir=o.is_dir)
                    for o in self.client.list_objects(path.bucket, prefix=path.key or None, recursive=recursive)]
        return await self._run(collect)

    async def list_buckets(self) -> list[str]:
        return [b.name for b in await self._run(self.client.list_buckets)]

    async def exists(self, path: ObjectPath) -> bool:
        try:
            await self._run(self.client.stat_object, path.bucket, path.key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NotFound"):
                return False
            raise

    async def download_prefix(self, path: ObjectPath, dest: Path) -> list[Path]:
        """Copy every object under a prefix into ``dest`` keeping relative names."""
        prefix = path.as_prefix()
        files = []
        for info in await self.list(prefix, recursive=True):
            rel = info.key[len(prefix.key):]
            if not rel or info.is_dir:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            await self._run(self.client.fget_object, prefix.bucket, info.key, str(target))
            files.append(target)
        return files

    async def upload_folder(self, folder: Path, path: ObjectPath) -> int:
        prefix = path.as_prefix()
        count = 0
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            await self.put_file(ObjectPath(prefix.bucket, prefix.key + file.relative_to(folder).as_posix()), file)
            count += 1
        return count

    async def remove_prefix(self, path: ObjectPath) -> int:
        prefix = path.as_prefix()
        removed = 0
        for info in await self.list(prefix, recursive=True):
            await self._run(self.client.remove_object, prefix.bucket, info.key)
            removed += 1
        return removed

    async def presigned_put(self, path: ObjectPath, *, expires: timedelta = timedelta(hours=1)) -> str:
        return await self._run(self.client.presigned_put_object, path.bucket, path.key, expires)

    async def presigned_get(self, path: ObjectPath, *, expires: timedelta = timedelta(hours=1)) -> str:
        return await self._run(self.client.presigned_get_object, path.bucket, path.key, expires)
