from contracts.events import REGISTRY_TOPIC, TASKS_TOPIC
from services.common.service_spec import Consumer, ServiceSpec
from services.registry import api, handlers, presets, worker
from services.registry.models import INDEXES

REGISTRY = ServiceSpec(
    name="registry",
    routers=[api.router],
    indexes=INDEXES,
    consumers=[
        Consumer(group="registry", topic=REGISTRY_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == REGISTRY_TOPIC}),
        Consumer(group="registry", topic=TASKS_TOPIC, handlers={
            k: v for k, v in handlers.HANDLERS.items() if k.topic == TASKS_TOPIC}),
    ],
    background=[presets.import_all_presets],
    uses_models=True,
)

# The weight import worker scales separately from the API (it loads models).
REGISTRY_WORKER = ServiceSpec(
    name="registry-worker",
    indexes=INDEXES,
    uses_models=True,
    consumers=[Consumer(group="registry-weights", topic=REGISTRY_TOPIC, handlers=worker.HANDLERS)],
)
