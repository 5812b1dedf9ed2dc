"""Write the JSON Schema of every event to ``contracts/schemas/<Type>.v<version>.json``."""
from __future__ import annotations

import json
from pathlib import Path

from contracts.envelope import Envelope
from contracts.events import ALL_EVENTS

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_for(event) -> dict:
    schema = event.model_json_schema()
    schema["title"] = event.type
    schema["x-version"] = event.version
    schema["x-topic"] = event.topic
    return schema


def schema_path(event) -> Path:
    return SCHEMA_DIR / f"{event.type}.v{event.version}.json"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for event in ALL_EVENTS:
        schema_path(event).write_text(json.dumps(schema_for(event), indent=2, sort_keys=True) + "\n")
    (SCHEMA_DIR / "Envelope.json").write_text(json.dumps(Envelope.model_json_schema(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(ALL_EVENTS) + 1} schemas to {SCHEMA_DIR}")


if __name__ == "__main__":
    main()
