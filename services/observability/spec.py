from services.lib.common.service_spec import ServiceSpec
from services.observability import api, probes

# Platform-wide gauges (outbox backlog, consumer lag) are probed by one process; every process
# answers /metrics itself (services/lib/common/health.py) with its own HTTP and event counters.
OBSERVABILITY = ServiceSpec(
    name="observability",
    routers=[api.router],
    background=[probes.run_probes],
)
