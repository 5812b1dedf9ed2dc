from contracts.events import (REGISTRY_TOPIC, TASKS_TOPIC, ModelArtifactRejected, ModelCreated, ModelDeleted,
                             ModelVersionCreated, ModelVersionStatusChanged, WeightValidationCompleted,
                             WeightValidationRequested)
from services.lib.common.service_spec import Consumer, ServiceSpec
from services.registry import api, handlers, presets, validation_jobs
from services.lib.common.service_spec import PlatformBucket
from services.registry.models import INDEXES, MANAGED_BUCKET

REGISTRY = ServiceSpec(
    name="registry",
    routers=[api.router],
    indexes=INDEXES + validation_jobs.INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    consumers=[
        Consumer(group="registry", topic=REGISTRY_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == REGISTRY_TOPIC}),
        Consumer(group="registry", topic=TASKS_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == TASKS_TOPIC}),
    ],
    background=[presets.import_all_presets, validation_jobs.watch_leases],
    uses_models=True,
    # WeightValidationCompleted: a validation whose worker died too often fails in the lease watcher.
    publishes=[ModelCreated, ModelVersionCreated, ModelDeleted, ModelVersionStatusChanged, ModelArtifactRejected,
               WeightValidationRequested, WeightValidationCompleted],
)

# The weight validation worker scales separately from the API (it loads models): each process is
# one more member of its consumer group.
REGISTRY_WORKER = ServiceSpec(
    name="registry-worker",
    indexes=INDEXES + validation_jobs.INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    uses_models=True,
    consumers=[Consumer(group="registry-weights", topic=REGISTRY_TOPIC, handlers=validation_jobs.HANDLERS)],
    background=[validation_jobs.run_worker],
    component=validation_jobs.build_runner,
    publishes=[WeightValidationCompleted],
)
