"""Metrics registry and trace exporters of the embedded default (no collector), without servers."""
from __future__ import annotations

import json

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from services.lib.common import metrics
from services.lib.common.settings import Settings
from services.lib.common.telemetry import traces_file_path
from services.lib.common.telemetry_export import OtlpJsonLinesExporter, RecentSpans


def _provider(*processors) -> TracerProvider:
    provider = TracerProvider()
    for p in processors:
        provider.add_span_processor(p)
    return provider


def _sample(name: str, **labels) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_otlp_json_lines_file_holds_one_export_request_per_batch_with_hex_ids(tmp_path):
    path = tmp_path / "t" / "traces.jsonl"
    tracer = _provider(SimpleSpanProcessor(OtlpJsonLinesExporter(path))).get_tracer("test")
    with tracer.start_as_current_span("POST /api/v1/models", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/api/v1/models")
        with tracer.start_as_current_span("child"):
            pass
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # SimpleSpanProcessor exports span by span
    spans = [json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0] for line in lines]
    child, root = spans
    assert root["name"] == "POST /api/v1/models" and root["kind"] == 2  # SPAN_KIND_SERVER as an integer
    assert len(root["traceId"]) == 32 and int(root["traceId"], 16) == parent.get_span_context().trace_id
    assert child["parentSpanId"] == root["spanId"] and len(root["spanId"]) == 16
    assert {"key": "http.route", "value": {"stringValue": "/api/v1/models"}} in root["attributes"]


def test_the_trace_file_rotates_past_its_size_limit(tmp_path):
    path = tmp_path / "traces.jsonl"
    tracer = _provider(SimpleSpanProcessor(OtlpJsonLinesExporter(path, max_bytes=2000))).get_tracer("test")
    for i in range(20):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
    assert path.with_name("traces.jsonl.1").exists()
    assert path.stat().st_size <= 2000


def test_traces_file_setting():
    assert traces_file_path(Settings(_env_file=None, work_dir="/data/work")).as_posix() == \
        "/data/work/telemetry/traces.jsonl"
    assert traces_file_path(Settings(_env_file=None, work_dir="/data/work", otlp_endpoint="http://c:4318")) is None
    assert traces_file_path(Settings(_env_file=None, work_dir="", traces_file="auto")) is None
    assert traces_file_path(Settings(_env_file=None, traces_file="")) is None
    assert traces_file_path(Settings(_env_file=None, traces_file="/tmp/x.jsonl")).as_posix() == "/tmp/x.jsonl"


def test_recent_spans_group_into_traces_newest_first():
    recent = RecentSpans(capacity=100)
    tracer = _provider(recent).get_tracer("test")
    with tracer.start_as_current_span("first"):
        with tracer.start_as_current_span("inner"):
            pass
    with tracer.start_as_current_span("GET /metrics", kind=SpanKind.SERVER):
        pass  # scrapes are not kept
    with tracer.start_as_current_span("second") as span:
        span.set_status(StatusCode.ERROR)
    traces = recent.traces()
    assert [t["root"] for t in traces] == ["second", "first"]
    assert traces[0]["error"] is True and traces[1]["span_count"] == 2
    assert [s["name"] for s in recent.trace(traces[1]["trace_id"])] == ["first", "inner"]


def test_server_spans_become_http_metrics_with_route_templates():
    tracer = _provider(metrics.HttpMetricsSpanProcessor()).get_tracer("test")
    before = _sample("maas_http_requests_total", method="GET", route="/api/v1/models/{model_id}", status_code="404")
    count_before = _sample("maas_http_request_duration_seconds_count", method="GET", route="/api/v1/models/{model_id}")
    with tracer.start_as_current_span("GET /api/v1/models/{model_id}", kind=SpanKind.SERVER) as span:
        span.set_attributes({"http.method": "GET", "http.route": "/api/v1/models/{model_id}",
                             "http.status_code": 404})
    with tracer.start_as_current_span("internal", kind=SpanKind.INTERNAL) as span:
        span.set_attributes({"http.method": "GET", "http.route": "/api/v1/models/{model_id}",
                             "http.status_code": 404})
    assert _sample("maas_http_requests_total", method="GET", route="/api/v1/models/{model_id}",
                   status_code="404") == before + 1
    assert _sample("maas_http_request_duration_seconds_count", method="GET",
                   route="/api/v1/models/{model_id}") == count_before + 1
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER) as span:  # stable semconv, no route
        span.set_attributes({"http.request.method": "GET", "http.response.status_code": 404})
    assert _sample("maas_http_requests_total", method="GET", route="unmatched", status_code="404") >= 1


def test_helpers_for_inference_and_the_text_format():
    metrics.record_tokens(service="svc-1", model="m", prompt_tokens=7, completion_tokens=5)
    metrics.record_tokens(service="svc-1", model="m", completion_tokens=3)
    metrics.set_instance_utilisation(service="svc-1", instance="i-1", ratio=1.7)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("maas_tokens_total", (("kind", "completion"), ("model", "m"), ("service", "svc-1")))] >= 8
    assert samples[("maas_instance_utilisation_ratio", (("instance", "i-1"), ("service", "svc-1")))] == 1.0
    metrics.forget_instance(service="svc-1", instance="i-1")
    metrics.forget_instance(service="svc-1", instance="i-1")  # twice is fine
    assert _sample("maas_instance_utilisation_ratio", service="svc-1", instance="i-1") == 0.0


async def test_scrape_hooks_are_cached_and_a_failing_one_does_not_break_the_scrape():
    calls = []

    async def good(platform):
        calls.append(platform)
        metrics.outbox_pending.set(3)

    async def bad(platform):
        raise RuntimeError("database down")

    metrics.on_scrape("test.good", good, every=3600)
    metrics.on_scrape("test.bad", bad, every=3600)
    try:
        await metrics.refresh("p")
        await metrics.refresh("p")
        assert calls == ["p"]  # the second scrape used the cached value
        assert _sample("maas_outbox_pending_events") == 3
    finally:
        metrics._hooks.pop("test.good", None)
        metrics._hooks.pop("test.bad", None)


def test_metric_names_lists_every_exposable_sample_name():
    names = metrics.metric_names()
    assert {"maas_http_requests_total", "maas_http_request_duration_seconds_bucket", "maas_jobs",
            "maas_events_published_total", "maas_consumer_lag_messages", "process_resident_memory_bytes"} <= names
    assert "maas_http_requests" not in names  # counters are exposed with _total only
