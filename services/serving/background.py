"""Periodic work of the serving API: auto-stop deadlines and the preset services."""
from __future__ import annotations

import asyncio
import logging

from services.lib.common.context import Platform
from services.serving import service
from services.serving.settings import serving_settings

log = logging.getLogger(__name__)


async def serving_sweeper(platform: Platform) -> None:
    settings = serving_settings()
    while True:
        try:
            await service.ensure_preset_services(platform, autostart=settings.preset_autostart,
                                                 qps_limit=settings.preset_qps_limit,
                                                 instance_spec=settings.preset_instance_spec)
            stopped = await service.sweep_auto_stop(platform)
            if stopped:
                log.info("auto-stop: stopped %d service(s)", stopped)
        except asyncio.CancelledError:
            raise
        except Exception:  # database hiccup: try again on the next round
            log.exception("serving sweep failed")
        await asyncio.sleep(settings.sweep_seconds)
