"""Token ids -> text, incrementally, with stop strings cut off (never returned, as table 11-1 says).

Incremental decoding keeps a short window of previous tokens as context (the approach of TGI and
vLLM): decoding a window gives the same characters as decoding everything for byte-level BPE and
SentencePiece alike, and text ending in an incomplete UTF-8 sequence ("\ufffd") waits for the
next token.
"""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, *, stop: tuple[str, ...] = (), prefix: str = ""):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.stop = stop
        self.text = prefix          # everything decoded so far (minus a cut stop string)
        self._emitted = 0           # how much of ``text`` callers have taken
        self.stop_reason: str | None = None
        self._max_stop = max((len(s) for s in stop), default=0)

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> bool:
        """Add a generated token; True when a stop string appeared (the text is cut before it)."""
        if self.stop_reason is not None:
            return True
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix_offset:self._read_offset])
        after = self._decode(self._ids[self._prefix_offset:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return self._append(after[len(before):])
        return False

    def flush(self) -> None:
        """End of generation: whatever is still pending (even a broken character) becomes text."""
        if self.stop_reason is None and self._read_offset < len(self._ids):
            before = self._decode(self._ids[self._prefix_offset:self._read_offset])
            after = self._decode(self._ids[self._prefix_offset:])
            self._read_offset = len(self._ids)
            if len(after) > len(before):
                self._append(after[len(before):])

    def _append(self, delta: str) -> bool:
        start = max(0, len(self.text) - self._max_stop + 1)
        self.text += delta
        if not self.stop:
            return False
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        if hits:
            index, which = min(hits)
            self.text = self.text[:index]
            self.stop_reason = which
            return True
        return False

    def _held_back(self) -> int:
        """Length of the text's tail that could still grow into a stop string."""
        if self.stop_reason is not None:
            return 0
        for length in range(min(self._max_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-length:]
            if any(s.startswith(tail) for s in self.stop):
                return length
        return 0

    def take(self, *, final: bool = False) -> str:
        """New text that is safe to show now (all of it when ``final``)."""
        end = len(self.text) if final else len(self.text) - self._held_back()
        if end <= self._emitted:
            return ""
        delta = self.text[self._emitted:end]
        self._emitted = end
        return delta

    def copy(self) -> TextStream:
        other = TextStream.__new__(TextStream)
        other.__dict__.update(self.__dict__)
        other._ids = list(self._ids)
        return other
