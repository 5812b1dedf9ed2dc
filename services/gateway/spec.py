from services.common.service_spec import ServiceSpec
from services.gateway import health, identity, storage_api

GATEWAY = ServiceSpec(
    name="gateway",
    routers=[health.router, identity.router, storage_api.router],
    indexes=identity.INDEXES,
)
