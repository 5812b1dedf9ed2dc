from contracts.events import REGISTRY_TOPIC, ModelArtifactProduced, TaskRecordChanged
from contracts.notifications import NotificationRuleChanged
from contracts.tuning import (TUNING_TOPIC, CheckpointConversionRequested, CheckpointSaved, TuneCompleted, TuneDeleted,
                              TuneFailed, TuneHangSuspected, TuneProgress, TuneRequested, TuneStarted, TuneStopped)
from services.lib.common.service_spec import Consumer, ServiceSpec
from services.tuning import api, handlers, watchdog, worker
from services.lib.common.service_spec import PlatformBucket
from services.tuning.models import INDEXES, MANAGED_BUCKET

TUNING = ServiceSpec(
    name="tuning",
    routers=[api.router, api.jobs_router],
    indexes=INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    consumers=[
        Consumer(group="tuning", topic=TUNING_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == TUNING_TOPIC}),
        Consumer(group="tuning", topic=REGISTRY_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == REGISTRY_TOPIC}),
    ],
    background=[watchdog.watch_leases],
    # TuneFailed/TuneRequested also when the lease watcher fails or re-queues a job whose worker died.
    publishes=[TuneRequested, TuneStopped, TuneDeleted, TuneFailed, TuneHangSuspected, CheckpointConversionRequested,
               ModelArtifactProduced, TaskRecordChanged, NotificationRuleChanged],
)

# The training worker scales on its own: each process is one more member of its consumer group.
TUNING_WORKER = ServiceSpec(
    name="tuning-worker",
    indexes=INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    consumers=[Consumer(group="tuning-worker", topic=TUNING_TOPIC, handlers=worker.HANDLERS)],
    background=[worker.run_worker],
    uses_models=True,
    component=worker.build_worker,
    publishes=[TuneStarted, TuneProgress, CheckpointSaved, TuneCompleted, TuneFailed, TuneStopped, TuneRequested,
               ModelArtifactProduced, TaskRecordChanged],
)
