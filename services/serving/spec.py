from contracts.events import TaskRecordChanged
from contracts.notifications import NotificationRuleChanged
from contracts.serving import (DEPLOYER_TOPIC, GATEWAY_TOPIC, ServiceDeleted, ServiceDeployRequested,
                               ServiceModerationChanged, ServiceQpsChanged, ServiceScaled, ServiceStarted,
                               ServiceStatusChanged, ServiceStopped, ServiceUpgraded)
from services.lib.common.service_spec import Consumer, ServiceSpec
from services.serving import api, background, handlers
from services.serving.migrations import MIGRATIONS
from services.serving.models import INDEXES, READ_INDEXES

SERVING = ServiceSpec(
    name="serving",
    routers=[api.router],
    indexes=INDEXES + READ_INDEXES,
    consumers=[
        Consumer(group="serving", topic=topic, handlers={k: v for k, v in handlers.HANDLERS.items() if k.topic == topic})
        for topic in (DEPLOYER_TOPIC, GATEWAY_TOPIC)
    ],
    background=[background.serving_sweeper],
    publishes=[ServiceDeployRequested, ServiceStarted, ServiceStopped, ServiceDeleted, ServiceScaled, ServiceQpsChanged,
               ServiceUpgraded, ServiceModerationChanged, ServiceStatusChanged, TaskRecordChanged,
               NotificationRuleChanged],
    migrations=MIGRATIONS,
)
