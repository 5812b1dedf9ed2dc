"""Examples -> token ids + target masks, and the order in which they are fed.

SFT samples are rendered with the tokenizer's own chat template; only the assistant turns (their
text and the end-of-turn marker the template puts after them) are targets, so the model learns to
answer, not to echo prompts. Pretraining samples are raw text + EOS, every token a target.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

ROLES = ("system", "user", "assistant")


@dataclass
class Encoded:
    """One tokenized sample: ``ids`` (int32) and ``target`` (bool, True where the token is learned)."""

    ids: np.ndarray
    target: np.ndarray

    @property
    def n_targets(self) -> int:
        # The first token is never predicted (nothing precedes it).
        return int(self.target[1:].sum())


def fingerprint(examples: list[dict]) -> str:
    """A digest of the data, stored in checkpoints so a resume on other data is refused."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def validate_examples(examples: list[dict], tune_type: str) -> None:
    if not isinstance(examples, list) or not examples:
        raise ValueError("examples: must be a non-empty list")
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise ValueError(f"examples[{i}]: must be an object")
        if tune_type == "pretrain":
            text = ex.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"examples[{i}].text: pretraining samples need a non-empty 'text' string")
            continue
        messages = ex.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"examples[{i}].messages: must be a non-empty list of {{role, content}}")
        for j, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise ValueError(f"examples[{i}].messages[{j}].role: must be one of {', '.join(ROLES)}")
            if not isinstance(m.get("content"), str):
                raise ValueError(f"examples[{i}].messages[{j}].content: must be a string")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise ValueError(f"examples[{i}].messages: needs at least one non-empty assistant message "
                             "(the text the model learns)")


def encode_examples(examples: list[dict], tokenizer, *, tune_type: str, max_seq_len: int) -> list[Encoded]:
    validate_examples(examples, tune_type)
    if tune_type == "pretrain":
        return _encode_texts([ex["text"] for ex in examples], tokenizer, max_seq_len)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("model_dir: the tokenizer has no chat_template, which SFT needs to render messages")
    rendered = [_render_chat(ex["messages"], tokenizer, i) for i, ex in enumerate(examples)]
    if not getattr(tokenizer, "is_fast", False):
        return [_encode_chat_slow(full, spans, tokenizer, max_seq_len, i) for i, (full, spans) in enumerate(rendered)]
    # One batched call: the Rust tokenizer spreads it over its threads. The template already holds
    # the special tokens, so the tokenizer must not add a second BOS.
    batch = tokenizer([full for full, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for i, ((_, spans), ids, offsets) in enumerate(zip(rendered, batch["input_ids"], batch["offset_mapping"])):
        starts = np.asarray([s for s, _ in offsets], dtype=np.int64)
        target = np.zeros(len(ids), dtype=bool)
        for a, b in spans:
            target |= (starts >= a) & (starts < b)
        out.append(_finish(ids, target, max_seq_len, i))
    return out


def _encode_texts(texts: list[str], tokenizer, max_seq_len: int) -> list[Encoded]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        ids = np.asarray((ids + eos)[:max_seq_len], dtype=np.int32)   # EOS: learn where documents end
        out.append(Encoded(ids=ids, target=np.ones(len(ids), dtype=bool)))
    return out


def _finish(ids, target: np.ndarray, max_seq_len: int, index: int) -> Encoded:
    if not target.any():
        raise ValueError(f"examples[{index}].messages: no assistant tokens after tokenization")
    return Encoded(ids=np.asarray(ids[:max_seq_len], dtype=np.int32), target=target[:max_seq_len])


def _render(tokenizer, messages: list[dict], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _assistant_spans(tokenizer, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in ``full`` (answer text + the template's end of turn)."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if i and full.startswith(before) and full.startswith(upto) and len(upto) > len(before):
            spans.append((len(before), len(upto)))
            cursor = len(upto)
            continue
        # Templates that rewrite earlier turns are not prefix-stable: locate the answer text itself.
        start = full.find(m["content"], cursor)
        if start < 0:
            raise ValueError("model_dir: the chat template drops assistant text; cannot mark answer tokens")
        end = start + len(m["content"])
        eos = tokenizer.eos_token or ""
        if eos and full.startswith(eos, end):
            end += len(eos)
        spans.append((start, end))
        cursor = end
    return spans


def _render_chat(messages: list[dict], tokenizer, index: int) -> tuple[str, list[tuple[int, int]]]:
    try:
        full = _render(tokenizer, messages, generation_prompt=False)
        return full, _assistant_spans(tokenizer, messages, full)
    except ValueError:
        raise
    except Exception as exc:   # e.g. a template that insists on alternating user/assistant turns
        raise ValueError(f"examples[{index}].messages: the model's chat template rejects them: {exc}") from exc


def _encode_chat_slow(full: str, spans, tokenizer, max_seq_len: int, index: int) -> Encoded:
    """Slow tokenizers have no offsets: find each span's token boundaries by tokenizing prefixes."""
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    target = np.zeros(len(ids), dtype=bool)
    for a, b in spans:
        lo = len(tokenizer(full[:a], add_special_tokens=False)["input_ids"])
        hi = len(tokenizer(full[:b], add_special_tokens=False)["input_ids"])
        target[lo:hi] = True
    return _finish(ids, target, max_seq_len, index)


def epoch_order(num_samples: int, *, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one epoch; a pure function of (seed, epoch) so a resume replays it."""
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    return rng.permutation(num_samples).tolist()


def split_global_batch(indices: list[int], lengths: list[int], *, world_size: int,
                       micro_batch_size: int) -> list[list[list[int]]]:
    """Per rank, the micro-batches of one global batch.

    Sorting the global batch by length before dealing it out keeps the samples of a micro-batch
    of similar length (little padding) and balances the ranks' work. The loss is a sum over the
    whole global batch, so this order inside an iteration does not change what is learned.
    """
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    shares = [ordered[r::world_size] for r in range(world_size)]
    return [[share[k:k + micro_batch_size] for k in range(0, len(share), micro_batch_size)] for share in shares]
