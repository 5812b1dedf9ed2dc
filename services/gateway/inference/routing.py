"""Which service a call is for, and which of its ready instances serves it.

The view of services and instances is at most ``refresh`` seconds old (kept fresh in the background,
services.gateway.views); the deployer marks an instance ``draining`` and waits longer than that
before stopping it, so a draining instance gets no new request. Among ready instances the one with
the fewest requests in flight from this gateway wins (least outstanding requests); ties go
round-robin.
"""
from __future__ import annotations

import itertools

from services.lib.common import metrics
from services.lib.common.context import Platform
from services.lib.readmodels.serving_refs import (InstanceRef, ServiceRef, find_service_by_name, get_service,
                                          ready_instances)
from services.gateway.views import ReadThroughView


# Sequences an instance decodes at once: the engine's default (services.lib.inference.engine
# DEFAULT_MAX_NUM_SEQS, which the deployer keeps); utilisation = requests in flight / this.
INSTANCE_SLOTS = 16


class Router:
    def __init__(self, platform: Platform, *, refresh: float = 0.5):
        self.platform, self.refresh = platform, refresh
        self._services = ReadThroughView(max_age=refresh)
        self._names = ReadThroughView(max_age=refresh)
        self._instances = ReadThroughView(max_age=refresh)
        self.outstanding: dict[str, int] = {}
        self._service_names: dict[str, str] = {}   # service id -> name, for metric labels
        self._turn = itertools.count()

    @property
    def views(self) -> list[ReadThroughView]:
        return [self._services, self._names, self._instances]

    async def service(self, service_id: str, *, fresh: bool = False) -> ServiceRef | None:
        service = await self._services.get(service_id, lambda: get_service(self.platform, service_id), fresh=fresh)
        self._remember(service)
        return service

    async def service_by_name(self, *, tenant_id: str, name: str) -> ServiceRef | None:
        service = await self._names.get((tenant_id, name), lambda: find_service_by_name(
            self.platform, tenant_id=tenant_id, name=name))
        self._remember(service)
        return service

    def _remember(self, service: ServiceRef | None) -> None:
        if service is not None:
            self._service_names[service.id] = service.name

    async def instances(self, service_id: str, *, fresh: bool = False) -> list[InstanceRef]:
        return await self._instances.get(service_id, lambda: ready_instances(self.platform, service_id), fresh=fresh)

    def pick(self, instances: list[InstanceRef], *, exclude: set[str] = frozenset()) -> InstanceRef | None:
        candidates = [i for i in instances if i.id not in exclude]
        if not candidates:
            return None
        least = min(self.outstanding.get(i.id, 0) for i in candidates)
        best = [i for i in candidates if self.outstanding.get(i.id, 0) == least]
        return best[next(self._turn) % len(best)]

    def acquire(self, instance: InstanceRef) -> None:
        """Count one more request in flight on ``instance`` (until ``release``)."""
        self.outstanding[instance.id] = self.outstanding.get(instance.id, 0) + 1
        self._report(instance)

    def release(self, instance: InstanceRef) -> None:
        left = self.outstanding.get(instance.id, 1) - 1
        if left > 0:
            self.outstanding[instance.id] = left
        else:
            self.outstanding.pop(instance.id, None)
        self._report(instance)

    def _report(self, instance: InstanceRef) -> None:
        service = self._service_names.get(instance.service_id, instance.service_id)
        metrics.instance_utilisation.labels(service=service, instance=instance.id).set(
            min(1.0, self.outstanding.get(instance.id, 0) / INSTANCE_SLOTS))
