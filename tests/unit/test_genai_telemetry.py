"""OpenTelemetry GenAI semantic conventions on the gateway's chat spans and metrics, on canned streams."""
from __future__ import annotations

import json

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.lib.common import metrics
from services.gateway.inference.genai_telemetry import input_messages
from services.gateway.inference.moderation import BlocklistChecker
from services.gateway.oai_errors import OpenAIError
from tests.unit.test_serving_relay import STREAM, _chunk, _relay, chat_telemetry

LABELS = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openmaas", "gen_ai_request_model": "chat"}


def _tracer():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _sample(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, {**LABELS, **labels}) or 0.0


async def test_a_streamed_call_carries_the_genai_attributes_and_feeds_the_genai_metrics():
    tracer, exporter = _tracer()
    before = {kind: _sample("gen_ai_client_token_usage_sum", gen_ai_token_type=kind) for kind in ("input", "output")}
    ttft_before = _sample("gen_ai_server_time_to_first_token_seconds_count")
    per_token_before = _sample("gen_ai_server_time_per_output_token_seconds_count")
    duration_before = _sample("gen_ai_server_request_duration_seconds_count", error_type="")
    call = chat_telemetry(tracer=tracer, temperature=0.2, top_p=0.9, max_tokens=12)
    await _relay(STREAM, wants_usage=False, call=call)
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat chat" and span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes)
    assert {k: attrs[k] for k in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.request.temperature",
        "gen_ai.request.top_p", "gen_ai.request.max_tokens", "gen_ai.request.stream", "gen_ai.response.id",
        "gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openmaas", "gen_ai.request.model": "chat",
        "gen_ai.request.temperature": 0.2, "gen_ai.request.top_p": 0.9, "gen_ai.request.max_tokens": 12,
        "gen_ai.request.stream": True, "gen_ai.response.id": "c1", "gen_ai.response.model": "chat",
        "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3}
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    # No message content unless the operator turns it on.
    assert not any(k in attrs for k in ("gen_ai.input.messages", "gen_ai.output.messages"))
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in attrs

    assert _sample("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == before["input"] + 7
    assert _sample("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == before["output"] + 3
    assert _sample("gen_ai_server_time_to_first_token_seconds_count") == ttft_before + 1
    assert _sample("gen_ai_server_time_per_output_token_seconds_count") == per_token_before + 1
    assert _sample("gen_ai_server_request_duration_seconds_count", error_type="") == duration_before + 1


async def test_message_content_is_on_the_span_only_when_the_operator_turns_it_on():
    tracer, exporter = _tracer()
    await _relay(STREAM, wants_usage=False, call=chat_telemetry(tracer=tracer, capture_content=True))
    (span,) = exporter.get_finished_spans()
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello!"}], "finish_reason": "stop"}]


async def test_a_blocked_answer_is_a_content_filter_error_and_its_text_stays_off_the_span():
    tracer, exporter = _tracer()
    stream = _chunk("The secret ") + _chunk("plan is") + "data: [DONE]\n\n"
    await _relay(stream, wants_usage=False, checker=BlocklistChecker(["secret plan"]),
                 call=chat_telemetry(tracer=tracer, capture_content=True))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "content_filter" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["gen_ai.response.finish_reasons"] == ("content_filter",)
    assert "gen_ai.output.messages" not in span.attributes


async def test_a_broken_stream_is_an_upstream_error_with_the_tokens_streamed():
    tracer, exporter = _tracer()
    await _relay(_chunk("a") + _chunk("b"), wants_usage=False, break_after=True, call=chat_telemetry(tracer=tracer))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "upstream_error"
    assert span.attributes["gen_ai.usage.input_tokens"] == 7 and span.attributes["gen_ai.usage.output_tokens"] == 2


def test_a_refused_call_ends_once_with_the_error_code():
    tracer, exporter = _tracer()
    before = _sample("gen_ai_server_request_duration_seconds_count", error_type="no_ready_instance")
    call = chat_telemetry(tracer=tracer, stream=False)
    call.fail(OpenAIError(503, "no instance", code="no_ready_instance"))
    call.end(input_tokens=5)   # a later end changes nothing
    (span,) = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "no_ready_instance" and span.attributes["gen_ai.usage.input_tokens"] == 0
    assert _sample("gen_ai_server_request_duration_seconds_count", error_type="no_ready_instance") == before + 1


def test_input_messages_follow_the_semconv_shape_with_tool_calls_and_results():
    messages = [{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"}]
    assert json.loads(input_messages(messages)) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "f", "arguments": "{}"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "42"}]}]
