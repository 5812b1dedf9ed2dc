"""Custom policies in the guide's JSON format (figure 2-19), read from the text a user pastes::

    {"Version": "1.1",
     "Statement": [{"Effect": "Allow", "Action": ["maas:models:create", "maas:services:*"]},
                   {"Effect": "Deny", "Action": ["maas:services:delete"]}]}

Every problem is a ``PolicyError`` whose message starts with the line and column it is at (where
the text has one) and names the rule: malformed JSON, an unknown key, a ``Version`` other than
"1.1", an ``Effect`` other than "Allow" or "Deny", an action this platform does not have (with the
nearest valid ones). ``Resource`` and ``Condition`` are refused rather than ignored: a policy that
seems narrower than it is would grant more than its author meant.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass

from services.lib.iam.actions import ALL, PREFIX, nearest
from services.lib.iam.evaluator import Statement

VERSION = "1.1"
EFFECTS = ("Allow", "Deny")
MAX_CHARS = 6144            # the guide's IAM caps a custom policy at 6,144 characters
MAX_STATEMENTS = 100
MAX_PATTERN_CHARS = 128
_PATTERN = re.compile(r"^[A-Za-z0-9:*]+$")


Position = tuple[int | None, int | None]   # (line, column), both 1-based; (None, None) when unknown


class PolicyError(ValueError):
    def __init__(self, message: str, *, at: Position = (None, None)):
        line, column = at
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)
        self.line, self.column = line, column


@dataclass(frozen=True)
class PolicyDocument:
    statements: tuple[Statement, ...]

    def to_json(self) -> dict:
        return {"Version": VERSION, "Statement": [{"Effect": s.effect, "Action": list(s.actions)}
                                                  for s in self.statements]}


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Locator:
    """Finds where a value sits in the text, for messages about a document that parsed: the n-th
    occurrence of a key, or the first of a string value after a given point."""

    def __init__(self, text: str):
        self.text = text

    def key(self, name: str, nth: int = 0) -> Position:
        matches = list(re.finditer(re.escape(json.dumps(name)) + r"\s*:", self.text))
        return _position(self.text, matches[nth].start()) if nth < len(matches) else (None, None)

    def value(self, value: str, *, after: Position = (None, None)) -> Position:
        start = 0
        if after[0] is not None:
            lines = self.text.split("\n")
            start = sum(len(line) + 1 for line in lines[:after[0] - 1]) + (after[1] or 1) - 1
        for needle in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
            found = self.text.find(needle, start)
            if found >= 0:
                return _position(self.text, found)
        return after


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise PolicyError(f"the key {json.dumps(key)} appears twice in one object")
        seen[key] = value
    return seen


def parse_policy(text: str) -> PolicyDocument:
    """The policy ``text`` as pasted; PolicyError naming the line, the column and the rule."""
    if not isinstance(text, str) or not text.strip():
        raise PolicyError("the policy is empty; paste a JSON object with \"Version\" and \"Statement\"")
    if len(text) > MAX_CHARS:
        raise PolicyError(f"the policy has {len(text)} characters; at most {MAX_CHARS} are allowed")
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"malformed JSON: {exc.msg}", at=(exc.lineno, exc.colno)) from None
    return _document(raw, _Locator(text))


def _document(raw: object, where: _Locator) -> PolicyDocument:
    if not isinstance(raw, dict):
        raise PolicyError("the policy must be a JSON object with \"Version\" and \"Statement\"", at=(1, 1))
    for key in raw:
        if key not in ("Version", "Statement"):
            raise PolicyError(f"unknown key {json.dumps(key)}; a policy has \"Version\" and \"Statement\"",
                              at=where.key(key))
    if "Version" not in raw:
        raise PolicyError(f"\"Version\" is required and must be \"{VERSION}\"", at=(1, 1))
    if raw["Version"] != VERSION:
        raise PolicyError(f"unknown Version {json.dumps(raw['Version'])}; it must be \"{VERSION}\"",
                          at=where.key("Version"))
    statements = raw.get("Statement")
    if not isinstance(statements, list) or not statements:
        raise PolicyError("\"Statement\" must be a non-empty list of statements",
                          at=where.key("Statement") if "Statement" in raw else (1, 1))
    if len(statements) > MAX_STATEMENTS:
        raise PolicyError(f"a policy has at most {MAX_STATEMENTS} statements, this one {len(statements)}",
                          at=where.key("Statement"))
    return PolicyDocument(tuple(_statement(s, i, where) for i, s in enumerate(statements)))


def _statement(raw: object, index: int, where: _Locator) -> Statement:
    path = f"Statement[{index}]"
    effect_at = where.key("Effect", index)
    if not isinstance(raw, dict):
        raise PolicyError(f"{path} must be an object with \"Effect\" and \"Action\"", at=where.key("Statement"))
    for key in raw:
        if key in ("Resource", "Condition", "NotAction", "NotResource"):
            raise PolicyError(f"{path}.{key} is not supported: a statement applies to every resource of the "
                              "account; list the actions instead", at=where.key(key))
        if key not in ("Effect", "Action"):
            raise PolicyError(f"{path}: unknown key {json.dumps(key)}; a statement has \"Effect\" and \"Action\"",
                              at=where.key(key))
    if "Effect" not in raw:
        raise PolicyError(f"{path}.Effect is required: \"Allow\" or \"Deny\"", at=where.key("Action", index))
    effect = raw["Effect"]
    if effect not in EFFECTS:
        raise PolicyError(f"{path}.Effect must be \"Allow\" or \"Deny\", not {json.dumps(effect)}",
                          at=where.value(effect, after=effect_at) if isinstance(effect, str) else effect_at)
    if "Action" not in raw:
        raise PolicyError(f"{path}.Action is required: a list of actions such as \"maas:models:create\"",
                          at=effect_at)
    actions = raw["Action"]
    action_at = where.key("Action", index)
    if isinstance(actions, str):
        actions = [actions]
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        raise PolicyError(f"{path}.Action must be a non-empty list of action strings", at=action_at)
    for action in actions:
        _check_pattern(action, f"{path}.Action", where.value(action, after=action_at))
    return Statement(effect, tuple(actions))


def _check_pattern(pattern: str, path: str, position: Position) -> None:
    if len(pattern) > MAX_PATTERN_CHARS or not _PATTERN.fullmatch(pattern):
        raise PolicyError(f"{path}: {json.dumps(pattern)} is not an action: actions look like "
                          "\"maas:models:create\" (letters, digits, ':' and '*')", at=position)
    if matching(pattern):
        return
    close = _repaired(pattern) or nearest(pattern)
    hint = f"; did you mean {' or '.join(json.dumps(c) for c in close)}?" if close else ""
    if not pattern.lower().startswith(f"{PREFIX}:") and pattern != "*":
        hint = f" (this platform's actions start with \"{PREFIX}:\"){hint}"
    raise PolicyError(f"{path}: unknown action {json.dumps(pattern)}{hint} "
                      "(every action: GET /api/v1/iam/actions)", at=position)


def _repaired(pattern: str) -> list[str]:
    """A wildcard pattern with a misspelt part, spelt right: "maas:servces:*" -> "maas:services:*"."""
    parts = pattern.split(":")
    if "*" not in pattern or len(parts) != 3:
        return []
    known = [{PREFIX}, {a.split(":")[1] for a in ALL}, {a.split(":")[2] for a in ALL}]
    fixed = []
    for part, values in zip(parts, known):
        if "*" in part or part in values:
            fixed.append(part)
            continue
        close = difflib.get_close_matches(part, sorted(values), n=1, cutoff=0.6)
        if not close:
            return []
        fixed.append(close[0])
    candidate = ":".join(fixed)
    return [candidate] if matching(candidate) else []


def matching(pattern: str) -> list[str]:
    """The catalogue's actions that ``pattern`` matches (case-insensitive; ``*`` is any run)."""
    regex = re.compile(re.escape(pattern).replace(r"\*", ".*") + r"\Z", re.IGNORECASE)
    return [a for a in ALL if regex.match(a)]
