"""The backup folder's checks and the Kafka cut at the copied watermark (services/lib/embedded/backup.py),
on an in-memory S3; the whole backup and restore on real servers is tests/integration/test_backup_restore.py."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.lib.embedded import backup as bk

PART = "clusters/tansu_cluster/topics/events/partitions/0000000000"


class _Response:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = {"Content-Type": "application/octet-stream", "x-amz-meta-origin": "test"}

    def stream(self, size: int):
        yield self.body

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class _S3:
    """list_objects and get_object of one bucket; ``after_get`` runs once after the first read of a key."""

    def __init__(self, objects: dict[str, bytes], after_get: dict[str, dict[str, bytes]] | None = None) -> None:
        self.objects = dict(objects)
        self.after_get = after_get or {}

    def list_objects(self, bucket: str, recursive: bool = True):
        return [SimpleNamespace(object_name=k, is_dir=False) for k in sorted(self.objects)]

    def get_object(self, bucket: str, key: str) -> _Response:
        body = self.objects[key]
        self.objects.update(self.after_get.pop(key, {}))
        return _Response(body)


class _Silent:
    def phase(self, description, total):
        pass

    def advance(self, amount=1):
        pass


def _writer(tmp_path: Path) -> bk._Writer:
    for sub in ("mongo", "objects", "blobs"):
        (tmp_path / sub).mkdir()
    return bk._Writer(tmp_path)


def _keys_in(tmp_path: Path, bucket: str) -> list[str]:
    lines = (tmp_path / "objects" / f"{bucket}.jsonl").read_text().splitlines()
    return [json.loads(line)["key"] for line in lines]


def test_kafka_records_are_cut_at_the_copied_watermark(tmp_path):
    """A batch the broker writes after its watermark was copied is left out (the restored broker appends
    there); those below the watermark are in, with their content type and metadata."""
    s3 = _S3({
        "clusters/tansu_cluster/meta.json": b"{}",
        f"{PART}/watermark.json": b'{"low":null,"high":2,"timestamps":null}',
        f"{PART}/records/00000000000000000000.batch": b"r0",
        f"{PART}/records/00000000000000000001.batch": b"r1",
    }, after_get={f"{PART}/watermark.json": {f"{PART}/records/00000000000000000002.batch": b"r2",
                                              f"{PART}/watermark.json": b'{"low":null,"high":3}'}})
    writer = _writer(tmp_path)
    bk._kafka_topics(s3, writer, "maas-kafka", _Silent())
    writer.close()
    keys = _keys_in(tmp_path, "maas-kafka")
    assert keys == ["clusters/tansu_cluster/meta.json", f"{PART}/watermark.json",
                    f"{PART}/records/00000000000000000000.batch", f"{PART}/records/00000000000000000001.batch"]
    line = json.loads((tmp_path / "objects" / "maas-kafka.jsonl").read_text().splitlines()[0])
    assert line["metadata"] == {"x-amz-meta-origin": "test"} and line["content_type"] == "application/octet-stream"


def test_a_partition_without_records_keeps_none(tmp_path):
    s3 = _S3({f"{PART}/watermark.json": b'{"low":null,"high":null,"timestamps":null}',
              f"{PART}/records/00000000000000000000.batch": b"written after the watermark"})
    writer = _writer(tmp_path)
    bk._kafka_topics(s3, writer, "maas-kafka", _Silent())
    writer.close()
    assert _keys_in(tmp_path, "maas-kafka") == [f"{PART}/watermark.json"]


def _backup_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "backup"
    (folder / "mongo" / "maas").mkdir(parents=True)
    (folder / "objects").mkdir()
    (folder / "mongo" / "maas" / "models.bson").write_bytes(b"")
    (folder / "mongo" / "maas" / "models.metadata.json").write_text('{"indexes": []}')
    (folder / "objects" / "maas-system.jsonl").write_text("")
    manifest = {"format": bk.FORMAT, "format_version": bk.FORMAT_VERSION, "finished_at": "x", "kafka_bucket": None,
                "mongo": {"maas": {"models": {
                    "documents": 0, "sha256": bk._sha256_file(folder / "mongo" / "maas" / "models.bson"),
                    "metadata_sha256": bk._sha256_file(folder / "mongo" / "maas" / "models.metadata.json")}}},
                "objects": {"maas-system": {"objects": 0, "bytes": 0,
                                            "index_sha256": bk._sha256_file(folder / "objects" / "maas-system.jsonl")}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_sound_manifest_is_read(tmp_path):
    assert bk.read_manifest(_backup_folder(tmp_path))["format_version"] == bk.FORMAT_VERSION


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "manifest.json").unlink(), "holds no manifest.json"),
    (lambda f: (f / "manifest.json").write_text("{"), "not valid JSON"),
    (lambda f: _edit(f, format="something-else"), "format must be 'openmaas-backup'"),
    (lambda f: _edit(f, format_version=99), "format_version 99 is not one this version reads"),
    (lambda f: (f / "mongo" / "maas" / "models.bson").write_bytes(b"\x05"), "does not match its checksum"),
    (lambda f: (f / "objects" / "maas-system.jsonl").unlink(), "is missing"),
])
def test_a_wrong_backup_is_refused_with_the_reason(tmp_path, change, message):
    folder = _backup_folder(tmp_path)
    change(folder)
    with pytest.raises(bk.BackupError, match=message):
        bk.read_manifest(folder)


def _edit(folder: Path, **fields) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **fields}))


def test_restore_refuses_a_folder_with_data_before_reading_the_backup(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(bk.BackupError, match="is not empty"):
        bk.restore(tmp_path / "no-backup-here", target)
    assert (target / "something").read_text() == "x"


def test_backup_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "old").write_text("x")
    endpoints = bk.Endpoints(mongo_url="mongodb://127.0.0.1:1", s3_endpoint="127.0.0.1:1", s3_access_key="a",
                             s3_secret_key="b", kafka_bucket="maas-kafka")
    with pytest.raises(bk.BackupError, match="not an empty folder"):
        bk.backup(endpoints, tmp_path)
