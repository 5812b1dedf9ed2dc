"""Deploy-request rules of table 8-1 and the instance recommendation of table 8-2."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.keys.service import mask
from services.gateway.oai_errors import OpenAIError
from services.serving.models import ModerationRequest, ServiceCreate, recommended_instances
from services.serving.templates import preset_templates, template_info

BASE = {"name": "chat-svc", "model_id": "m1", "qps_limit": 5}


def _errors(**changes) -> list[str]:
    try:
        ServiceCreate.model_validate({**BASE, **changes})
    except ValidationError as exc:
        return [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()]
    return []


@pytest.mark.parametrize("name,ok", [
    ("chat-svc_1", True), ("中文服务", True), ("a" * 64, True),
    ("1chat", False), ("_chat", False), ("chat.svc", False), ("a" * 65, False), ("", False), ("chat svc", False),
])
def test_service_names_follow_the_guide(name, ok):
    assert (_errors(name=name) == []) is ok


def test_description_is_limited_to_256_characters():
    assert _errors(description="x" * 256) == []
    assert _errors(description="x" * 257)[0].startswith("description")


def test_qps_and_instance_count_ranges():
    assert _errors(qps_limit=0)[0].startswith("qps_limit")
    assert _errors(instance_count=0)[0].startswith("instance_count")
    assert _errors(instance_count=17)[0].startswith("instance_count")


def test_moderation_is_on_by_default_and_turning_it_off_needs_confirmation():
    assert ServiceCreate.model_validate(BASE).content_moderation is True
    assert "confirm_moderation_off" in _errors(content_moderation=False)[0]
    assert _errors(content_moderation=False, confirm_moderation_off=True) == []
    with pytest.raises(ValidationError):
        ModerationRequest(enabled=False)
    assert ModerationRequest(enabled=False, confirm_moderation_off=True).enabled is False


def test_notification_needs_a_topic_and_events_when_on():
    assert _errors(notification={"enabled": True})
    assert _errors(notification={"enabled": True, "topic_name": "ops", "events": ["running", "failed"]}) == []


def test_auto_stop_hours():
    assert _errors(auto_stop={"enabled": True, "hours": 2}) == []
    assert _errors(auto_stop={"enabled": True, "hours": 0})


@pytest.mark.parametrize("qps,per_instance,expected", [(1, 3, 1), (3, 3, 1), (4, 3, 2), (10, 1, 10), (9, 9, 1),
                                                        (5, None, None)])
def test_recommended_instances_is_qps_over_the_single_instance_qps_rounded_up(qps, per_instance, expected):
    assert recommended_instances(qps, per_instance) == expected


def test_template_facts_come_from_the_model_square():
    info = template_info("qwen2-0.5b")
    assert info is not None and info.recommended_qps == 9 and info.context_length == 4096
    assert "smollm2-135m-instruct" in [t.id for t in preset_templates()]


def test_api_keys_are_masked_and_errors_have_openais_shape():
    assert mask("sk-abcdefghijklmnopqrstuvwxyz") == "sk-abcd...wxyz"
    error = OpenAIError(429, "slow down", code="rate_limit_exceeded", retry_after=0.2)
    assert error.body() == {"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                                      "code": "rate_limit_exceeded"}}
    assert error.headers()["Retry-After"] == "1"
