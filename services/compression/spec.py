from contracts.compression import (COMPRESSION_TOPIC, CompressionCompleted, CompressionDeleted, CompressionFailed,
                                   CompressionRequested, CompressionStarted, CompressionStopped)
from contracts.events import REGISTRY_TOPIC, ModelArtifactProduced, TaskRecordChanged
from contracts.notifications import NotificationRuleChanged
from services.lib.common.service_spec import Consumer, ServiceSpec
from services.compression import api, handlers, worker
from services.lib.common.service_spec import PlatformBucket
from services.compression.models import INDEXES, MANAGED_BUCKET

COMPRESSION = ServiceSpec(
    name="compression",
    routers=[api.router, api.jobs_router],
    indexes=INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    consumers=[Consumer(group="compression", topic=REGISTRY_TOPIC, handlers=handlers.HANDLERS)],
    background=[worker.watch_leases],
    # CompressionRequested/Failed also when the lease watcher re-queues or fails a job whose worker died.
    publishes=[CompressionRequested, CompressionStopped, CompressionDeleted, CompressionFailed, TaskRecordChanged,
               NotificationRuleChanged],
)

# The compression worker scales on its own: each process is one more member of its consumer group.
COMPRESSION_WORKER = ServiceSpec(
    name="compression-worker",
    indexes=INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    consumers=[Consumer(group="compression-worker", topic=COMPRESSION_TOPIC, handlers=worker.HANDLERS)],
    background=[worker.run_worker],
    uses_models=True,
    component=worker.build_runner,
    publishes=[CompressionStarted, CompressionCompleted, CompressionFailed, ModelArtifactProduced, TaskRecordChanged],
)
