from contracts.events import REGISTRY_TOPIC, TASKS_TOPIC, WeightValidationRequested
from services.common.service_spec import Consumer, ServiceSpec
from services.registry import api, handlers, presets, resend, worker
from services.common.storage_acl import PlatformBucket
from services.jobs.local_process import LocalProcessExecutor
from services.registry.models import INDEXES, MANAGED_BUCKET

REGISTRY = ServiceSpec(
    name="registry",
    routers=[api.router],
    indexes=INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    consumers=[
        Consumer(group="registry", topic=REGISTRY_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == REGISTRY_TOPIC}),
        Consumer(group="registry", topic=TASKS_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == TASKS_TOPIC}),
    ],
    background=[presets.import_all_presets, resend.resend_forever],
    uses_models=True,
)

# The weight import worker scales separately from the API (it loads models).
REGISTRY_WORKER = ServiceSpec(
    name="registry-worker",
    indexes=INDEXES,
    buckets=[PlatformBucket(MANAGED_BUCKET)],
    uses_models=True,
    # One message at a time per consumer; a warm job process keeps torch imported between models.
    consumers=[Consumer(group="registry-weights", topic=REGISTRY_TOPIC, handlers={
        WeightValidationRequested: worker.WeightImporter(LocalProcessExecutor(reuse_processes=True,
                                                                              max_concurrent=1))})],
)
