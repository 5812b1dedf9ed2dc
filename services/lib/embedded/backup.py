"""Back up the embedded servers' data while the platform runs, and restore it into a fresh data folder.

Everything goes through the servers' protocols (MongoDB wire protocol, S3), never by copying files
under a live server. A backup folder::

    manifest.json                       written last: a folder without it is no backup
    mongo/<db>/<coll>.bson              the documents, BSON one after another (mongodump's layout,
    mongo/<db>/<coll>.metadata.json     so mongorestore reads it too); indexes in canonical Extended JSON
    objects/<bucket>.jsonl              one line per object: key, size, sha256, content type, metadata
    blobs/<sha256[:2]>/<sha256>         the objects' bytes, stored once per content

The copy is taken in this order (docs/operations.md, "Backup and restore", says why):

1. Kafka's committed consumer offsets (Tansu keeps them in its S3 bucket, ``.../groups/``);
2. every MongoDB database of the platform, in ONE snapshot transaction (a point in time);
3. every other bucket's objects;
4. Kafka's topics: metadata and partition watermarks, then each partition's record batches below the
   watermark that was copied.

Offsets older than the documents make consumers re-read events whose effects the copy may lack (the
``processed_events`` ledger makes a re-read harmless); records newer than the documents hold every
event the copied outbox marks as published; objects newer than the documents hold every object a
document refers to (objects are written before the documents that name them; an extra object is
harmless).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

FORMAT = "openmaas-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})
_META_PREFIX = "x-amz-meta-"
_BATCH = re.compile(r"^(?P<partition>.*/partitions/[^/]+)/records/(?P<offset>\d+)\.batch$")
_WATERMARK = re.compile(r"^(?P<partition>.*/partitions/[^/]+)/watermark\.json$")
_INSERT_BATCH = 500
_CHUNK = 1024 * 1024


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says why and what to do."""


class Progress(Protocol):
    def phase(self, description: str, total: int | None) -> None: ...
    def advance(self, amount: int = 1) -> None: ...


class _Silent:
    def phase(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class Endpoints:
    """Where the embedded servers listen and the S3 credentials (from the data folder)."""

    mongo_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    kafka_bucket: str

    def minio(self):  # -> minio.Minio
        from minio import Minio

        return Minio(self.s3_endpoint, access_key=self.s3_access_key, secret_key=self.s3_secret_key,
                     secure=False, region="us-east-1")

    def mongo(self):  # -> pymongo.MongoClient
        import pymongo

        return pymongo.MongoClient(self.mongo_url, serverSelectionTimeoutMS=10_000)


# --------------------------------------------------------------------------------------------
# reaching the servers of a data folder
# --------------------------------------------------------------------------------------------

def _in_use(data_dir: Path) -> bool:
    """Whether an EmbeddedServers (``maas up``) holds the data folder's lock now."""
    lock = data_dir / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def servers_of(data_dir: Path) -> Iterator[Endpoints]:
    """The servers of a data folder: the running ones of ``maas up``, or (when nothing runs there)
    its S3 and MongoDB servers started for the time of the backup (Kafka's data is in S3)."""
    from services.lib.embedded.servers import EmbeddedServers

    data_dir = data_dir.expanduser().resolve()
    if not (data_dir / "credentials.json").exists():
        raise BackupError(f"{data_dir} is no data folder of `maas up` (it has no credentials.json)")
    if _in_use(data_dir):
        try:
            endpoints = json.loads((data_dir / "endpoints.json").read_text())
            credentials = json.loads((data_dir / "credentials.json").read_text())
            running = Endpoints(mongo_url=endpoints["mongo"], s3_endpoint=endpoints["s3"],
                                s3_access_key=credentials["s3_access_key"],
                                s3_secret_key=credentials["s3_secret_key"], kafka_bucket=endpoints["kafka_bucket"])
        except (OSError, ValueError, KeyError) as exc:
            raise BackupError(f"{data_dir} is in use, but its endpoints.json cannot be read ({exc}); "
                              "is it a `maas up` of an older version? Restart it and try again") from None
        yield running
        return
    servers = EmbeddedServers(data_dir)
    servers.start(only=("s3", "mongo"))
    try:
        assert servers.s3_access_key is not None and servers.s3_secret_key is not None
        yield Endpoints(mongo_url=servers.mongo_url, s3_endpoint=servers.s3_endpoint,
                        s3_access_key=servers.s3_access_key, s3_secret_key=servers.s3_secret_key,
                        kafka_bucket=servers.kafka_bucket)
    finally:
        servers.stop()


# --------------------------------------------------------------------------------------------
# backup
# --------------------------------------------------------------------------------------------

class _Writer:
    """The files of one backup folder, and what the manifest says of them."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.mongo: dict[str, dict[str, dict[str, Any]]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self._indexes: dict[str, Any] = {}

    def blob(self, stream) -> tuple[str, int]:
        """Copy a stream into blobs/ by its SHA-256; returns (sha256, size)."""
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.dest / "blobs", prefix=".part-")
        with os.fdopen(fd, "wb") as f:
            for chunk in stream:
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
        sha = digest.hexdigest()
        target = self.dest / "blobs" / sha[:2] / sha
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp, target)
        return sha, size

    def index(self, bucket: str):
        if bucket not in self._indexes:
            self._indexes[bucket] = (self.dest / "objects" / f"{bucket}.jsonl").open("a", encoding="utf-8")
            self.objects[bucket] = {"objects": 0, "bytes": 0}
        return self._indexes[bucket]

    def close(self) -> None:
        for f in self._indexes.values():
            f.close()
        self._indexes.clear()
        for bucket, entry in self.objects.items():
            entry["index_sha256"] = _sha256_file(self.dest / "objects" / f"{bucket}.jsonl")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_object(client, writer: _Writer, bucket: str, key: str) -> dict | None:
    """One object into the backup (bytes, content type, user metadata); its index line, or None if it
    vanished meanwhile."""
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":   # deleted after the listing: as if listed a moment later
            return None
        raise
    try:
        sha, size = writer.blob(response.stream(_CHUNK))
        headers = {k.lower(): v for k, v in response.headers.items()}
    finally:
        response.close()
        response.release_conn()
    line = {"key": key, "size": size, "sha256": sha,
            "content_type": headers.get("content-type", "application/octet-stream"),
            "metadata": {k: v for k, v in sorted(headers.items()) if k.startswith(_META_PREFIX)}}
    writer.index(bucket).write(json.dumps(line, sort_keys=True) + "\n")
    writer.objects[bucket]["objects"] += 1
    writer.objects[bucket]["bytes"] += size
    return line


def _copy_keys(client, writer: _Writer, bucket: str, keys: list[str], progress: Progress, what: str) -> None:
    progress.phase(what, len(keys))
    writer.index(bucket)   # an empty bucket is in the backup too
    for key in keys:
        _copy_object(client, writer, bucket, key)
        progress.advance()


def _keys(client, bucket: str) -> list[str]:
    return sorted(o.object_name for o in client.list_objects(bucket, recursive=True) if not o.is_dir)


def _copy_mongo(mongo, writer: _Writer, progress: Progress) -> None:
    """Every collection of every non-system database, read in one snapshot transaction."""
    import bson
    from bson import json_util
    from pymongo.read_concern import ReadConcern

    plan: list[tuple[str, str, list[dict]]] = []
    for db_name in sorted(set(mongo.list_database_names()) - SYSTEM_DATABASES):
        db = mongo[db_name]
        for info in sorted(db.list_collections(), key=lambda i: i["name"]):
            if info.get("type", "collection") != "collection" or info["name"].startswith("system."):
                continue
            # listIndexes is not allowed inside a transaction; indexes change only at a service's start.
            plan.append((db_name, info["name"], list(db[info["name"]].list_indexes())))
    progress.phase("MongoDB", len(plan))
    with mongo.start_session() as session, session.start_transaction(read_concern=ReadConcern("snapshot")):
        for db_name, name, indexes in plan:
            folder = writer.dest / "mongo" / db_name
            folder.mkdir(parents=True, exist_ok=True)
            count = 0
            with (folder / f"{name}.bson").open("wb") as f:
                for document in mongo[db_name][name].find({}, session=session):
                    f.write(bson.encode(document))
                    count += 1
            metadata = {"collectionName": name, "type": "collection", "options": {},
                        "indexes": [dict(index) for index in indexes]}
            (folder / f"{name}.metadata.json").write_text(
                json_util.dumps(metadata, json_options=json_util.CANONICAL_JSON_OPTIONS, indent=1) + "\n")
            writer.mongo.setdefault(db_name, {})[name] = {
                "documents": count, "sha256": _sha256_file(folder / f"{name}.bson"),
                "metadata_sha256": _sha256_file(folder / f"{name}.metadata.json")}
            progress.advance()


def _kafka_topics(client, writer: _Writer, bucket: str, progress: Progress) -> None:
    """Tansu's topics: metadata and watermarks first, then the record batches below the copied
    watermark of their partition (a batch written after it is not in the copy, and the restored
    broker appends there). A layout this does not know is copied as it is."""
    first = [k for k in _keys(client, bucket) if "/groups/" not in k and not _BATCH.match(k)]
    progress.phase(f"Kafka topics ({bucket})", len(first))
    writer.index(bucket)
    high: dict[str, int] = {}
    for key in first:
        line = _copy_object(client, writer, bucket, key)
        mark = _WATERMARK.match(key)
        if mark and line is not None:
            blob = writer.dest / "blobs" / line["sha256"][:2] / line["sha256"]
            with contextlib.suppress(ValueError, TypeError, KeyError):
                high[mark["partition"]] = int(json.loads(blob.read_bytes())["high"] or 0)
        progress.advance()
    batches = []
    for key in _keys(client, bucket):   # listed after the watermarks were read: no batch below them is missing
        match = _BATCH.match(key)
        if match and int(match["offset"]) < high.get(match["partition"], 1 << 62):
            batches.append(key)
    _copy_keys(client, writer, bucket, batches, progress, f"Kafka records ({bucket})")


def backup(endpoints: Endpoints, dest: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Copy the servers' data into ``dest`` (a new or empty folder); returns the manifest."""
    progress = progress or _Silent()
    dest = dest.expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} is not an empty folder: a backup goes into a new or empty one")
    created = not dest.exists()
    for sub in ("mongo", "objects", "blobs"):
        (dest / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest, 0o700)   # every tenant's data: owner-only, like the data folder
    started = datetime.now(UTC)
    client, mongo = endpoints.minio(), endpoints.mongo()
    writer = _Writer(dest)
    try:
        kafka = endpoints.kafka_bucket if client.bucket_exists(endpoints.kafka_bucket) else None
        if kafka:
            groups = [k for k in _keys(client, kafka) if "/groups/" in k]
            _copy_keys(client, writer, kafka, groups, progress, "Kafka committed offsets")
        _copy_mongo(mongo, writer, progress)
        for bucket in sorted(b.name for b in client.list_buckets()):
            if bucket != kafka:
                _copy_keys(client, writer, bucket, _keys(client, bucket), progress, f"objects: {bucket}")
        if kafka:
            _kafka_topics(client, writer, kafka, progress)
        writer.close()
    except BaseException:
        writer.close()
        # no half backup left behind to be mistaken for one, or to block the next try at the same place
        shutil.rmtree(dest, ignore_errors=True) if created else _empty(dest)
        raise
    finally:
        mongo.close()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "started_at": started.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(), "kafka_bucket": kafka,
                "order": ["kafka committed offsets", "mongodb (one snapshot)", "objects", "kafka topics"],
                "mongo": writer.mongo, "objects": writer.objects}
    tmp = dest / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, dest / MANIFEST)
    return manifest


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------

def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of a backup folder, checked: its format and version, and every file's checksum."""
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} holds no {MANIFEST}: not a backup, or one that did not finish") from None
    except ValueError as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format must be {FORMAT!r}, found {manifest.get('format') if isinstance(manifest, dict) else manifest!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{path}: format_version {manifest.get('format_version')!r} is not one this version "
                          f"reads ({FORMAT_VERSION}); restore it with the OpenMaaS version that wrote it")
    for db_name, collections in manifest["mongo"].items():
        for name, entry in collections.items():
            for suffix, key in ((".bson", "sha256"), (".metadata.json", "metadata_sha256")):
                _check(source / "mongo" / db_name / f"{name}{suffix}", entry[key])
    for bucket, entry in manifest["objects"].items():
        _check(source / "objects" / f"{bucket}.jsonl", entry["index_sha256"])
    return manifest


def _check(path: Path, sha256: str) -> None:
    if not path.is_file():
        raise BackupError(f"the backup is incomplete: {path} is missing")
    if _sha256_file(path) != sha256:
        raise BackupError(f"the backup is damaged: {path} does not match its checksum in the manifest")


def _objects_of(source: Path, bucket: str) -> list[dict]:
    return [json.loads(line) for line in
            (source / "objects" / f"{bucket}.jsonl").read_text(encoding="utf-8").splitlines() if line]


def _restore_mongo(mongo, source: Path, manifest: dict, progress: Progress) -> None:
    import bson
    from bson import json_util
    from pymongo import IndexModel

    plan = [(db, name) for db, collections in sorted(manifest["mongo"].items()) for name in sorted(collections)]
    progress.phase("MongoDB", len(plan))
    for db_name, name in plan:
        collection = mongo[db_name][name]
        mongo[db_name].create_collection(name)
        with (source / "mongo" / db_name / f"{name}.bson").open("rb") as f:
            batch = []
            for document in bson.decode_file_iter(f):
                batch.append(document)
                if len(batch) >= _INSERT_BATCH:
                    collection.insert_many(batch, ordered=True)
                    batch = []
            if batch:
                collection.insert_many(batch, ordered=True)
        metadata = json_util.loads((source / "mongo" / db_name / f"{name}.metadata.json").read_text())
        models = []
        for index in metadata.get("indexes", []):
            options = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
            if options.get("name") != "_id_":
                models.append(IndexModel(list(index["key"].items()), **options))
        if models:
            collection.create_indexes(models)
        progress.advance()


def _restore_objects(client, source: Path, manifest: dict, progress: Progress) -> None:
    for bucket in sorted(manifest["objects"]):
        objects = _objects_of(source, bucket)
        progress.phase(f"objects: {bucket}", len(objects))
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        for entry in objects:
            blob = source / "blobs" / entry["sha256"][:2] / entry["sha256"]
            if not blob.is_file() or blob.stat().st_size != entry["size"]:
                raise BackupError(f"the backup is damaged: the bytes of {bucket}/{entry['key']} ({blob}) are "
                                  "missing or of the wrong size")
            with blob.open("rb") as f:
                client.put_object(bucket, entry["key"], f, entry["size"], content_type=entry["content_type"],
                                  metadata=entry["metadata"] or None)
            progress.advance()


def verify(endpoints: Endpoints, manifest: dict[str, Any]) -> list[str]:
    """What differs between the servers and the manifest's counts (empty: all there)."""
    problems = []
    client, mongo = endpoints.minio(), endpoints.mongo()
    try:
        for db_name, collections in manifest["mongo"].items():
            for name, entry in collections.items():
                found = mongo[db_name][name].count_documents({})
                if found != entry["documents"]:
                    problems.append(f"{db_name}.{name}: {found} documents, the backup has {entry['documents']}")
        for bucket, entry in manifest["objects"].items():
            found = len(_keys(client, bucket)) if client.bucket_exists(bucket) else 0
            if found != entry["objects"]:
                problems.append(f"bucket {bucket}: {found} objects, the backup has {entry['objects']}")
    finally:
        mongo.close()
    return problems


def restore(source: Path, data_dir: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Bring a new (or empty) data folder back to the backup in ``source``; returns the manifest.

    Its S3 and MongoDB servers are started for the time of the restore (Kafka stays stopped: its
    state is written into its bucket); ``maas up --data-dir`` then starts the platform on it."""
    from services.lib.embedded.servers import EmbeddedServers

    progress = progress or _Silent()
    source, data_dir = source.expanduser().resolve(), data_dir.expanduser().resolve()
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore into a new or empty data folder "
                          "(a restore never mixes with existing data)")
    manifest = read_manifest(source)
    created = not data_dir.exists()
    servers = EmbeddedServers(data_dir)
    try:
        servers.start(only=("s3", "mongo"))
        assert servers.s3_access_key is not None and servers.s3_secret_key is not None
        endpoints = Endpoints(mongo_url=servers.mongo_url, s3_endpoint=servers.s3_endpoint,
                              s3_access_key=servers.s3_access_key, s3_secret_key=servers.s3_secret_key,
                              kafka_bucket=manifest.get("kafka_bucket") or servers.kafka_bucket)
        mongo = endpoints.mongo()
        try:
            _restore_mongo(mongo, source, manifest, progress)
        finally:
            mongo.close()
        _restore_objects(endpoints.minio(), source, manifest, progress)
        problems = verify(endpoints, manifest)
        if problems:
            raise BackupError("the restored data differs from the backup: " + "; ".join(problems))
    except BaseException:
        servers.stop()
        # a failed restore leaves no half-restored folder that `maas up` would start on
        shutil.rmtree(data_dir, ignore_errors=True) if created else _empty(data_dir)
        raise
    servers.stop()
    return manifest


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


__all__ = ["BackupError", "Endpoints", "FORMAT", "FORMAT_VERSION", "Progress", "backup", "read_manifest",
           "restore", "servers_of", "verify"]
