"""Prometheus metrics: one registry per process, the platform's metric families, and helpers.

Every process answers ``GET /metrics`` (services/lib/common/health.py) with this registry in the text
format; Prometheus scrapes each container. All families are declared here, in one place, so the
Grafana dashboards can be checked against them (tests/unit/test_dashboards.py).

How each family is fed:
- HTTP requests/latency: ``HttpMetricsSpanProcessor`` turns the server spans of the OpenTelemetry
  FastAPI instrumentation into counts and latencies (route templates, never raw paths).
- events published / delivered / consumed: ``services.lib.common.bus.publish_envelope`` and the runtime's
  dispatcher.
- gauges read from MongoDB or Kafka (jobs by state, consumer lag, outbox backlog, webhook backlog):
  scrape hooks (``on_scrape``) that the hosting service registers; each is re-run at most every
  ``every`` seconds, so a scrape never costs more than a few cached queries.
- tokens and instance utilisation: helpers other services call (``record_tokens``,
  ``set_instance_utilisation``); the OpenTelemetry GenAI metrics (``gen_ai_*``): ``record_genai_call``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Awaitable, Callable

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import gc_collector, platform_collector, process_collector

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

build_info = Gauge("maas_build_info", "Always 1; labels name the services this process hosts",
                   ["services", "version"], registry=REGISTRY)

# ---- HTTP (fed by HttpMetricsSpanProcessor)
http_requests = Counter("maas_http_requests", "HTTP requests answered",
                        ["method", "route", "status_code"], registry=REGISTRY)
http_request_duration = Histogram("maas_http_request_duration_seconds", "HTTP request latency",
                                  ["method", "route"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)

# ---- events on the bus
events_published = Counter("maas_events_published", "Events published to Kafka by the outbox relay",
                           ["topic", "type"], registry=REGISTRY)
events_consumed = Counter("maas_events_consumed", "Events handled by a consumer group (outcome ok/error/ignored)",
                          ["group", "type", "outcome"], registry=REGISTRY)
event_handler_duration = Histogram("maas_event_handler_duration_seconds", "Time an event handler took",
                                   ["group", "type"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
event_delivery = Histogram("maas_event_delivery_seconds",
                           "Time from an event occurring to a consumer group starting to handle it",
                           ["group", "type"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
consumer_lag = Gauge("maas_consumer_lag_messages", "Messages a consumer group has not committed yet",
                     ["group", "topic"], registry=REGISTRY)
outbox_pending = Gauge("maas_outbox_pending_events", "Committed events the outbox relay has not published yet",
                       registry=REGISTRY)

# ---- jobs and services (a gauge computed from MongoDB on scrape)
jobs = Gauge("maas_jobs", "Jobs, models and services by resource kind and state",
             ["resource", "state"], registry=REGISTRY)

# ---- inference hooks (called by the serving side)
tokens = Counter("maas_tokens", "Tokens processed by inference (kind: prompt or completion)",
                 ["service", "model", "kind"], registry=REGISTRY)
instance_utilisation = Gauge("maas_instance_utilisation_ratio",
                             "Share of an inference instance's capacity in use (0..1)",
                             ["service", "instance"], registry=REGISTRY)

# ---- OpenTelemetry GenAI semantic conventions (fed by services/gateway/inference/genai_telemetry.py)
# Named as OpenTelemetry's Prometheus exporter names the semconv instruments (dots become underscores,
# the unit "s" a "_seconds" suffix), with the semconv's advised bucket boundaries. The gateway is the
# GenAI server its callers talk to (gen_ai.server.*); toward the model instance it is a client, and the
# token usage the instance reports is recorded under the one token metric the semconv defines
# (gen_ai.client.token.usage). Labels: gen_ai_operation_name, gen_ai_provider_name,
# gen_ai_request_model (a service name: bounded like maas_tokens' service label), and error_type.
_GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
genai_token_usage = Histogram(
    "gen_ai_client_token_usage", "GenAI: tokens used per call (gen_ai_token_type input or output)",
    [*_GENAI_LABELS, "gen_ai_token_type"], registry=REGISTRY,
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864))
genai_request_duration = Histogram(
    "gen_ai_server_request_duration_seconds", "GenAI: time from a call reaching a model to its answer's end",
    [*_GENAI_LABELS, "error_type"], registry=REGISTRY,
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92))
genai_time_to_first_token = Histogram(
    "gen_ai_server_time_to_first_token_seconds", "GenAI: time to the first streamed chunk of an answer",
    _GENAI_LABELS, registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0))
genai_time_per_output_token = Histogram(
    "gen_ai_server_time_per_output_token_seconds", "GenAI: time per output token after the first (streams)",
    _GENAI_LABELS, registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5))

# ---- webhook notifications
webhook_deliveries = Counter("maas_webhook_deliveries", "Webhook delivery attempts (outcome succeeded/retry/dead)",
                             ["kind", "outcome"], registry=REGISTRY)
webhook_delivery_duration = Histogram("maas_webhook_delivery_duration_seconds", "Webhook request time",
                                      buckets=_LATENCY_BUCKETS, registry=REGISTRY)
webhook_queue = Gauge("maas_webhook_deliveries_queued", "Webhook deliveries by status (pending, dead)",
                      ["status"], registry=REGISTRY)


# ---- the embedded servers of `maas up` (services/lib/embedded/servers.py supervises them)
embedded_server_restarts = Counter("maas_embedded_server_restarts", "Embedded servers (s3, mongo, kafka) restarted "
                                   "after their process died", ["server"], registry=REGISTRY)

# ------------------------------------------------------------------------------------ helpers

def record_tokens(*, service: str, model: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
    """Count the tokens of one inference call; dashboards show rate() of it as tokens/s."""
    if prompt_tokens:
        tokens.labels(service=service, model=model, kind="prompt").inc(prompt_tokens)
    if completion_tokens:
        tokens.labels(service=service, model=model, kind="completion").inc(completion_tokens)


def record_genai_call(*, operation: str, provider: str, model: str, seconds: float, input_tokens: int = 0,
                      output_tokens: int = 0, first_token_seconds: float | None = None,
                      error_type: str | None = None) -> None:
    """The GenAI semconv metrics of one call (token usage only of calls that used tokens)."""
    labels = {"gen_ai_operation_name": operation, "gen_ai_provider_name": provider, "gen_ai_request_model": model}
    genai_request_duration.labels(**labels, error_type=error_type or "").observe(seconds)
    for kind, count in (("input", input_tokens), ("output", output_tokens)):
        if count:
            genai_token_usage.labels(**labels, gen_ai_token_type=kind).observe(count)
    if first_token_seconds is not None:
        genai_time_to_first_token.labels(**labels).observe(first_token_seconds)
        if output_tokens > 1:
            genai_time_per_output_token.labels(**labels).observe(
                max(0.0, seconds - first_token_seconds) / (output_tokens - 1))


def set_instance_utilisation(*, service: str, instance: str, ratio: float) -> None:
    instance_utilisation.labels(service=service, instance=instance).set(max(0.0, min(1.0, ratio)))


def forget_instance(*, service: str, instance: str) -> None:
    """Drop a stopped instance's series so it does not linger at its last value."""
    try:
        instance_utilisation.remove(service, instance)
    except KeyError:
        pass


def count_published(*, topic: str, event_type: str) -> None:
    events_published.labels(topic=topic, type=event_type).inc()


def observe_delivery(*, group: str, event_type: str, occurred_at: datetime) -> float:
    """Record how long an event took from its transaction to a handler; returns the seconds."""
    seconds = max(0.0, (datetime.now(UTC) - occurred_at).total_seconds())
    event_delivery.labels(group=group, type=event_type).observe(seconds)
    return seconds


def observe_consumed(*, group: str, event_type: str, outcome: str, seconds: float) -> None:
    events_consumed.labels(group=group, type=event_type, outcome=outcome).inc()
    if outcome != "ignored":
        event_handler_duration.labels(group=group, type=event_type).observe(seconds)


class HttpMetricsSpanProcessor(SpanProcessor):
    """HTTP metrics from the server spans the FastAPI instrumentation already produces.

    Reads both the old (``http.method``) and the stable (``http.request.method``) semantic
    conventions. Requests that matched no route are labelled ``unmatched`` to bound cardinality.
    """

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is not SpanKind.SERVER or span.end_time is None or span.start_time is None:
            return
        attrs = span.attributes or {}
        method = attrs.get("http.request.method") or attrs.get("http.method")
        if method is None:
            return  # not an HTTP server span
        route = str(attrs.get("http.route") or "unmatched")
        status = str(attrs.get("http.response.status_code") or attrs.get("http.status_code") or "0")
        http_requests.labels(method=method, route=route, status_code=status).inc()
        http_request_duration.labels(method=method, route=route).observe((span.end_time - span.start_time) / 1e9)


# ------------------------------------------------------------------------------------ scrape hooks

ScrapeHook = Callable[[Any], Awaitable[None]]  # (platform) -> None; sets gauges


@dataclass
class _Hook:
    fn: ScrapeHook
    every: float
    last: float = float("-inf")


_hooks: dict[str, _Hook] = {}


def on_scrape(name: str, fn: ScrapeHook, *, every: float = 15.0) -> None:
    """Run ``fn(platform)`` before a scrape renders, at most once per ``every`` seconds (cached)."""
    _hooks[name] = _Hook(fn, every)


async def refresh(platform: Any, *, timeout: float = 5.0) -> None:
    """Run the due scrape hooks concurrently; a failing or slow hook keeps its last values."""
    now = time.monotonic()
    due = [(name, hook) for name, hook in _hooks.items() if now - hook.last >= hook.every]
    for _, hook in due:
        hook.last = now

    async def run(name: str, hook: _Hook) -> None:
        try:
            await asyncio.wait_for(hook.fn(platform), timeout=timeout)
        except Exception:
            log.warning("metrics scrape hook %s failed", name, exc_info=True)

    await asyncio.gather(*(run(n, h) for n, h in due))


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# ------------------------------------------------------------------------------------ introspection

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def metric_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every sample name this registry can expose (e.g. ``maas_http_requests_total``, ``..._bucket``)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
