"""Event notification ("事件通知"): the shared vocabulary and the per-job setting.

Tuning jobs, compression jobs and services offer the guide's "event notification" switch: a topic
name plus the event kinds to send (creating, running, completed, failed, stopped, suspected hang, ...).
A service that accepts that setting embeds ``EventNotification`` in its request body and, when the
job is created (or its setting changes, or it is deleted), emits ``NotificationRuleChanged``; the
notifier keeps it as a rule and delivers matching events of that job to the topic's confirmed
subscriptions.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.envelope import EventData

NOTIFICATIONS_TOPIC = "notifications.events"

# What a subscriber can pick. Platform events are mapped onto these kinds by the notifier
# (services/notifier/kinds.py), so a new domain event plugs in by adding a row there.
EventKind = Literal[
    "creating", "pending", "starting", "deploying", "running", "alarm", "suspected_hang",
    "stopping", "stopped", "completed", "failed", "deleted",
]

# The console's labels, as the guide words them.
EVENT_KIND_LABELS: dict[str, str] = {
    "creating": "创建中", "pending": "等待中", "starting": "启动中", "deploying": "部署中",
    "running": "运行中", "alarm": "告警", "suspected_hang": "疑似卡死", "stopping": "停止中",
    "stopped": "已停止", "completed": "已完成", "failed": "运行失败", "deleted": "已删除",
}


class EventNotification(BaseModel):
    """The "事件通知" switch of a job or service request (off by default).

    When it is on, "主题名" (topic_name) and "事件" (events) are both required.
    """
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    topic_name: str | None = Field(None, max_length=64, description="a notification topic of the caller's tenant")
    events: list[EventKind] = Field(default_factory=list, description="event kinds to notify about")

    @model_validator(mode="after")
    def _required_when_enabled(self) -> "EventNotification":
        if self.enabled:
            if not self.topic_name:
                raise ValueError("topic_name is required when event notification is enabled")
            if not self.events:
                raise ValueError("events must name at least one event kind when event notification is enabled")
        return self


class NotificationRuleChanged(EventData):
    """A job or service turned its event notification on, changed it, or went away (removed=True).

    ``subject`` is the job's own subject (e.g. ``tuning-jobs/<id>``), the same one its events carry.
    """
    type = "NotificationRuleChanged"
    topic = NOTIFICATIONS_TOPIC
    subject: str
    topic_name: str = ""
    events: list[str] = []
    removed: bool = Field(False, description="true when the job was deleted or notification turned off")
