"""A small OTLP/HTTP collector for the tests: a real HTTP server (stdlib, in a thread) that takes
`POST /v1/traces` and `POST /v1/metrics`, decodes the protobuf with `opentelemetry-proto` (the
messages every collector speaks) and keeps both the decoded spans and metrics and every raw byte it
was sent (for the no-secret checks). `Blackhole` is a collector that is down in the worst way: it
accepts connections and never answers."""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value(any_value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: value(item.value) for item in items}


@dataclass
class Received:
    raw: list[bytes] = field(default_factory=list)  # every request body, decompressed
    spans: list[Any] = field(default_factory=list)  # opentelemetry.proto Span messages
    resources: list[dict[str, Any]] = field(default_factory=list)  # each span's resource attributes
    metrics: list[Any] = field(default_factory=list)  # opentelemetry.proto Metric messages
    paths: list[str] = field(default_factory=list)


class Collector:
    """`Collector().start()`; its `endpoint` is what `OTEL_EXPORTER_OTLP_ENDPOINT` takes."""

    def __init__(self) -> None:
        self.received = Received()
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                answer = collector._take(self.path, self.headers.get("content-type", ""), body)
                self.send_response(200 if answer is not None else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer or b"")))
                self.end_headers()
                self.wfile.write(answer or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, path: str, content_type: str, body: bytes) -> bytes | None:
        assert content_type == "application/x-protobuf", content_type
        with self._lock:
            self.received.raw.append(body)
            self.received.paths.append(path)
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            self.received.spans.append(span)
                            self.received.resources.append(resource)
                return ExportTraceServiceResponse().SerializeToString()
            if path == "/v1/metrics":
                metrics_request = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in metrics_request.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        self.received.metrics.extend(scope_metrics.metrics)
                return ExportMetricsServiceResponse().SerializeToString()
        return None

    def spans(self) -> list[Any]:
        with self._lock:
            return list(self.received.spans)

    def span(self, request_id: str) -> Any | None:
        """The span of one request, by its `lectr.request_id` attribute."""
        for span in self.spans():
            if attributes(span.attributes).get("lectr.request_id") == request_id:
                return span
        return None

    def metrics(self, name: str) -> list[Any]:
        with self._lock:
            return [metric for metric in self.received.metrics if metric.name == name]

    def raw(self) -> bytes:
        with self._lock:
            return b"".join(self.received.raw)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Blackhole:
    """A collector that is down the worst way: connections are accepted (by the kernel's backlog)
    and never read from or answered, so every export waits for its timeout."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(1024)
        self.endpoint = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def stop(self) -> None:
        self._socket.close()
