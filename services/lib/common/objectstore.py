"""Object storage (S3 protocol) through the minio client.

The minio client is synchronous; every call runs in a worker thread so the event loop stays free.
Paths are written ``bucket/prefix`` in the API and ``s3://bucket/prefix`` in events.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from services.lib.common.settings import Settings

PART_SIZE = 16 * 1024 * 1024  # multipart upload part size for large files
READ_CHUNK = 1024 * 1024      # what a streamed read (``iter_object``) holds at a time
MAX_KEY_BYTES = 1024          # S3's limit on an object key


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

    def key_problem(self) -> str | None:
        """Why this key must not come from a user (None when it is fine).

        Keys become local file names when workers download a prefix, so a '..' or absolute key could
        write outside the download folder; control characters break logs and listings.
        """
        key = self.key
        if len(key.encode()) > MAX_KEY_BYTES:
            return f"must be at most {MAX_KEY_BYTES} bytes long"
        if key.startswith("/") or "\\" in key:
            return "must be a relative 'folder/name' path ('/' separated, no leading '/' or '\\')"
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
            return "must not contain control characters"
        parts = key.split("/")
        if any(part in (".", "..") for part in parts):
            return "must not contain '.' or '..' segments"
        if "" in parts[:-1]:
            return "must not contain empty segments ('//')"
        return None

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


def s3_http_client(settings: Settings) -> urllib3.PoolManager:
    """minio's own pool, with bounded connect time and retries (its defaults: 5 min, 5 retries), so a
    call fails within seconds while S3 is down (answered 503, services.lib.common.unavailable)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.s3_connect_timeout_seconds, read=settings.s3_read_timeout_seconds),
        maxsize=settings.s3_io_threads,   # one connection per S3 thread (minio's default pool has 10)
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=settings.s3_max_retries, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]),
    )


class ObjectStore:
    def __init__(self, settings: Settings, *, client: Minio | None = None):
        self.client = client or Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=s3_http_client(settings),
        )
        self._threads = ThreadPoolExecutor(max_workers=settings.s3_io_threads, thread_name_prefix="s3")

    async def _run(self, fn, *args, **kwargs):
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)   # as asyncio.to_thread
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

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

    async def put_chunks(self, path: ObjectPath, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        """Stream an async byte source (a request body) into one object, one part in memory, nothing
        on local disk. Past ``max_bytes`` it raises ``TooLarge`` and no object is written."""
        return await self.put_iter(path, _pulled(asyncio.get_running_loop(), chunks, max_bytes=max_bytes))

    async def put_iter(self, path: ObjectPath, chunks: Iterator[bytes], *,
                       content_type: str = "application/octet-stream") -> int:
        """Upload what a blocking iterator yields, holding one part in memory; returns the bytes written.

        The iterator runs in the upload's worker thread, so it may block (read another object with
        ``iter_object``, parse). If it raises, no object is written (the multipart upload is
        aborted) and its exception is raised here as it was.
        """
        reader = _IterReader(chunks)

        def upload() -> None:
            try:
                self.client.put_object(path.bucket, path.key, reader, -1, part_size=PART_SIZE,
                                       num_parallel_uploads=1, content_type=content_type)
            finally:
                # In this thread, not on the loop: a generator left half-read releases what it
                # holds (a download) even when the awaiting request was cancelled meanwhile.
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

        try:
            await self._run(upload)
        except Exception:
            if reader.error is not None:
                raise reader.error from None
            raise
        return reader.total

    def iter_object(self, path: ObjectPath, *, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """The object's bytes a chunk at a time, so a large object is never held whole.

        Blocking, unlike the rest of this class (the minio client is synchronous): iterate it in a
        worker thread, e.g. in the iterator given to ``put_iter``. Closing it frees the connection.
        """
        response = self.client.get_object(path.bucket, path.key)
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

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
            # Keys written straight to S3 (presigned uploads) were never checked by the API.
            if ObjectPath(prefix.bucket, rel).key_problem() or not target.resolve().is_relative_to(dest.resolve()):
                raise ValueError(f"object '{prefix.bucket}/{info.key}' has a key that cannot be a file name "
                                 f"inside the download folder")
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


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


def _pulled(loop: asyncio.AbstractEventLoop, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Iterator[bytes]:
    """A blocking iterator (for ``put_iter``'s worker thread) over async chunks living on ``loop``."""
    source, total = chunks.__aiter__(), 0

    async def next_chunk() -> bytes | None:
        try:
            return await source.__anext__()
        except StopAsyncIteration:
            return None
    while (chunk := asyncio.run_coroutine_threadsafe(next_chunk(), loop).result()) is not None:
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(max_bytes)
        yield chunk


class _IterReader(io.RawIOBase):
    """A blocking file object over a blocking iterator of byte strings, for the minio client.

    ``read(n)`` fills up to ``n`` bytes from many small pieces (the client concatenates what read
    returns into immutable bytes, so short reads would cost a copy each) and keeps what the
    iterator raised, so the caller can raise it as it was."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = iter(chunks)
        self.buffer, self.total, self.done = bytearray(), 0, False
        self.error: Exception | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.buffer) < size):
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.done = True
                break
            except Exception as exc:
                self.error = exc
                raise
            self.total += len(chunk)
            self.buffer += chunk
        size = len(self.buffer) if size < 0 else min(size, len(self.buffer))
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out
