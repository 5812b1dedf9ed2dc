"""Run nanio with in-flight uploads hidden from listings.

nanio stages each upload as ``.tmp.<hex>`` beside the final object and renames it when complete,
but its listings only hide names starting with ``.nanio``. Tansu lists its log segments while
writing new ones and fails to parse a ``.tmp.*`` name as an offset ("ParseInt(InvalidDigit)"),
dropping the consumer's fetch. Hiding staged files makes listings show only complete objects.
"""
from __future__ import annotations

import runpy

from nanio.storage import filesystem, paths

_original = paths.is_internal_name


def is_internal_name(name: str) -> bool:
    return _original(name) or name.startswith(".tmp.")


paths.is_internal_name = is_internal_name
filesystem.is_internal_name = is_internal_name

if __name__ == "__main__":
    runpy.run_module("nanio", run_name="__main__", alter_sys=True)
