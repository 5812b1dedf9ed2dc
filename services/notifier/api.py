"""HTTP routes of the notifier: topics, subscriptions, rules, the delivery log and event timelines."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from contracts.notifications import EVENT_KIND_LABELS, EventKind
from services.lib.common.auth import Principal
from services.lib.common.context import Platform, get_component, get_platform
from services.lib.common.errors import not_found
from services.lib.common.paging import Offset
from services.lib.iam.authorize import Authorized
from services.notifier import service, timeline
from services.notifier.delivery import DeliveryQueue
from services.notifier.kinds import TIMELINE_RESOURCES
from services.notifier.models import (ConfirmRequest, DeliveryStatus, DeliveryView, RuleCreate, RuleView,
                                      SubscriptionCreate, SubscriptionView, TopicCreate, TopicView)

router = APIRouter(prefix="/api/v1", tags=["notifications"])
timeline_router = APIRouter(prefix="/api/v1", tags=["events"])
Queue = Depends(get_component("notifier"))   # this process's webhook sender, to send a new delivery at once


def _base_url(request: Request) -> str:
    return str(request.base_url)


@router.get("/notification-event-kinds", summary="Event kinds a subscription can pick, with their labels")
async def event_kinds(_: Principal = Authorized("maas:notificationEventKinds:list")):
    return {"items": [{"kind": k, "label": v} for k, v in EVENT_KIND_LABELS.items()]}


# ---- topics
@router.post("/notification-topics", status_code=201, response_model=TopicView, summary="Create a topic")
async def create_topic(body: TopicCreate, principal: Principal = Authorized("maas:notificationTopics:create"),
                       platform: Platform = Depends(get_platform)):
    return await service.create_topic(platform, tenant_id=principal.tenant_id, request=body)


@router.get("/notification-topics", summary="List topics")
async def list_topics(principal: Principal = Authorized("maas:notificationTopics:list"),
                      platform: Platform = Depends(get_platform)):
    return await service.list_topics(platform, tenant_id=principal.tenant_id)


@router.get("/notification-topics/{topic}", response_model=TopicView, summary="Topic detail (by id or name)")
async def get_topic(topic: str, principal: Principal = Authorized("maas:notificationTopics:get"),
                    platform: Platform = Depends(get_platform)):
    return await service.get_topic(platform, tenant_id=principal.tenant_id, topic=topic)


@router.delete("/notification-topics/{topic}", status_code=204, summary="Delete a topic and its subscriptions")
async def delete_topic(topic: str, principal: Principal = Authorized("maas:notificationTopics:delete"),
                       platform: Platform = Depends(get_platform)):
    await service.delete_topic(platform, tenant_id=principal.tenant_id, topic=topic)
    return Response(status_code=204)


# ---- subscriptions
@router.post("/notification-topics/{topic}/subscriptions", status_code=201, response_model=SubscriptionView,
             summary="Subscribe a webhook; it receives a confirmation request and nothing else until confirmed")
async def create_subscription(topic: str, body: SubscriptionCreate, request: Request,
                              principal: Principal = Authorized("maas:notificationSubscriptions:create"),
                              platform: Platform = Depends(get_platform), queue: DeliveryQueue = Queue):
    return await service.create_subscription(platform, tenant_id=principal.tenant_id, topic=topic, request=body,
                                             confirm_base_url=_base_url(request), wake=queue.wake)


@router.get("/notification-topics/{topic}/subscriptions", summary="A topic's subscriptions")
async def topic_subscriptions(topic: str, principal: Principal = Authorized("maas:notificationSubscriptions:list"),
                              platform: Platform = Depends(get_platform)):
    return await service.list_subscriptions(platform, tenant_id=principal.tenant_id, topic=topic)


@router.get("/notification-subscriptions", summary="List subscriptions",
            responses={404: {"description": "The topic does not exist"}})
async def list_subscriptions(principal: Principal = Authorized("maas:notificationSubscriptions:list"),
                             topic: str | None = None,
                             platform: Platform = Depends(get_platform)):
    return await service.list_subscriptions(platform, tenant_id=principal.tenant_id, topic=topic)


@router.get("/notification-subscriptions/{subscription_id}", response_model=SubscriptionView)
async def get_subscription(subscription_id: str,
                           principal: Principal = Authorized("maas:notificationSubscriptions:get"),
                           platform: Platform = Depends(get_platform)):
    return await service.get_subscription(platform, tenant_id=principal.tenant_id, subscription_id=subscription_id)


@router.delete("/notification-subscriptions/{subscription_id}", status_code=204)
async def delete_subscription(subscription_id: str,
                              principal: Principal = Authorized("maas:notificationSubscriptions:delete"),
                              platform: Platform = Depends(get_platform)):
    await service.delete_subscription(platform, tenant_id=principal.tenant_id, subscription_id=subscription_id)
    return Response(status_code=204)


@router.post("/notification-subscriptions/{subscription_id}/confirm", response_model=SubscriptionView,
             summary="Confirm a subscription with the token its endpoint received (no bearer token needed)",
             responses={403: {"description": "The token does not match this subscription"}})
async def confirm_subscription(subscription_id: str, body: ConfirmRequest, platform: Platform = Depends(get_platform)):
    return await service.confirm_subscription(platform, subscription_id=subscription_id, token=body.token)


@router.post("/notification-subscriptions/{subscription_id}/resend-confirmation", response_model=SubscriptionView,
             summary="Send a new confirmation request (the old token stops working)")
async def resend_confirmation(subscription_id: str, request: Request,
                              principal: Principal = Authorized("maas:notificationSubscriptions:resendConfirmation"),
                              platform: Platform = Depends(get_platform), queue: DeliveryQueue = Queue):
    return await service.resend_confirmation(platform, tenant_id=principal.tenant_id, subscription_id=subscription_id,
                                             confirm_base_url=_base_url(request), wake=queue.wake)


# ---- rules: which events of which jobs go to which topic
@router.post("/notification-rules", status_code=201, response_model=RuleView,
             summary="Send chosen event kinds of one job ('tuning-jobs/<id>'), of a kind ('tuning-jobs/*') or all ('*')")
async def create_rule(body: RuleCreate, principal: Principal = Authorized("maas:notificationRules:create"),
                      platform: Platform = Depends(get_platform)):
    return await service.create_rule(platform, tenant_id=principal.tenant_id, request=body)


@router.get("/notification-rules", summary="List rules (including those of jobs' event-notification settings)")
async def list_rules(principal: Principal = Authorized("maas:notificationRules:list"), subject: str | None = None,
                     platform: Platform = Depends(get_platform)):
    return await service.list_rules(platform, tenant_id=principal.tenant_id, subject=subject)


@router.delete("/notification-rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: str, principal: Principal = Authorized("maas:notificationRules:delete"),
                      platform: Platform = Depends(get_platform)):
    await service.delete_rule(platform, tenant_id=principal.tenant_id, rule_id=rule_id)
    return Response(status_code=204)


# ---- delivery log
@router.get("/notification-deliveries", summary="Delivery log, newest first")
async def list_deliveries(principal: Principal = Authorized("maas:notificationDeliveries:list"),
                          subscription_id: str | None = None,
                          status: DeliveryStatus | None = None, event_id: str | None = None, offset: Offset = 0,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50, platform: Platform = Depends(get_platform)):
    return await service.list_deliveries(platform, tenant_id=principal.tenant_id, subscription_id=subscription_id,
                                         status=status, event_id=event_id, offset=offset, limit=limit)


@router.get("/notification-deliveries/{delivery_id}", response_model=DeliveryView,
            summary="One delivery with its attempts")
async def get_delivery(delivery_id: str, principal: Principal = Authorized("maas:notificationDeliveries:get"),
                       platform: Platform = Depends(get_platform)):
    return await service.get_delivery(platform, tenant_id=principal.tenant_id, delivery_id=delivery_id)


@router.post("/notification-deliveries/{delivery_id}/retry", response_model=DeliveryView,
             summary="Re-drive a dead-lettered delivery")
async def retry_delivery(delivery_id: str, principal: Principal = Authorized("maas:notificationDeliveries:retry"),
                         platform: Platform = Depends(get_platform), queue: DeliveryQueue = Queue):
    return await service.retry_delivery(platform, tenant_id=principal.tenant_id, delivery_id=delivery_id,
                                        wake=queue.wake)


# ---- event timelines (kept 30 days)
@timeline_router.get("/events", summary="Events of the last 30 days, optionally of one subject ('models/<id>')")
async def list_events(principal: Principal = Authorized("maas:events:list"), subject: str | None = None,
                      type: Annotated[str | None, Query(description="event type, e.g. TuneCompleted")] = None,
                      kind: EventKind | None = None, since: datetime | None = None,
                      order: Literal["asc", "desc"] = "asc", offset: Offset = 0,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100, platform: Platform = Depends(get_platform)):
    return await timeline.list_events(platform, tenant_id=principal.tenant_id, subject=subject, event_type=type,
                                      kind=kind, since=since, order=order, offset=offset, limit=limit)


@timeline_router.get("/{resource}/{resource_id}/timeline",
                     summary="Timeline of a model, tuning job, compression job or service (30 days)")
async def resource_timeline(resource: str, resource_id: str, principal: Principal = Authorized("maas:timelines:get"),
                            order: Literal["asc", "desc"] = "asc", offset: Offset = 0,
                            limit: Annotated[int, Query(ge=1, le=500)] = 100,
                            platform: Platform = Depends(get_platform)):
    if resource not in TIMELINE_RESOURCES:
        raise not_found("resource kind", resource)
    return await timeline.list_events(platform, tenant_id=principal.tenant_id, subject=f"{resource}/{resource_id}",
                                      order=order, offset=offset, limit=limit)
