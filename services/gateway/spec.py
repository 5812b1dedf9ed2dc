from services.common.service_spec import ServiceSpec
from services.gateway import chat, identity, keys, metering, moderation, openai_api, playground, quota, storage_api

GATEWAY = ServiceSpec(
    name="gateway",
    routers=[identity.router, storage_api.router, keys.router, quota.router, metering.router, moderation.router,
             playground.router],
    hot_routers=[openai_api.router],
    indexes=identity.INDEXES + keys.INDEXES + quota.INDEXES + metering.INDEXES,
    background=[chat.run_gateway],
)
