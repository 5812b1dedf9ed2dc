"""Calibration and held-out text for the compression jobs.

The built-in calibration set (``data/calibration.txt``, ~2.9k SmolLM2 tokens of varied English and
Chinese prose, chat turns, code and maths) ships with the package, so a job needs no download. A
user may name their own dataset instead: ``.txt`` (documents separated by blank lines) or
``.jsonl`` / ``.json`` records in any of the formats the platform accepts for tuning (a ``text``
field, Alpaca, MOSS, ShareGPT, OpenAI ``messages``); every string the record holds is used.
``data/heldout.txt`` is separate text the jobs measure perplexity on, before and after.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

SUFFIXES = (".txt", ".jsonl", ".json")
MIN_CALIBRATION_TOKENS = 64


class CalibrationDataError(ValueError):
    """A user calibration file that cannot be used; the message names the file, the line and the rule."""


def _builtin(name: str) -> str:
    return resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")


def _documents(text: str) -> list[str]:
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def builtin_calibration_texts() -> list[str]:
    return _documents(_builtin("calibration.txt"))


def heldout_texts() -> list[str]:
    return _documents(_builtin("heldout.txt"))


def _strings(value: Any) -> list[str]:
    """Every string inside a record, in order (field names are not text)."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _record_text(record: Any, *, where: str) -> str:
    if not isinstance(record, (dict, list)):
        raise CalibrationDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    parts = _strings(record)
    if not parts:
        raise CalibrationDataError(f"{where}: the record holds no text")
    return "\n".join(parts)


def parse_calibration_file(name: str, data: bytes) -> list[str]:
    """Texts of a user calibration file; CalibrationDataError on anything unusable."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise CalibrationDataError(f"{name}: unsupported file type '{suffix or '(none)'}'; "
                                   f"use one of {', '.join(SUFFIXES)}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CalibrationDataError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    if suffix == ".txt":
        texts = _documents(text)
    elif suffix == ".jsonl":
        texts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CalibrationDataError(f"{name} line {number}: malformed JSON ({exc.msg})") from None
            texts.append(_record_text(record, where=f"{name} line {number}"))
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationDataError(f"{name} line {exc.lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(records, list):
            raise CalibrationDataError(f"{name}: expected a JSON array of records")
        texts = [_record_text(r, where=f"{name} record {i}") for i, r in enumerate(records, 1)]
    if not texts:
        raise CalibrationDataError(f"{name}: holds no text")
    return texts


def token_windows(tokenizer, texts: list[str], *, seq_len: int, max_tokens: int | None = None,
                  equal: bool = False) -> list[list[int]]:
    """The texts as one token stream cut into windows of at most ``seq_len`` tokens.

    Documents are joined with a blank line, as they would follow each other in a context. With
    ``equal`` every window has exactly ``seq_len`` tokens (calibration batches them); otherwise the
    last short window is kept when it has at least 16 tokens (a perplexity needs a few predictions).
    """
    separator = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for i, text in enumerate(texts):   # one call per document: no "sequence too long" warnings
        ids += (separator if i else []) + tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    windows = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
    if equal:
        return [w for w in windows if len(w) == seq_len] or windows[:1]
    return [w for w in windows if len(w) >= 16]


# Chat turns the jobs also measure on: held-out perplexity is plain prose, so it cannot show what the
# chat template's special tokens and the answer's first token go through (a W8A8 SmolLM2 once kept its
# held-out perplexity within 0.1% while answering these prompts with garbage).
CHAT_SAMPLES = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name three primary colors.", "Red, yellow and blue are the three primary colors."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Give me a synonym for happy.", "A synonym for happy is joyful."),
    ("What do bees make?", "Bees make honey from the nectar of flowers."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
)


def chat_samples(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """(prompts ending where the answer starts, whole conversations) as token ids; empty without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return [], []
    prompts, conversations = [], []
    for question, answer in CHAT_SAMPLES:
        turn = [{"role": "user", "content": question}]
        prompts.append(list(tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=True)))
        conversations.append(list(tokenizer.apply_chat_template(
            turn + [{"role": "assistant", "content": answer}], tokenize=True)))
    return prompts, conversations
