"""Where traces go when there is no collector (the embedded default).

- ``OtlpJsonLinesExporter``: one OTLP/JSON ``ExportTraceServiceRequest`` per line, the format of the
  OpenTelemetry collector's ``file`` exporter and ``otlpjsonfile`` receiver, so a file written here
  can be replayed into Tempo/Jaeger later. Rotates to ``<file>.1`` past ``max_bytes``.
- ``RecentSpans``: an in-memory ring buffer of finished spans behind ``GET /api/v1/traces/recent``.
"""
from __future__ import annotations

import base64
import json
import threading
from collections import deque
from pathlib import Path
from typing import Sequence

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

# OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping would use base64.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: object) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def otlp_json(spans: Sequence[ReadableSpan]) -> dict:
    """The OTLP/JSON form of an export request for ``spans``."""
    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _hex_ids(request)
    return request


class OtlpJsonLinesExporter(SpanExporter):
    def __init__(self, path: str | Path, *, max_bytes: int = 64 * 1024 * 1024):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        line = json.dumps(otlp_json(spans), separators=(",", ":")) + "\n"
        try:
            with self._lock:
                if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                    self.path.replace(self.path.with_name(self.path.name + ".1"))
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_view(span: ReadableSpan) -> dict:
    ctx = span.context
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": (span.resource.attributes.get("service.name") if span.resource else None),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "duration_ms": ((span.end_time or 0) - (span.start_time or 0)) / 1e6,
        "status": span.status.status_code.name,
        "attributes": {k: (v if isinstance(v, (str, int, float, bool)) else str(v))
                       for k, v in (span.attributes or {}).items()},
    }


class RecentSpans(SpanProcessor):
    """Keeps the last ``capacity`` finished spans of this process (thread-safe)."""

    def __init__(self, capacity: int = 5000):
        self._spans: deque[dict] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith("GET /metrics"):
            return  # Prometheus scrapes would crowd out everything else
        view = _span_view(span)
        with self._lock:
            self._spans.append(view)

    def spans(self) -> list[dict]:
        with self._lock:
            return list(self._spans)

    def traces(self, *, limit: int = 50) -> list[dict]:
        """Most recent traces first, each summarised by its root (or earliest) span."""
        grouped: dict[str, list[dict]] = {}
        for span in self.spans():
            grouped.setdefault(span["trace_id"], []).append(span)
        summaries = []
        for trace_id, spans in grouped.items():
            spans.sort(key=lambda s: s["start_ns"] or 0)
            ids = {s["span_id"] for s in spans}
            root = next((s for s in spans if s["parent_span_id"] is None), None) or next(
                (s for s in spans if s["parent_span_id"] not in ids), spans[0])
            start = min(s["start_ns"] or 0 for s in spans)
            end = max(s["end_ns"] or 0 for s in spans)
            summaries.append({
                "trace_id": trace_id, "root": root["name"], "start_ns": start, "duration_ms": (end - start) / 1e6,
                "span_count": len(spans), "error": any(s["status"] == "ERROR" for s in spans),
                "services": sorted({s["service"] for s in spans if s["service"]}),
            })
        summaries.sort(key=lambda t: t["start_ns"], reverse=True)
        return summaries[:limit]

    def trace(self, trace_id: str) -> list[dict]:
        return sorted((s for s in self.spans() if s["trace_id"] == trace_id), key=lambda s: s["start_ns"] or 0)


RECENT_SPANS = RecentSpans()
