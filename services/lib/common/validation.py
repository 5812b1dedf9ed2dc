"""Field rules shared by every resource (names, descriptions), worded as the guide states them."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

# 1-64 chars, starts with a letter or CJK character, then letters, digits, CJK, '_', '-', '.'.
_NAME = re.compile(r"^[A-Za-z\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff_.\-]{0,63}$")
NAME_RULE = ("must be 1-64 characters, start with a letter or Chinese character, and contain only "
             "letters, digits, Chinese characters, '_', '-' and '.'")


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(NAME_RULE)
    return value


# The pattern is in the schema too, so clients and fuzzers know the rule; the validator words the error.
ResourceName = Annotated[str, AfterValidator(_check_name),
                         WithJsonSchema({"type": "string", "pattern": _NAME.pattern, "description": NAME_RULE})]

# Jobs and services (tables 6-4, 7-3, 8-1): the same rule without '.', e.g. "sft-qwen_2".
_TASK_NAME = re.compile(r"^[A-Za-z\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff_\-]{0,63}$")
TASK_NAME_RULE = ("must be 1-64 characters, start with a letter or Chinese character, and contain only "
                  "letters, digits, Chinese characters, '-' and '_'")


def _check_task_name(value: str) -> str:
    if not _TASK_NAME.fullmatch(value):
        raise ValueError(TASK_NAME_RULE)
    return value


TaskName = Annotated[str, AfterValidator(_check_task_name),
                     WithJsonSchema({"type": "string", "pattern": _TASK_NAME.pattern, "description": TASK_NAME_RULE})]


def limited_text(max_length: int):
    """A free-text field of at most ``max_length`` characters (descriptions: 100, 256 or 1000)."""
    return Annotated[str, StringConstraints(max_length=max_length)]


Description100 = limited_text(100)
