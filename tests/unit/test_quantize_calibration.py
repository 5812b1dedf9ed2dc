"""Calibration / held-out text: the built-in sets, user files in every accepted format, token windows."""
from __future__ import annotations

import json

import pytest

from services.lib.mlkit.quantize.calibration import (CHAT_SAMPLES, CalibrationDataError, builtin_calibration_texts,
                                                 chat_samples, heldout_texts, parse_calibration_file, token_windows)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from services.lib.mlkit.tiny import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_builtin_sets_are_bilingual_and_disjoint():
    calibration, heldout = builtin_calibration_texts(), heldout_texts()
    assert len(calibration) >= 20 and len(heldout) >= 10
    for texts in (calibration, heldout):
        joined = "\n".join(texts)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in joined)      # Chinese
        assert "the" in joined and "<|im_start|>" in joined          # English prose and chat turns
    assert not set(calibration) & set(heldout)


def test_txt_documents_are_split_on_blank_lines():
    texts = parse_calibration_file("c.txt", "first doc\nline two\n\n\nsecond doc\n".encode())
    assert texts == ["first doc\nline two", "second doc"]


@pytest.mark.parametrize("record, expected", [
    ({"text": "plain pretraining text"}, "plain pretraining text"),
    ({"instruction": "Translate", "input": "hello", "output": "你好"}, "Translate\nhello\n你好"),
    ({"conversation": [{"human": "hi", "assistant": "hello!"}]}, "hi\nhello!"),
    ({"conversations": [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "a."}]}, "human\nq?\ngpt\na."),
    ({"messages": [{"role": "user", "content": "x"}]}, "user\nx"),
])
def test_jsonl_records_of_every_format_give_their_text(record, expected):
    assert parse_calibration_file("c.jsonl", (json.dumps(record) + "\n").encode()) == [expected]


def test_json_array_is_accepted():
    data = json.dumps([{"text": "a"}, {"text": "b"}]).encode()
    assert parse_calibration_file("c.json", data) == ["a", "b"]


@pytest.mark.parametrize("name, data, message", [
    ("c.jsonl", b'{"text": "ok"}\n{broken\n', "c.jsonl line 2: malformed JSON"),
    ("c.jsonl", b'{"text": "ok"}\n42\n', "c.jsonl line 2: expected a JSON object"),
    ("c.jsonl", b'{"n": 1}\n', "c.jsonl line 1: the record holds no text"),
    ("c.json", b'{"text": "not an array"}', "expected a JSON array"),
    ("c.json", b'[\n{"text": "a"},\n{oops}\n]', "c.json line 3: malformed JSON"),
    ("c.csv", b"a,b\n", "unsupported file type '.csv'"),
    ("c.txt", b"\xff\xfe\xfa", "not UTF-8"),
    ("c.txt", b"\n\n  \n", "holds no text"),
])
def test_unusable_files_name_the_file_line_and_rule(name, data, message):
    with pytest.raises(CalibrationDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_calibration_file(name, data)


def test_token_windows(tokenizer):
    texts = builtin_calibration_texts()
    windows = token_windows(tokenizer, texts, seq_len=128)
    equal = token_windows(tokenizer, texts, seq_len=128, equal=True, max_tokens=1000)
    assert all(len(w) <= 128 for w in windows) and len(windows[-1]) >= 16
    assert [len(w) for w in equal] == [128] * 7          # 1000 tokens -> 7 full windows, the rest dropped
    assert equal[0] == windows[0]
    # Documents follow each other with a blank line between them.
    separator = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    first = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert windows[0][:len(first) + len(separator)] == (first + separator)[:128]


def test_chat_samples_follow_the_chat_template(tokenizer):
    prompts, conversations = chat_samples(tokenizer)
    assert len(prompts) == len(conversations) == len(CHAT_SAMPLES)
    for (question, answer), prompt, conversation in zip(CHAT_SAMPLES, prompts, conversations):
        assert conversation[:len(prompt)] == prompt and len(conversation) > len(prompt)
        assert question in tokenizer.decode(prompt) and answer in tokenizer.decode(conversation[len(prompt):])
        assert tokenizer.decode(prompt) != question   # the template's markup is there


def test_no_chat_samples_without_a_chat_template(tokenizer):
    import copy

    plain = copy.copy(tokenizer)
    plain.chat_template = None
    assert chat_samples(plain) == ([], [])
