"""OpenTelemetry GenAI semantic conventions on the gateway's chat calls: one span, and the GenAI metrics.

The span ``chat {model}`` (kind CLIENT: the gateway calls a model instance over HTTP; its parent is the
HTTP server span of ``/v1/chat/completions``) runs from sending the call to the end of the answer,
streamed or not. Attributes, as the GenAI semconv names them:
- ``gen_ai.operation.name`` "chat" ("text_completion" on the legacy ``/v1/completions``, span
  ``text_completion {model}``), ``gen_ai.provider.name`` "openmaas" (the current name of what
  was ``gen_ai.system``, deprecated), ``gen_ai.request.model`` (the model the caller named),
  ``gen_ai.request.temperature`` / ``top_p`` / ``max_tokens`` / ``stream``, ``server.address`` / ``port``;
- ``gen_ai.response.id`` / ``model`` / ``finish_reasons``, ``gen_ai.usage.input_tokens`` /
  ``output_tokens``, and for streams ``gen_ai.response.time_to_first_chunk`` (seconds);
- ``error.type`` and an error status when the call failed.
Message content (``gen_ai.input.messages``, ``gen_ai.output.messages``) only when the operator turns
on ``MAAS_GATEWAY_TELEMETRY_CAPTURE_CONTENT``: prompts are the callers' data and traces are not
tenant-scoped. The metrics are services.lib.common.metrics' ``gen_ai_*`` families.
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from contracts.openai import ChatCompletionRequest, CompletionRequest
from services.lib.common.metrics import record_genai_call
from services.lib.common.telemetry import tracer

OPERATION = "chat"
PROVIDER = "openmaas"

_tracer = tracer("openmaas.gateway.genai")


def _parts(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        return [{"type": "text", "content": p.get("text", "")} for p in content if isinstance(p, dict)]
    return []


def input_messages(messages) -> str:
    """The semconv's JSON form of the request's messages: ``[{role, parts: [{type, content}]}]``."""
    out = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        parts = _parts(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                          "arguments": function.get("arguments")})
        if message.get("role") == "tool":
            parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                      "response": message.get("content")}]
        out.append({"role": message.get("role"), "parts": parts})
    return json.dumps(out, ensure_ascii=False)


def output_messages(texts: dict[int, str], finish_reasons: dict[int, str]) -> str:
    """One assistant message per choice: ``[{role, parts, finish_reason}]``."""
    return json.dumps([{"role": "assistant", "parts": _parts(texts.get(i, "")),
                        "finish_reason": finish_reasons.get(i)}
                       for i in sorted(set(texts) | set(finish_reasons))], ensure_ascii=False)


class ChatTelemetry:
    """One chat call's span and metrics. ``end`` (or ``fail``) once, however the call ends; later calls
    are ignored, so every way out of a call may end it without counting it twice."""

    def __init__(self, *, request: ChatCompletionRequest | CompletionRequest, model: str, messages,
                 capture_content: bool, tracer: Tracer | None = None, operation: str = OPERATION):
        """``operation``: "chat", or "text_completion" for the legacy /v1/completions."""
        self.model = model
        self.operation = operation
        self.capture_content = capture_content
        self.ended = False
        self.started = time.monotonic()
        max_tokens = request.max_tokens if request.max_tokens is not None else getattr(request, "max_completion_tokens",
                                                                                            None)
        attributes = {
            "gen_ai.operation.name": operation, "gen_ai.provider.name": PROVIDER, "gen_ai.request.model": model,
            "gen_ai.request.temperature": float(request.temperature), "gen_ai.request.top_p": float(request.top_p),
            "gen_ai.request.stream": bool(request.stream),
        }
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        if request.n != 1:
            attributes["gen_ai.request.choice.count"] = request.n
        if capture_content:
            attributes["gen_ai.input.messages"] = input_messages(messages)
        self.span = (tracer or _tracer).start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes)

    def instance(self, url: str) -> None:
        """The instance that answers (``server.address`` / ``server.port``)."""
        parts = urlsplit(url)
        if parts.hostname:
            self.span.set_attribute("server.address", parts.hostname)
        if parts.port:
            self.span.set_attribute("server.port", parts.port)

    def end(self, *, input_tokens: int = 0, output_tokens: int = 0, response_id: str | None = None,
            response_model: str | None = None, finish_reasons: dict[int, str] | None = None,
            first_token_at: float | None = None, texts: dict[int, str] | None = None,
            error_type: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        seconds = time.monotonic() - self.started
        first = max(0.0, first_token_at - self.started) if first_token_at is not None else None
        span = self.span
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        reasons = finish_reasons or {}
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", [reasons[i] for i in sorted(reasons)])
        if first is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", first)
        if self.capture_content and texts is not None and error_type != "content_filter":
            span.set_attribute("gen_ai.output.messages", output_messages(texts, reasons))
        if error_type:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()
        record_genai_call(operation=self.operation, provider=PROVIDER, model=self.model, seconds=seconds,
                          input_tokens=input_tokens, output_tokens=output_tokens, first_token_seconds=first,
                          error_type=error_type)

    def fail(self, exc: BaseException) -> None:
        """End with the error a call was refused or broke with (an OpenAI error's code, else its type)."""
        code = getattr(exc, "code", None)
        self.end(error_type=code if isinstance(code, str) and code else type(exc).__qualname__)
