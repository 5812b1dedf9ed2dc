"""Uploads of local files and folders: object paths, skipped files, the bytes that go out."""
from __future__ import annotations

import httpx
import pytest

from services.apps.cli.client import CliError, Client
from services.apps.cli.upload import files_of, object_path, upload


def test_object_paths_of_folders_and_single_files():
    assert object_path("b/models/m1", "config.json", folder=True) == "b/models/m1/config.json"
    assert object_path("b/data/train.jsonl", "local.jsonl", folder=False) == "b/data/train.jsonl"
    assert object_path("b/data/", "local.jsonl", folder=False) == "b/data/local.jsonl"
    assert object_path("b", "local.jsonl", folder=False) == "b/local.jsonl"


def test_folder_files_keep_relative_paths_and_skip_hidden_ones(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ("config.json", "sub/extra.txt", ".DS_Store", ".git/HEAD"):
        (tmp_path / name).write_text(name)
    assert [name for _, name in files_of(tmp_path)] == ["config.json", "sub/extra.txt"]
    with pytest.raises(CliError, match="does not exist"):
        files_of(tmp_path / "missing")


def test_upload_sends_each_file_with_its_length(tmp_path):
    (tmp_path / "config.json").write_bytes(b"{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * (3 * 1024 * 1024 + 5))  # several chunks
    received = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        received[request.url.path] = (int(request.headers["content-length"]), len(body))
        return httpx.Response(201, json={"path": request.url.path, "size": len(body)})

    c = Client("http://maas", token="t")
    c.http = httpx.Client(base_url="http://maas", transport=httpx.MockTransport(handler))
    results = upload(c, tmp_path, "bucket/uploads/m1", quiet=True)
    assert received == {"/api/v1/storage/objects/bucket/uploads/m1/config.json": (2, 2),
                        "/api/v1/storage/objects/bucket/uploads/m1/model.safetensors": (3 * 1024 * 1024 + 5,) * 2}
    assert [r["size"] for r in results] == [2, 3 * 1024 * 1024 + 5]
