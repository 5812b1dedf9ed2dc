"""Platform configuration: environment variables (prefix ``MAAS_``) or a TOML/env file.

The same settings drive the embedded default and an external production stack: point
``MAAS_KAFKA_BOOTSTRAP``, ``MAAS_MONGO_URL`` and ``MAAS_S3_ENDPOINT`` at real Kafka, MongoDB and
MinIO and nothing else changes.
"""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


METRICS_TOKEN_MIN_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_", env_file=".env", extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field("maas", description="prefix of every topic name; lets two platforms share a cluster")

    # MongoDB
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "maas"
    # A call that needs MongoDB while it is down fails after this long with 503 (pymongo's default is
    # 30 s). Short enough for a client to see the answer, long enough for a loaded 2-core machine.
    mongo_server_selection_timeout_seconds: float = Field(5.0, gt=0, description=(
        "how long a MongoDB call waits for a reachable server before it fails (503)"))
    mongo_connect_timeout_seconds: float = Field(5.0, gt=0, description="TCP connect timeout to MongoDB")

    # S3 / MinIO
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "maasadmin"
    s3_secret_key: str = "maasadmin-secret"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # S3 calls are blocking (minio) and some last minutes (a model's weights): they get threads of
    # their own, so a few large transfers never starve the process's default pool (which every
    # other to_thread call, e.g. password hashing, waits on).
    s3_io_threads: int = Field(32, ge=1)
    system_bucket: str = "maas-system"
    # minio's defaults (5 min connect, 5 retries) made a call hang while S3 was down: connect fast and
    # retry a little; reads keep a long timeout (a large object's parts can take a while to answer).
    s3_connect_timeout_seconds: float = Field(5.0, gt=0, description="TCP connect timeout to S3")
    s3_read_timeout_seconds: float = Field(300.0, gt=0, description="longest wait for one read from S3")
    s3_max_retries: int = Field(2, ge=0, le=10, description="retries of a failed S3 request (connection errors, 5xx)")

    # Readiness (/healthz) and the 503 answers while a backing server is down.
    health_timeout_seconds: float = Field(3.0, gt=0, le=30, description=(
        "how long /healthz waits for each backing server (checked together) before calling it down"))
    unavailable_retry_after_seconds: int = Field(5, ge=1, description=(
        "Retry-After of a 503 answered because a backing server is unavailable"))

    # HTTP
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = Field(1_048_576, description="largest JSON body the REST API accepts")

    # Which services this process hosts (comma separated); "all" = embedded mode.
    services: str = "all"

    # Telemetry: OTLP/HTTP endpoint (e.g. http://otel-collector:4318); empty = no export.
    otlp_endpoint: str = ""
    service_name: str = "openmaas"
    traces_file: str = Field("auto", description=(
        "OTLP/JSON-lines trace file; 'auto' = <work_dir>/telemetry/traces.jsonl when no otlp_endpoint "
        "is set and work_dir is, '' = off, anything else = that path"))
    traces_console: bool = Field(False, description="also print finished spans to stdout")
    # /metrics names every tenant's services and models: it answers an admin's token or this one.
    metrics_token: SecretStr = Field(SecretStr(""), description=(
        "bearer token Prometheus sends to GET /metrics (at least 32 characters); empty = only platform "
        "admins' tokens are accepted"))

    # Webhook notifications.
    webhook_allow_private: bool = Field(False, description=(
        "allow webhook endpoints on private, loopback or link-local addresses; off everywhere, the embedded "
        "default included, since any tenant's webhook could then reach the platform's own servers"))
    webhook_max_attempts: int = Field(6, ge=1, le=50, description="attempts before a delivery is dead-lettered")
    webhook_retry_base_seconds: float = Field(5.0, gt=0, description="first retry delay; doubles per attempt")
    webhook_retry_max_seconds: float = Field(3600.0, gt=0, description="longest delay between two attempts")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="time a receiver has to answer")

    # Sessions and the audit log (services/lib/common/auth.py, services/lib/common/audit.py).
    token_ttl_hours: float = Field(12.0, gt=0, le=24 * 365, description=(
        "how long a login token is valid; POST /api/v1/auth/refresh exchanges it for a new one before then"))
    audit_retention_days: int = Field(180, ge=1, le=3650, description="audit records are deleted this long after the call")

    # Outbox relay poll interval when no in-process nudge arrives.
    outbox_poll_seconds: float = 0.5
    # An event reaching a consumer later than this after it occurred is logged as a warning
    # (every delivery is in the maas_event_delivery_seconds histogram).
    slow_event_seconds: float = Field(5.0, gt=0, description="warn when an event is delivered later than this")

    import_presets: bool = Field(True, description="import the model square's preset weights (SmolLM2, ~540 MB "
                                                   "converted) at first start; off: no preset services")

    # Work area for workers (downloads of weights etc.). In cluster mode every compute node must
    # mount it at the same path (a shared volume): job work reads and writes its files there.
    work_dir: str = ""
    # The embedded servers' data folder (`maas up` sets it): its free space is watched with work_dir's.
    data_dir: str = Field("", description="the embedded servers' data folder, watched for free space")
    min_free_disk_bytes: int = Field(256 * 2**20, ge=0, description=(
        "below this many free bytes in data_dir or work_dir the disk counts as full: /healthz says so and "
        "calls that fail on storage answer 507"))

    # Compute: empty = this machine is the one node of the public pool; an address = a Ray cluster
    # whose nodes carry the label openmaas.io/pool=<pool> (docs/cluster.md).
    ray_address: str = Field("", description="Ray cluster address (host:port or ray://host:port); empty = local")
    ray_namespace: str = Field("openmaas", description="Ray namespace of this platform's actors and tasks")
    # Resizing dedicated pools from the API (docs/cluster.md "Resizing a dedicated pool"): who starts
    # and stops the nodes. none: the platform engineer labels nodes; local: `maas up --ray` starts Ray
    # worker processes on this machine; kuberay: the pool's worker group of the RayCluster is scaled.
    pool_provisioner: str = Field("none", pattern="^(none|local|kuberay)$", description=(
        "who starts a dedicated pool's nodes: none | local (maas up --ray) | kuberay"))
    pool_max_nodes: int = Field(8, ge=0, le=1000, description="most nodes one dedicated pool may ask for")
    pool_node_max_cpus: float = Field(64, gt=0, le=1024, description="most CPUs one node of a pool may ask for")
    pool_node_max_memory_gb: float = Field(512, gt=0, le=16384, description="most memory (GiB) one node may ask for")
    pool_reconcile_seconds: float = Field(2.0, gt=0, le=300, description="how often pool nodes are reconciled")
    kuberay_cluster: str = Field("openmaas-ray", description="the RayCluster whose worker groups are the pools")
    kuberay_namespace: str = Field("openmaas", description="the namespace of that RayCluster")
    kubernetes_api_url: str = Field("https://kubernetes.default.svc", description=(
        "the Kubernetes API the kuberay provisioner patches (in-cluster, with its service account)"))
    local_pool_cpus: float = Field(0, ge=0, description="CPUs of the local public pool; 0 = the machine's")
    local_pool_memory_bytes: int = Field(0, ge=0, description="memory of the local public pool; 0 = the machine's, "
                                                              "at least 4 GiB per CPU of the pool")

    @field_validator("metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < METRICS_TOKEN_MIN_LENGTH:
            raise ValueError(f"must be empty or at least {METRICS_TOKEN_MIN_LENGTH} characters "
                             "(e.g. openssl rand -hex 32)")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
