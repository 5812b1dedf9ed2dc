from services.common.service_spec import ServiceSpec
from services.gateway import (
    audit_api,
    chat,
    credentials,
    iam_api,
    identity,
    key_limits,
    keys,
    login_throttle,
    metering,
    moderation,
    openai_api,
    playground,
    quota,
    sessions,
    storage_api,
)
from services.iam import store as iam_store

GATEWAY = ServiceSpec(
    name="gateway",
    routers=[identity.router, sessions.router, credentials.router, storage_api.router, keys.router, quota.router,
             metering.router, moderation.router, playground.router, audit_api.router, iam_api.router],
    hot_routers=[openai_api.router],
    indexes=identity.INDEXES + sessions.INDEXES + login_throttle.INDEXES + keys.INDEXES + key_limits.INDEXES
    + quota.INDEXES + metering.INDEXES + iam_store.INDEXES,
    background=[chat.run_gateway],
    component=chat.build_gateway,
)
