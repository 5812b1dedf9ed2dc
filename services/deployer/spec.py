from contracts.serving import SERVING_TOPIC, InstanceChanged, ServiceStatusReported
from services.lib.common.service_spec import Consumer, ServiceSpec
from services.deployer import handlers, runtime
from services.deployer.models import INDEXES

DEPLOYER = ServiceSpec(
    name="deployer",
    indexes=INDEXES,
    consumers=[Consumer(group="deployer", topic=SERVING_TOPIC, handlers=handlers.HANDLERS)],
    background=[runtime.run_deployer],
    component=runtime.build_reconciler,
    publishes=[InstanceChanged, ServiceStatusReported],
)
