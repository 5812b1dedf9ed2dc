"""Issue 14.4: a .jsonl dataset is validated as a stream, never held whole.

The file comes in chunks that cut lines anywhere; line numbers, messages and the normalised examples
must be exactly what reading the file whole gives, and memory must follow the longest line, not the
file.
"""
from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from contextlib import closing
from typing import Iterator

import pytest
from minio.helpers import read_part_data

from services.lib.common.settings import Settings
from services.lib.common.objectstore import ObjectPath, ObjectStore
from services.tuning import datasets
from services.tuning.datasets import (DatasetInvalid, DatasetRejected, check_whole_file_size, jsonl_line,
                                      normalise_dataset, parse_dataset, split_lines)

LORA = dict(tune_type="lora", template_id="qwen2-7b")


def alpaca(i: int) -> dict:
    return {"instruction": f"question {i}", "input": "", "output": f"answer {i}"}


def expected_example(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def run(chunks, *, filename="d.jsonl", fmt="alpaca", **kw):
    """(summary, output bytes) of the streaming path."""
    produced = normalise_dataset(chunks, filename=filename, dataset_format=fmt, **{**LORA, **kw})
    out = bytearray()
    while True:
        try:
            out += next(produced)
        except StopIteration as done:
            return done.value, bytes(out)


def issues(chunks, **kw) -> list[tuple[int, str, str]]:
    with pytest.raises(DatasetInvalid) as info:
        run(chunks, **kw)
    return [(i.line, i.rule, i.message) for i in info.value.issues]


# --- the examples and line numbers do not depend on where chunks end -------------------------------

@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096, 10 ** 9])
def test_examples_written_are_the_normalised_lines_whatever_the_chunk_size(chunk_size):
    data = b"".join(jsonl_line(alpaca(i)) for i in range(500))
    parsed, out = run(chunked(data, chunk_size))
    assert parsed.sample_count == 500
    assert out == b"".join(jsonl_line(expected_example(i)) for i in range(500))


@pytest.mark.parametrize("chunk_size", [1, 5, 33, 10 ** 9])
def test_bad_lines_keep_their_numbers_across_chunk_boundaries(chunk_size):
    lines = [jsonl_line(alpaca(i)) if i % 97 else b'{"instruction": "x"\n' for i in range(1, 1001)]
    lines[499] = jsonl_line({"instruction": "q"})           # line 500: a record with a missing field
    malformed = "malformed JSON (Expecting ',' delimiter at column 20)"
    assert issues(chunked(b"".join(lines), chunk_size)) == (
        [(n, "malformed_json", malformed) for n in range(97, 500, 97)]
        + [(500, "missing_field", "missing field 'output'")]
        + [(n, "malformed_json", malformed) for n in range(582, 1001, 97)])


def test_examples_stop_at_the_first_bad_line_but_every_line_is_still_checked():
    data = jsonl_line(alpaca(1)) + b"{\n" + jsonl_line(alpaca(3)) + b"[]\n"
    produced = normalise_dataset(chunked(data, 3), filename="d.jsonl", dataset_format="alpaca", **LORA)
    assert next(produced) == jsonl_line(expected_example(1))
    with pytest.raises(DatasetInvalid) as info:
        next(produced)   # line 3 is valid but no longer written: the upload will be thrown away
    assert [(i.line, i.rule) for i in info.value.issues] == [(2, "malformed_json"), (4, "not_an_object")]


def test_crlf_line_endings_a_bom_and_a_last_line_without_newline():
    lines = [json.dumps(alpaca(i)).encode() for i in range(1, 5)]
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines[:2] + [b"{oops"] + lines[2:])   # no newline after the last
    for size in (1, 2, 4, 10 ** 9):   # 1 and 2: the BOM itself is cut in pieces
        assert issues(chunked(data, size)) == [
            (3, "malformed_json", "malformed JSON (Expecting property name enclosed in double quotes at column 2)")]
    parsed, out = run(chunked(data.replace(b"{oops\r\n", b""), 2))
    assert parsed.sample_count == 4
    assert out == b"".join(jsonl_line(expected_example(i)) for i in range(1, 5))


def test_a_line_past_the_cap_is_reported_with_its_number_and_not_kept(monkeypatch):
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 100)
    long = json.dumps({"instruction": "q" * 200, "output": "a"}).encode()
    data = jsonl_line(alpaca(1)) + long + b"\n" + jsonl_line(alpaca(3)) + long   # the last line has no newline
    message = "is longer than 100 bytes, the most one sample line may have"
    for size in (1, 30, 150, 10 ** 9):
        assert issues(chunked(data, size)) == [(2, "line_too_long", message), (4, "line_too_long", message)]


def test_split_lines_keeps_a_line_of_exactly_the_cap_and_drops_one_byte_more():
    data = b"x" * 10 + b"\n" + b"y" * 11 + b"\n\n" + b"z" * 3
    for size in (1, 4, 11, 10 ** 9):
        assert list(split_lines(chunked(data, size), max_line_bytes=10)) == [
            (1, b"x" * 10), (2, None), (3, b""), (4, b"zzz")]
    assert list(split_lines([b"a\n"], max_line_bytes=10)) == [(1, b"a"), (2, b"")]
    assert list(split_lines([], max_line_bytes=10)) == [(1, b"")]


def test_streaming_memory_follows_the_chunk_and_the_line_not_the_file():
    """A ~2 MB file in 32 KiB chunks: at the peak, a small part of it is allocated (holding the file
    whole, as reading it with get_bytes did, would be more than all of it)."""
    count = 25_000
    source_bytes = 0

    def source() -> Iterator[bytes]:   # made on the fly: the test never holds the file either
        nonlocal source_bytes
        batch = bytearray()
        for i in range(count):
            batch += jsonl_line(alpaca(i))
            if len(batch) >= 32 * 1024:
                source_bytes += len(batch)
                yield bytes(batch)
                batch.clear()
        source_bytes += len(batch)
        yield bytes(batch)

    digest, expected = hashlib.sha256(), hashlib.sha256()
    for i in range(count):
        expected.update(jsonl_line(expected_example(i)))
    produced = normalise_dataset(source(), filename="d.jsonl", dataset_format="alpaca", **LORA)
    tracemalloc.start()
    try:
        while True:
            try:
                digest.update(next(produced))
            except StopIteration as done:
                parsed = done.value
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.sample_count == count and digest.hexdigest() == expected.hexdigest()
    assert source_bytes > 1024 ** 2
    assert peak < source_bytes / 4, (peak, source_bytes)


# --- kinds read whole ------------------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["d.json", "t.csv", "t.xlsx"])
def test_kinds_read_whole_are_refused_past_their_cap_pointing_at_jsonl(monkeypatch, filename):
    monkeypatch.setattr(datasets, "MAX_WHOLE_FILE_BYTES", 1000)
    kind = datasets.file_kind(filename)
    with pytest.raises(DatasetRejected, match=r"is read whole, so it may be at most .* Use \.jsonl for larger"):
        check_whole_file_size(kind, 1001)
    check_whole_file_size(kind, 1000)
    check_whole_file_size(datasets.FileKind.jsonl, 10 ** 12)   # .jsonl streams: only the 5 GB limit applies
    # The file may have grown since it was listed: reading it counts too.
    with pytest.raises(DatasetRejected, match="this one has more than 1000 bytes") as info:
        run(chunked(b"x" * 1001, 100), filename=filename, fmt=None if kind.is_table else "alpaca")
    assert info.value.field == "dataset_path"


def test_parse_dataset_of_bytes_takes_the_same_path():
    data = jsonl_line(alpaca(1)) + b'{"instruction": 1, "output": "a"}\n'
    with pytest.raises(DatasetInvalid) as info:
        parse_dataset(data, filename="d.jsonl", dataset_format="alpaca", **LORA)
    assert [(i.line, i.message) for i in info.value.issues] == [(2, "'instruction' must be a string, got a number")]
    sink = io.BytesIO()
    assert parse_dataset(data[:-35], filename="d.jsonl", dataset_format="alpaca", sink=sink, **LORA).sample_count == 1
    assert sink.getvalue() == jsonl_line(expected_example(1))


# --- object store: download, validate and upload in one pass ---------------------------------------

class _Response:
    def __init__(self, data: bytes):
        self.data, self.closed, self.released = data, False, False

    def stream(self, amt):
        yield from chunked(self.data, amt)

    def close(self):
        self.closed = True

    def release_conn(self):
        self.released = True


class _FakeS3:
    """get_object / put_object as the minio client does them: put reads parts with minio's own helper."""

    def __init__(self, objects: dict[str, bytes], *, fail_after_parts: int | None = None):
        self.objects, self.fail_after_parts = objects, fail_after_parts
        self.responses: list[_Response] = []
        self.part_sizes: list[int] = []

    def get_object(self, bucket, key):
        self.responses.append(_Response(self.objects[key]))
        return self.responses[-1]

    def put_object(self, bucket, key, data, length, *, part_size, num_parallel_uploads, content_type):
        assert length == -1 and num_parallel_uploads == 1
        parts = []
        while part := read_part_data(data, part_size):
            parts.append(part)
            self.part_sizes.append(len(part))
            if self.fail_after_parts is not None and len(parts) >= self.fail_after_parts:
                raise ConnectionError("S3 went away")
        self.objects[key] = b"".join(parts)


def _store(client) -> ObjectStore:
    return ObjectStore(Settings(), client=client)


def _examples(store: ObjectStore, src: ObjectPath, summary: list):
    with closing(store.iter_object(src, chunk_size=1000)) as chunks:
        summary.append((yield from normalise_dataset(chunks, filename=src.key, dataset_format="alpaca", **LORA)))


async def test_put_iter_uploads_the_examples_in_full_parts(monkeypatch):
    monkeypatch.setattr("services.lib.common.objectstore.PART_SIZE", 4096)
    client = _FakeS3({"in.jsonl": b"".join(jsonl_line(alpaca(i)) for i in range(300))})
    store, summary = _store(client), []
    written = await store.put_iter(ObjectPath("b", "out.jsonl"), _examples(store, ObjectPath("b", "in.jsonl"), summary))
    expected = b"".join(jsonl_line(expected_example(i)) for i in range(300))
    assert client.objects["out.jsonl"] == expected and written == len(expected)
    assert summary[0].sample_count == 300
    assert set(client.part_sizes[:-1]) == {4096}   # reads fill whole parts from many small lines
    assert client.responses[0].closed and client.responses[0].released


async def test_put_iter_raises_the_dataset_error_as_it_was_and_writes_nothing():
    client = _FakeS3({"in.jsonl": jsonl_line(alpaca(1)) + b"{\n"})
    store = _store(client)
    with pytest.raises(DatasetInvalid) as info:
        await store.put_iter(ObjectPath("b", "out.jsonl"), _examples(store, ObjectPath("b", "in.jsonl"), []))
    assert [(i.line, i.rule) for i in info.value.issues] == [(2, "malformed_json")]
    assert "out.jsonl" not in client.objects and client.responses[0].released


async def test_a_failed_upload_releases_the_download(monkeypatch):
    monkeypatch.setattr("services.lib.common.objectstore.PART_SIZE", 1024)
    client = _FakeS3({"in.jsonl": b"".join(jsonl_line(alpaca(i)) for i in range(300))}, fail_after_parts=1)
    store = _store(client)
    with pytest.raises(ConnectionError):
        await store.put_iter(ObjectPath("b", "out.jsonl"), _examples(store, ObjectPath("b", "in.jsonl"), []))
    assert client.responses[0].closed and client.responses[0].released
