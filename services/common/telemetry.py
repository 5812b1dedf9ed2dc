"""OpenTelemetry setup: one tracer provider per process, OTLP/HTTP export when configured.

Trace context crosses Kafka in message headers (FastStream's telemetry middleware injects and
extracts W3C ``traceparent``), so one trace runs HTTP request → outbox → Kafka → worker.
"""
from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from services.common.settings import Settings

_provider: TracerProvider | None = None


def tracer_provider(settings: Settings, *, extra_processors: list[SpanProcessor] = ()) -> TracerProvider:
    """The process-wide provider, created on first call."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")))
        trace.set_tracer_provider(_provider)
    for processor in extra_processors:
        _provider.add_span_processor(processor)
    return _provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
