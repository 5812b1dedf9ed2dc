from services.lib.common import metrics
from services.lib.common.service_spec import Consumer, ServiceSpec
from services.notifier import api, delivery, handlers, models, timeline


async def _delivery_queue(platform) -> None:
    pipeline = [{"$match": {"status": {"$in": [models.DeliveryStatus.pending, models.DeliveryStatus.dead]}}},
                {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
    counts = {row["_id"]: row["n"] async for row in platform.mongo[models.DELIVERIES].aggregate(pipeline)}
    for status in (models.DeliveryStatus.pending, models.DeliveryStatus.dead):
        metrics.webhook_queue.labels(status=status.value).set(counts.get(status, 0))


async def _jobs_by_state(platform) -> None:
    counts = await timeline.state_counts(platform)
    metrics.jobs.clear()  # states that emptied must not linger at their last count
    for (resource, state), n in counts.items():
        metrics.jobs.labels(resource=resource, state=state).set(n)


async def register_metrics(queue: delivery.DeliveryQueue) -> None:
    """Scrape-time gauges of the process that hosts the notifier (it owns their data)."""
    metrics.on_scrape("notifier.delivery_queue", _delivery_queue, every=10)
    metrics.on_scrape("notifier.jobs_by_state", _jobs_by_state, every=10)


NOTIFIER = ServiceSpec(
    name="notifier",
    routers=[api.router, api.timeline_router],
    indexes=models.INDEXES + timeline.INDEXES,
    # One group over every topic: each event is stored in its timeline and matched against rules.
    consumers=[Consumer(group="notifier", topic=t, handlers=handlers.handlers_for(t)) for t in handlers.topics()],
    background=[delivery.run_delivery_queue, register_metrics],
    component=delivery.DeliveryQueue,
)
