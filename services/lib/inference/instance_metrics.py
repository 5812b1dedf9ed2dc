"""An instance's ``GET /metrics``: its engine's figures in the Prometheus text format.

Written by hand (not the platform's registry in services.lib.common.metrics): an instance process
runs no platform code, and these are a few gauges and counters read from the engine at scrape time.
The prefix cache counts tokens as vLLM does (``prefix_cache_queries`` / ``prefix_cache_hits``), so the
hit rate is ``rate(hits) / rate(queries)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.lib.inference.engine import Engine

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def instance_metrics(engine: Engine, *, model: str) -> str:
    cache, requests = engine.prefix_cache, engine.requests()
    rows = [
        ("maas_requests_running", "gauge", "requests being generated", requests["running"]),
        ("maas_requests_waiting", "gauge", "requests waiting for a sequence slot", requests["waiting"]),
        ("maas_prefix_cache_queries_total", "counter", "prompt tokens looked up in the prefix cache", cache.queries),
        ("maas_prefix_cache_hits_total", "counter", "prompt tokens whose KV cache came from the prefix cache",
         cache.hits),
        ("maas_prefix_cache_bytes", "gauge", "memory the prefix cache holds", cache.bytes),
        ("maas_prefix_cache_capacity_bytes", "gauge", "the prefix cache's budget (0: off)", cache.capacity_bytes),
    ]
    labels = f'{{model="{_label(model)}"}}'
    out = []
    for name, kind, help_text, value in rows:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{labels} {value}"]
    return "\n".join(out) + "\n"
