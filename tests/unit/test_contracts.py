import json

import pytest

from contracts import ALL_EVENTS, Envelope, parse_data
from contracts.compat import incompatibilities
from contracts.events import ModelCreated, WeightValidationCompleted
from contracts.export import schema_for, schema_path


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.type)
def test_every_event_has_a_checked_in_schema_and_stays_compatible(event):
    path = schema_path(event)
    assert path.exists(), f"{path.name} missing: run `python -m contracts.export` and commit it"
    old = json.loads(path.read_text())
    assert incompatibilities(old, schema_for(event)) == []


def test_removing_a_property_is_reported():
    old = schema_for(ModelCreated)
    new = json.loads(json.dumps(old))
    del new["properties"]["name"]
    assert incompatibilities(old, new) == ["name: property removed"]


def test_retyping_a_property_is_reported():
    old = schema_for(ModelCreated)
    new = json.loads(json.dumps(old))
    new["properties"]["name"] = {"type": "integer"}
    problems = incompatibilities(old, new)
    assert len(problems) == 1 and problems[0].startswith("name: type changed")


def test_a_new_required_property_is_reported_but_an_optional_one_is_fine():
    old = schema_for(ModelCreated)
    optional = json.loads(json.dumps(old))
    optional["properties"]["extra"] = {"type": "string"}
    assert incompatibilities(old, optional) == []
    required = json.loads(json.dumps(optional))
    required["required"].append("extra")
    assert incompatibilities(old, required) == ["extra: became required"]


def test_envelope_round_trip_gives_the_typed_payload():
    data = WeightValidationCompleted(task_id="t", model_id="m", version_id="v", ok=False,
                                     message="Failed to read user config.json.")
    env = Envelope.wrap(data, tenant_id="tenant-a", subject="models/m")
    again = Envelope.model_validate_json(env.model_dump_json())
    assert again.id == env.id and again.type == "WeightValidationCompleted" and again.version == 1
    parsed = parse_data(again)
    assert isinstance(parsed, WeightValidationCompleted)
    assert parsed.message == "Failed to read user config.json."


def test_unknown_event_type_is_not_silently_accepted():
    env = Envelope(type="NoSuchEvent", tenant_id="t", subject="x", data={})
    with pytest.raises(KeyError):
        parse_data(env)
