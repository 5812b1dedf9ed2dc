from contracts.serving import PresetServiceWakeRequested
from services.lib.common.service_spec import ServiceSpec
from services.gateway.accounts import audit_api, credentials, iam_api, identity, login_throttle, sessions
from services.gateway.inference import chat, moderation, openai_api, playground
from services.gateway.keys import api as keys_api
from services.gateway.keys import limits as key_limits
from services.gateway.keys import service as keys
from services.gateway.quotas import api as quotas_api
from services.gateway.quotas import metering
from services.gateway.quotas import ratelimit
from services.gateway.quotas import service as quotas
from services.gateway.storage import api as storage_api
from services.lib.iam import store as iam_store
from services.lib.pools import api as pools_api
from services.lib.pools import ledger as pool_ledger
from services.lib.pools import models as pool_models
from services.lib.pools import provisioning as pool_provisioning
from services.lib.pools import usage as pool_usage

GATEWAY = ServiceSpec(
    name="gateway",
    routers=[identity.router, sessions.router, credentials.router, storage_api.router, keys_api.router,
             quotas_api.router, metering.router, moderation.router, playground.router, audit_api.router,
             iam_api.router, pools_api.router, pools_api.usage_router],
    hot_routers=[openai_api.router],
    indexes=identity.INDEXES + sessions.INDEXES + login_throttle.INDEXES + keys.INDEXES + key_limits.INDEXES
    + quotas.INDEXES + metering.INDEXES + iam_store.INDEXES + pool_models.INDEXES + pool_ledger.INDEXES
    + pool_usage.INDEXES + ratelimit.INDEXES,
    background=[chat.run_gateway, pool_provisioning.reconcile_pool_nodes],   # the latter: kuberay only
    component=chat.build_gateway,
    publishes=[PresetServiceWakeRequested],
)
