"""OpenTelemetry setup: one tracer provider per process, OTLP/HTTP export when configured.

Trace context crosses Kafka in message headers (FastStream's telemetry middleware injects and
extracts W3C ``traceparent``), so one trace runs HTTP request → outbox → Kafka → worker.

Without a collector (the embedded default) traces stay reachable: an OTLP/JSON-lines file
(``traces_file``), the console (``traces_console``) and the in-memory ring buffer behind
``GET /api/v1/traces/recent``. Server spans also feed the HTTP metrics of ``/metrics``.
"""
from __future__ import annotations

from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from services.lib.common.settings import Settings

_provider: TracerProvider | None = None


def traces_file_path(settings: Settings) -> Path | None:
    value = settings.traces_file.strip()
    if value == "auto":
        if settings.otlp_endpoint or not settings.work_dir:
            return None
        return Path(settings.work_dir) / "telemetry" / "traces.jsonl"
    return Path(value) if value else None


def tracer_provider(settings: Settings, *, extra_processors: list[SpanProcessor] = ()) -> TracerProvider:
    """The process-wide provider, created on first call."""
    global _provider
    if _provider is None:
        from services.lib.common.metrics import HttpMetricsSpanProcessor
        from services.lib.common.telemetry_export import RECENT_SPANS, OtlpJsonLinesExporter

        _provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        _provider.add_span_processor(HttpMetricsSpanProcessor())
        _provider.add_span_processor(RECENT_SPANS)
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")))
        path = traces_file_path(settings)
        if path is not None:
            _provider.add_span_processor(BatchSpanProcessor(OtlpJsonLinesExporter(path)))
        if settings.traces_console:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(_provider)
    for processor in extra_processors:
        _provider.add_span_processor(processor)
    return _provider


class FreshRequestContext:
    """ASGI wrapper: every request starts from an empty OpenTelemetry context.

    uvicorn resumes reading a flow-controlled connection (a large upload) from inside the request
    that paused it, so the connection's later callbacks, and the next request's task on that
    keep-alive connection, inherit that request's active span: the next request would become an
    INTERNAL child span in the previous request's trace instead of a SERVER span of its own.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        token = otel_context.attach(otel_context.Context())
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def isolate_request_context(app) -> None:
    """Wrap the (already instrumented) middleware stack of a Starlette/FastAPI app."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: FreshRequestContext(build())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
