"""The deployer's documents: ``service_instances`` (what runs where) and ``service_logs``.

Instance document: _id, service_id, tenant_id, version_id, status (starting | ready | unhealthy |
draining), url, secret (what the gateway sends the instance; never in an API response), node, details
(backend-specific), backend, started_at, ready_at, message.
Log line: service_id, tenant_id, instance_id, seq (global order), at, line.
Handed nudge (``deployer_nudges``): _id (service id), retry, at — a service event that reached a
standby deployer, for the leading one to act on.
"""
from __future__ import annotations

from pymongo import ASCENDING

from services.lib.common.mongo import IndexSpec
from services.lib.readmodels.serving_refs import INSTANCES, SERVICE_LOGS

LOGS_KEPT_DAYS = 30
NUDGES = "deployer_nudges"

INDEXES: list[IndexSpec] = [
    (INSTANCES, [("service_id", ASCENDING), ("status", ASCENDING)], {}),
    (INSTANCES, [("status", ASCENDING)], {}),
    (SERVICE_LOGS, [("service_id", ASCENDING), ("seq", ASCENDING)], {}),
    (SERVICE_LOGS, [("at", ASCENDING)], {"expireAfterSeconds": LOGS_KEPT_DAYS * 24 * 3600}),
]
