"""The mapping from platform events to notification kinds, checked against the real contracts."""
from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from contracts import ALL_EVENTS
from contracts.notifications import EVENT_KIND_LABELS, EventNotification
from services.notifier.kinds import EVENT_KINDS, KINDS, classify, normalise


def _literal_strings(annotation) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [v for v in typing.get_args(annotation) if isinstance(v, str)]
    return [v for arg in typing.get_args(annotation) for v in _literal_strings(arg)]


def test_every_kind_has_a_label_and_every_row_a_valid_kind():
    assert set(EVENT_KIND_LABELS) == set(KINDS)
    for event_type, rule in EVENT_KINDS.items():
        assert rule.kind is None or rule.kind in KINDS, event_type
        assert all(kind in KINDS for _, kind in rule.values), event_type


@pytest.mark.parametrize("event", [e for e in ALL_EVENTS if e.type in EVENT_KINDS and EVENT_KINDS[e.type].field],
                         ids=lambda e: e.type)
def test_field_rules_read_a_field_the_contract_has_and_map_all_its_values(event):
    """A contract that renames its status field or gains a status the table cannot map fails here."""
    rule = EVENT_KINDS[event.type]
    assert rule.field in event.model_fields, f"{event.type} has no field {rule.field!r}"
    values = _literal_strings(event.model_fields[rule.field].annotation)
    for value in values:
        assert classify(event.type, {rule.field: value}) in KINDS, f"{event.type}.{rule.field}={value!r} maps to nothing"


def test_status_events_of_the_registry_notify_as_state_changes():
    assert classify("ModelCreated", {}) == "creating"
    assert classify("ModelVersionStatusChanged", {"status": "created"}) == "completed"
    assert classify("ModelVersionStatusChanged", {"status": "failed"}) == "failed"
    assert classify("ModelDeleted", {}) == "deleted"


def test_tuning_and_serving_events_map_to_the_guides_event_kinds():
    assert classify("TuneRequested", {"reason": "submitted"}) == "creating"
    assert classify("TuneRequested", {"reason": "continued"}) == "starting"
    assert classify("TuneStarted", {}) == "running"
    assert classify("TuneCompleted", {}) == "completed"
    assert classify("TuneFailed", {}) == "failed"
    assert classify("TuneStopped", {}) == "stopped"
    assert classify("ServiceStatusChanged", {"status": "alarm"}) == "alarm"
    assert classify("ServiceStatusChanged", {"status": "running"}) == "running"


def test_plumbing_never_notifies():
    for event_type in ("TuneProgress", "WeightValidationCompleted", "TaskRecordChanged", "InstanceChanged",
                       "ServiceStatusReported"):
        assert classify(event_type, {"status": "running"}) is None, event_type


def test_unknown_status_events_plug_in_by_convention_and_others_do_not():
    assert classify("QuotaStatusChanged", {"status": "Running"}) == "running"
    assert classify("QuotaStatusChanged", {"status": "succeeded"}) == "completed"
    assert classify("QuotaStatusChanged", {"status": "weird"}) is None
    assert classify("SomethingHappened", {"status": "running"}) is None


def test_normalise_aliases():
    assert normalise("created") == "completed"
    assert normalise("Suspected-Hang") == "suspected_hang"
    assert normalise(3) is None


def test_event_notification_setting_requires_topic_and_events_when_enabled():
    assert EventNotification().enabled is False
    ok = EventNotification(enabled=True, topic_name="ops", events=["failed", "completed"])
    assert ok.events == ["failed", "completed"]
    with pytest.raises(ValidationError, match="topic_name is required"):
        EventNotification(enabled=True, events=["failed"])
    with pytest.raises(ValidationError, match="at least one event kind"):
        EventNotification(enabled=True, topic_name="ops")
    with pytest.raises(ValidationError):
        EventNotification(enabled=True, topic_name="ops", events=["exploded"])


def test_every_contract_event_with_a_state_field_is_decided():
    """A new event that carries a status must be mapped (or ignored) on purpose, not by accident."""
    undecided = [e.type for e in ALL_EVENTS
                 if "status" in e.model_fields and e.type not in EVENT_KINDS and not e.type.endswith("StatusChanged")]
    assert not undecided, f"add these to services/notifier/kinds.py EVENT_KINDS: {undecided}"
