"""Object keys a user may name, and downloads that stay inside their folder (issue 14.8)."""
from __future__ import annotations

import pytest

from services.lib.common.objectstore import MAX_KEY_BYTES, ObjectPath


@pytest.mark.parametrize("key", ["", "folder/", "folder/model.safetensors", "a/b/c.json", "with space/and-dash_1.txt",
                                 "中文/数据.jsonl", "..hidden-ish/x", "x..y/z"])
def test_ordinary_keys_are_fine(key):
    assert ObjectPath("bucket", key).key_problem() is None


@pytest.mark.parametrize("key, rule", [
    ("../x", "'..'"), ("a/../../x", "'..'"), ("a/./b", "'..'"), ("..", "'..'"),
    ("/etc/passwd", "relative"), ("a\\..\\b", "relative"),
    ("bad\x00name", "control"), ("line\nbreak", "control"), ("del\x7f", "control"),
    ("a//b", "empty segments"), ("k" * (MAX_KEY_BYTES + 1), "bytes"),
])
def test_keys_that_could_escape_or_break_are_named(key, rule):
    problem = ObjectPath("bucket", key).key_problem()
    assert problem is not None and rule in problem


def test_parse_keeps_a_leading_slash_of_the_key_so_it_is_refused():
    assert ObjectPath.parse("bucket//etc/passwd").key_problem() is not None


class _Listing:
    def __init__(self, name: str):
        self.object_name, self.size, self.is_dir = name, 1, False


class _FakeS3:
    """Just enough of the minio client: a bucket holding keys written around the API (presigned PUTs)."""

    def __init__(self, keys: list[str]):
        self.keys, self.fetched = keys, []

    def list_objects(self, bucket, prefix=None, recursive=False):
        return [_Listing(k) for k in self.keys if k.startswith(prefix or "")]

    def fget_object(self, bucket, key, file_path):
        self.fetched.append(key)
        with open(file_path, "w") as fh:
            fh.write(key)


def _store(keys):
    from services.lib.common.objectstore import ObjectStore
    from services.lib.common.settings import Settings

    return ObjectStore(Settings(), client=_FakeS3(keys))


async def test_a_download_never_writes_outside_its_folder(tmp_path):
    store = _store(["model/config.json", "model/../../escaped.txt"])
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(ValueError, match="cannot be a file name inside the download folder"):
        await store.download_prefix(ObjectPath("b", "model/"), dest)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()


async def test_a_download_of_ordinary_keys_keeps_their_names(tmp_path):
    store = _store(["model/config.json", "model/sub/weights.bin"])
    files = await store.download_prefix(ObjectPath("b", "model"), tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files) == ["config.json", "sub/weights.bin"]
