"""Parse Hermes/Qwen-style function calls out of model text: ``<tool_call>{"name", "arguments"}</tool_call>``.

One incremental parser serves both modes: the server feeds it text deltas while streaming, or the
whole completion at once. Text outside the tags is content. Once an opening tag appears, text is
buffered until its closing tag (or the end): a block whose JSON names a function becomes a tool
call; a malformed block goes out unchanged as plain content, so nothing the model said is lost.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class ParsedCall:
    id: str
    name: str
    arguments: str      # JSON text, as the OpenAI API carries it


@dataclass(frozen=True)
class Content:
    text: str


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_call(body: str) -> ParsedCall | None:
    """The call in one block's text, or None when it is not a well-formed call."""
    try:
        data = json.loads(body.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):            # some models emit the arguments already as JSON text
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(_new_id(), data["name"], json.dumps(args, ensure_ascii=False))


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


class ToolCallParser:
    def __init__(self):
        self._buffer = ""
        self._inside = False
        self.calls: list[ParsedCall] = []

    def feed(self, text: str) -> list[Content | ParsedCall]:
        """Events that are certain after ``text``; a possible partial tag stays buffered."""
        self._buffer += text
        events: list[Content | ParsedCall] = []
        while True:
            if not self._inside:
                at = self._buffer.find(OPEN)
                if at < 0:
                    keep = _partial_tag_suffix(self._buffer, OPEN)
                    out = self._buffer[:len(self._buffer) - keep]
                    self._buffer = self._buffer[len(out):]
                    if out:
                        events.append(Content(out))
                    return events
                if at:
                    events.append(Content(self._buffer[:at]))
                self._buffer, self._inside = self._buffer[at + len(OPEN):], True
            else:
                at = self._buffer.find(CLOSE)
                if at < 0:
                    return events
                events.append(self._block(self._buffer[:at], closed=True))
                self._buffer, self._inside = self._buffer[at + len(CLOSE):], False

    def finish(self) -> list[Content | ParsedCall]:
        """End of text: an unclosed block still counts when its JSON is complete."""
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            return [self._block(rest, closed=False)]
        return [Content(rest)] if rest else []

    def _block(self, body: str, *, closed: bool) -> Content | ParsedCall:
        call = parse_call(body)
        if call is None:
            return Content(OPEN + body + (CLOSE if closed else ""))
        self.calls.append(call)
        return call


def parse_tool_calls(text: str) -> tuple[str | None, list[ParsedCall]]:
    """(content or None, calls) for a whole completion."""
    parser = ToolCallParser()
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Content))
    if parser.calls:
        content = content.strip()   # only the newlines around the tags are left over
    return (content or None), parser.calls
