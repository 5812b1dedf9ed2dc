"""Write the event catalogue to ``contracts/asyncapi.json``: ``python -m services.event_catalog``.

Run it (after ``python -m contracts.export``) whenever an event, a handler or a ``publishes`` list
changes; tests/unit/test_asyncapi.py fails while the checked-in file differs from the code's.
"""
from __future__ import annotations

import json
from pathlib import Path

import contracts
from services.runtime import event_catalogue

CATALOGUE = Path(contracts.__file__).parent / "asyncapi.json"


def render() -> str:
    return json.dumps(event_catalogue(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    CATALOGUE.write_text(render())
    print(f"wrote {CATALOGUE}")


if __name__ == "__main__":
    main()
