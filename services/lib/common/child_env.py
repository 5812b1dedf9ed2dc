"""The environment a child process that runs user-influenced work (training, inference) starts with.

Such a child needs the interpreter's settings (PATH, threads, accelerator and HF cache variables)
but none of the platform's credentials: if user data ever subverted it, it must hold nothing that
reaches MongoDB, S3 or Kafka. The parent keeps the credentials and does all storage I/O itself.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

# Variable prefixes that carry the platform's (or a cloud's) credentials and endpoints.
SECRET_PREFIXES = ("MAAS_", "AWS_", "MINIO_", "NANIO_", "MONGO", "KAFKA_", "OTEL_EXPORTER_OTLP_HEADERS")


def child_env(extra: Mapping[str, str] | None = None, *, parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """``parent`` (default os.environ) without credential-bearing variables, plus ``extra``."""
    source = os.environ if parent is None else parent
    env = {k: v for k, v in source.items() if not k.upper().startswith(SECRET_PREFIXES)}
    env.update(extra or {})
    return env
