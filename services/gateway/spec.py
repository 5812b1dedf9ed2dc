from services.common.service_spec import ServiceSpec
from services.gateway import identity, storage_api

GATEWAY = ServiceSpec(
    name="gateway",
    routers=[identity.router, storage_api.router],
    indexes=identity.INDEXES,
)
