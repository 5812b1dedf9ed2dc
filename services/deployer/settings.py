"""Deployer options (environment variables ``MAAS_DEPLOYER_*``)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeployerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_DEPLOYER_", extra="ignore")

    backend: str = Field("local", description="instance backend: 'local' (subprocesses on this machine; "
                                              "Ray actors in the service's pool when MAAS_RAY_ADDRESS is set)")
    host: str = Field("127.0.0.1", description="address instances listen on (0.0.0.0 in a container)")
    advertise_host: str = Field("", description="address gateways use to reach the instances; default: host")
    ray_host: str = Field("", description="cluster mode: address instances listen on and advertise; default the "
                                          "node's IP address as Ray knows it (127.0.0.1 only when every Ray node "
                                          "runs on this machine, as in tests)")
    root: str = Field("", description="instances' model cache and logs; default <work_dir>/deployer (in cluster "
                                      "mode it must be on the work folder every Ray node mounts)")
    start_timeout_seconds: float = Field(900.0, gt=0, description="time an instance has to become ready")
    # Gateways refresh their routing table every 0.5 s; waiting a few refreshes after marking an
    # instance draining guarantees no new request reaches it before it is told to stop.
    drain_seconds: float = Field(1.5, ge=0)
    stop_grace_seconds: float = Field(60.0, gt=0, description="time in-flight requests get to finish on stop")
    probe_interval_seconds: float = Field(0.5, gt=0, description="how often a starting instance is probed")
    health_interval_seconds: float = Field(2.0, gt=0)
    unhealthy_after: int = Field(3, ge=1, description="failed probes in a row that make a ready instance unhealthy")
    start_attempts: int = Field(2, ge=1, description="tries per missing instance before the service is failed/alarm")
    resync_seconds: float = Field(10.0, gt=0, description="how often every service is checked against what runs")
    log_ship_seconds: float = Field(1.0, gt=0)
    # Several deployers may run (a standby beside the active one): one leads, by a lease in MongoDB.
    leader_lease_seconds: float = Field(15.0, gt=0, description="how long a silent leading deployer keeps the "
                                                                "lead before a standby takes over")
    leader_renew_seconds: float = Field(3.0, gt=0, description="how often the lead is renewed (and a standby tries)")


@lru_cache
def deployer_settings() -> DeployerSettings:
    return DeployerSettings()
