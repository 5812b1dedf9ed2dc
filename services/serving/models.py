"""Serving documents, request bodies and views: model services as chapter 8 of the guide describes them."""
from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo import ASCENDING, DESCENDING

from contracts.notifications import EventNotification
from contracts.timestamps import Timestamp
from services.lib.common.cluster import Resources
from services.lib.common.mongo import IndexSpec
from services.lib.pools.models import PoolChoice
from services.lib.pools.specs import DEFAULT_INFERENCE_SPEC, INFERENCE_SPECS
from services.lib.pools.specs import instance_resources as spec_resources
from services.lib.readmodels.serving_refs import INSTANCES, SERVICE_LOGS, SERVICES
from services.lib.common.validation import TaskName, limited_text

SERVICE_EVENTS = "service_events"
EVENTS_KEPT_DAYS = 30        # guide 8: events are kept for one month

INDEXES: list[IndexSpec] = [
    (SERVICES, [("tenant_id", ASCENDING), ("name", ASCENDING)], {"unique": True}),
    (SERVICES, [("tenant_id", ASCENDING), ("created_at", DESCENDING)], {}),
    (SERVICES, [("desired", ASCENDING), ("stop_at", ASCENDING)], {}),
    (SERVICE_EVENTS, [("service_id", ASCENDING), ("at", DESCENDING)], {}),
    (SERVICE_EVENTS, [("at", ASCENDING)], {"expireAfterSeconds": EVENTS_KEPT_DAYS * 24 * 3600}),
]
# The deployer's collections, read by the serving API through serving_refs.
READ_INDEXES: list[IndexSpec] = [
    (INSTANCES, [("service_id", ASCENDING), ("status", ASCENDING)], {}),
    (SERVICE_LOGS, [("service_id", ASCENDING), ("seq", ASCENDING)], {}),
]


class Status(StrEnum):
    deploying = "deploying"   # 部署中
    running = "running"       # 运行中
    alarm = "alarm"           # 告警: some instances are unhealthy
    stopping = "stopping"     # 停止中
    stopped = "stopped"       # 已停止
    failed = "failed"         # 运行失败


# Which operation each state allows (guide 8 and 13).
STARTABLE = {Status.stopped, Status.failed}
STOPPABLE = {Status.deploying, Status.running, Status.alarm, Status.failed}
SCALABLE = {Status.running, Status.alarm}          # 13.1: 运行中、告警
QPS_CHANGEABLE = {Status.running, Status.alarm}    # 13.2: 运行中、异常
UPGRADABLE = {Status.running, Status.alarm, Status.stopped, Status.failed}


ServiceName = TaskName   # the guide's name rule for jobs and services: like model names, without '.'
Description256 = limited_text(256)

MAX_INSTANCES = 16
MAX_QPS = 10_000


class InstanceSpec(BaseModel):
    """An instance flavour ("实例规格"); the local backend turns cpus into the engine's thread count."""
    id: str
    name: str
    cpus: int
    memory_gb: int
    accelerator: str | None = None


# The table lives in services.lib.pools.specs (the deployer reads it too).
INSTANCE_SPECS: dict[str, InstanceSpec] = {
    s.id: InstanceSpec(id=s.id, name=s.name, cpus=s.cpus, memory_gb=s.memory_gb) for s in INFERENCE_SPECS.values()}
DEFAULT_SPEC = DEFAULT_INFERENCE_SPEC
RESOURCE_POOLS = ("public", "dedicated")   # 公共资源池 / 专属资源池 (or a dedicated pool by name)


def instance_resources(spec_id: str) -> Resources:
    """What one instance of a spec takes from its pool: its vCPUs and memory (an unknown spec, a
    misconfigured preset, counts as the default spec, as the deployer runs it)."""
    return spec_resources(spec_id)


class AutoStop(BaseModel):
    """"自动停止": off by default; when on, the service stops after this many hours of running."""
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    hours: float = Field(1.0, gt=0, le=720, description="1, 2, 4, 6 or a custom duration (hours, up to 720)")


class ServiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ServiceName
    description: Description256 = ""
    model_id: str = Field(description="a model of 'my models' (created successfully)")
    version: int | str | None = Field(None, description="version number, 'V2' or id; default the latest")
    resource_pool: PoolChoice = "public"
    instance_spec: str = Field(DEFAULT_SPEC, description="see GET /api/v1/services/instance-specs")
    qps_limit: int = Field(ge=1, le=MAX_QPS, description="流量限制 (requests per second)")
    instance_count: int = Field(1, ge=1, le=MAX_INSTANCES)
    content_moderation: bool = Field(True, description="内容审核, on by default")
    confirm_moderation_off: bool = Field(
        False, description="must be true to deploy with content moderation off (the guide's confirmation dialog)")
    notification: EventNotification = Field(default_factory=EventNotification)
    auto_stop: AutoStop = Field(default_factory=AutoStop)

    @model_validator(mode="after")
    def _moderation_off_needs_confirmation(self) -> "ServiceCreate":
        if not self.content_moderation and not self.confirm_moderation_off:
            raise ValueError(_MODERATION_CONFIRM)
        return self


_MODERATION_CONFIRM = ("confirm_moderation_off must be true to turn content moderation off: without it the "
                       "service's inputs and outputs are not checked for non-compliant content")


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance_count: int = Field(ge=1, le=MAX_INSTANCES)


class QpsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    qps_limit: int = Field(ge=1, le=MAX_QPS)


class UpgradeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | str = Field(description="another version of the service's model (number, 'V2' or id)")


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool
    confirm_moderation_off: bool = False

    @model_validator(mode="after")
    def _confirm(self) -> "ModerationRequest":
        if not self.enabled and not self.confirm_moderation_off:
            raise ValueError(_MODERATION_CONFIRM)
        return self


def recommended_instances(qps: int, per_instance_qps: float | None) -> int | None:
    """Guide 8: recommended instances = QPS limit ÷ the template's single-instance QPS, rounded up."""
    if not per_instance_qps:
        return None
    return max(1, math.ceil(qps / per_instance_qps))


class InstanceView(BaseModel):
    id: str
    status: str
    version_id: str
    version_number: int | None = Field(None, description="the model version it serves (V<n>); absent on old instances")
    url: str | None = None
    started_at: Timestamp | None = None
    ready_at: Timestamp | None = None
    message: str | None = None


class ServiceView(BaseModel):
    id: str
    name: str
    description: str
    preset: bool
    status: Status
    message: str | None = None
    model_id: str
    model_name: str
    version_id: str
    version_number: int
    template_id: str
    quantization: str | None = None
    resource_pool: str
    placement: dict | None = Field(None, description="the pool the service's instances run in and what each takes "
                                                     "from it ({pool, cpus, gpus, memory_bytes})")
    instance_spec: str
    qps_limit: int
    instance_count: int
    ready_instances: int
    recommended_instance_count: int | None = None
    max_model_len: int
    content_moderation: bool
    notification: dict
    auto_stop: dict
    stop_at: Timestamp | None = None
    operation: str | None = None
    api_base: str                 # base URL path for the OpenAI SDK (per-service)
    call_model: str               # the `model` value to send
    created_at: Timestamp
    updated_at: Timestamp
    instances: list[InstanceView] | None = None


def service_view(doc: dict, *, per_instance_qps: float | None = None,
                 instances: list[dict] | None = None) -> ServiceView:
    model = doc["model"]
    return ServiceView(
        id=doc["_id"], name=doc["name"], description=doc.get("description", ""), preset=doc.get("preset", False),
        status=doc["status"], message=doc.get("message"), model_id=model.get("model_id", ""),
        model_name=model.get("model_name", ""), version_id=model.get("version_id", ""),
        version_number=model.get("version_number", 0), template_id=model["template_id"],
        quantization=model.get("quantization"), resource_pool=doc["resource_pool"], placement=doc.get("placement"),
        instance_spec=doc["instance_spec"], qps_limit=doc["qps_limit"], instance_count=doc["instance_count"],
        ready_instances=doc.get("ready_instances", 0),
        recommended_instance_count=recommended_instances(doc["qps_limit"], per_instance_qps),
        max_model_len=doc["max_model_len"], content_moderation=doc.get("content_moderation", True),
        notification=doc.get("notification") or {}, auto_stop=doc.get("auto_stop") or {},
        stop_at=doc.get("stop_at"), operation=doc.get("operation"),
        api_base=f"/v1/infers/{doc['_id']}/v1", call_model=doc["name"],
        created_at=doc["created_at"], updated_at=doc["updated_at"],
        instances=None if instances is None else [instance_view(i) for i in instances])


def instance_view(doc: dict) -> InstanceView:
    return InstanceView(id=doc["_id"], status=doc["status"], version_id=doc.get("version_id", ""),
                        version_number=doc.get("version_number"),
                        url=doc.get("url"), started_at=doc.get("started_at"), ready_at=doc.get("ready_at"),
                        message=doc.get("message"))


