"""OpenTelemetry export (SPEC §10): every proxied request as one GenAI client span, plus the GenAI
client metrics, over OTLP/HTTP, off the hot path.

    request task ── record(event, headers, origin) ──▶ bounded channel (a full one: dropped, counted)
                                                          │
    exporter task (this worker's event loop) ◀────────────┘  price the event (cached), build the span
          │                                                  and the two histogram points
          ▼
    SDK BatchSpanProcessor (capped queue) ──▶ its own thread ──▶ OTLPSpanExporter ──▶ any collector
    SDK PeriodicExportingMetricReader ──────▶ its own thread ──▶ OTLPMetricExporter

Why this shape: a request only puts a tuple on a channel (~1 µs) once its answer is complete;
pricing, attributes and the SDK's span objects cost tens of µs and are made by one background
task, a few at a time between requests, like the writer's rows (docs/PERFORMANCE.md: per-event
work on the event loop in small slices rather than in a thread holding the GIL). The cost is the
one the writer puts on the event (`Event.price()` is idempotent, so whichever task gets the event
first prices it and the other reads it). The client's `traceparent`/`tracestate` travel next to
the event in the channel, never in it (they are not an `events` column).

Nothing here can hold up a request or grow without bound: the channel and the SDK's queue have a
cap (`OTEL_BSP_MAX_QUEUE_SIZE`); past it a span is dropped before it is built, and `/metrics`
counts what was exported and what was dropped (`lectr_telemetry_spans_*`). A collector that is
down or slow only makes the SDK's export thread wait and retry.

The libraries are the official ones (`opentelemetry-sdk`, `opentelemetry-exporter-otlp-proto-http`):
the switch (`OTEL_EXPORTER_OTLP_ENDPOINT` / `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`) and the
queue cap are read in `Settings.from_env()`. The SDK reads its own standard variables itself, by
design (that is how they "work as their docs say"): `OTEL_EXPORTER_OTLP_*` (endpoint, headers,
timeout, compression, certificates), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`.

No prompt or completion text, no header value but the two trace headers, no key: the span is made
from the event's fields (which hold none) and the upstream's host and port.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.accounting.record import Event
from proxy.core.config import Settings
from proxy.core.providers import REGISTRY
from proxy.http.transport import Origin

log = logging.getLogger("lectr.telemetry")

# The conventions' explicit bucket boundaries (GenAI metrics, "SHOULD be specified with").
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

# `gen_ai.provider.name` well-known values for the providers Lectr speaks to (the registry's).
PROVIDER_NAMES = {p.name: p.otel_name for p in REGISTRY}
# `gen_ai.operation.name` by endpoint (the path under /v1/). The Responses API and Anthropic's
# Messages API are chat inference ("chat"); Gemini's native `models/M:generateContent` is
# `generate_content`.
OPERATIONS = {
    "chat/completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
# Other endpoints keep their first path segment as a custom operation name when it is one of the
# providers' APIs; anything else is "other", so a client cannot mint span names by the path.
_OTHER_APIS = frozenset(
    "models files images audio moderations batches uploads fine_tuning vector_stores assistants threads realtime "
    "conversations containers evals rerank".split()
)
_TRACEPARENT, _TRACESTATE = b"traceparent", b"tracestate"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)

Item = tuple[Event, bytes | None, bytes | None, Origin | None]


def operation_name(endpoint: str) -> str:
    """`gen_ai.operation.name` for an endpoint."""
    path = endpoint.partition("?")[0].strip("/")
    found = OPERATIONS.get(path)
    if found is not None:
        return found
    if path.endswith((":generateContent", ":streamGenerateContent")):
        return "generate_content"
    first = path.partition("/")[0]
    return first if first in _OTHER_APIS else "other"


def span_attributes(event: Event, org_name: str | None, origin: Origin | None) -> dict[str, Any]:
    """The span's attributes: the GenAI conventions' from the event, then Lectr's own (`lectr.*`).

    `gen_ai.request.model` is the model the upstream request asked for (the routed one when a rule
    or fallback picked it: the span is the proxy's call to the provider); the app's own model is
    `lectr.requested_model` when it differs."""
    requested = event.routed_model or event.model
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(event.endpoint),
        "gen_ai.provider.name": PROVIDER_NAMES.get(event.provider, event.provider),
        "gen_ai.request.stream": event.stream,
    }
    if requested:
        attributes["gen_ai.request.model"] = requested
    if event.response_model:
        attributes["gen_ai.response.model"] = event.response_model
    if event.input_tokens is not None or event.output_tokens is not None:
        # Lectr's columns already mean what the conventions say: input includes cache reads and
        # writes, output includes reasoning (proxy/accounting/usage.py).
        attributes["gen_ai.usage.input_tokens"] = event.input_tokens or 0
        attributes["gen_ai.usage.output_tokens"] = event.output_tokens or 0
        attributes["gen_ai.usage.cache_read.input_tokens"] = event.cached_input_tokens or 0
        attributes["gen_ai.usage.cache_creation.input_tokens"] = event.cache_write_tokens or 0
        attributes["gen_ai.usage.reasoning.output_tokens"] = event.reasoning_tokens or 0
    error = error_type(event)
    if error is not None:
        attributes["error.type"] = error
    if event.status_code > 0:
        attributes["http.response.status_code"] = event.status_code
    if origin is not None:
        attributes["server.address"] = origin[1].decode("ascii", "replace")
        attributes["server.port"] = origin[2]
    if event.stream and event.ttft_ms is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = event.ttft_ms / 1000
    lectr: dict[str, Any] = {
        "lectr.org": org_name,
        "lectr.feature": event.feature,
        "lectr.task": event.task,
        "lectr.end_user": event.end_user,
        "lectr.cost_usd": float(event.cost_usd) if event.cost_usd is not None else None,
        "lectr.route_rule_id": event.route_rule_id,
        "lectr.upstream_ms": event.upstream_ms,
        "lectr.ttft_ms": event.ttft_ms,
        "lectr.request_id": event.request_id,
        "lectr.requested_model": event.model if event.model != requested else None,
    }
    attributes.update((key, value) for key, value in lectr.items() if value is not None)
    if event.attempts > 1:
        attributes["lectr.attempts"] = event.attempts
    if event.usage_estimated:
        attributes["lectr.usage_estimated"] = True
    return attributes


def error_type(event: Event) -> str | None:
    """`error.type`: the error's code (ours or the provider's), else the HTTP status of a failure."""
    if event.error_type:
        return event.error_type
    return str(event.status_code) if event.status_code >= 400 else None


def _nanoseconds(when: dt.datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND * 1000


def trace_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The client's `traceparent` and `tracestate` (forwarded to the provider as they are)."""
    parent = state = None
    for name, value in headers:
        if name == _TRACEPARENT:
            parent = value
        elif name == _TRACESTATE:
            state = value
    return parent, state


@dataclass(frozen=True, slots=True)
class TelemetryStatistics:
    queued: int  # spans waiting: in our channel and in the SDK's queue
    exported: int  # spans the collector accepted
    dropped: int  # spans lost: a queue was full, or the collector refused or could not be reached
    failed_exports: int  # export calls that failed (each drops its whole batch)


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it was handed and what the collector accepted (the SDK
    counts neither where we can read it). Runs in the SDK's export thread."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.taken = self.exported = self.failed = self.failed_exports = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
            log.warning("span export raised; %d spans dropped", len(spans), exc_info=True)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
            self.failed_exports += 1
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Telemetry:
    """One worker's exporter, made only when export is on (`Proxy.telemetry` is None otherwise, so
    the hot path pays one `is not None` test, and this module and the SDK are not even imported)."""

    def __init__(self, settings: Settings, org_name: Callable[[int], str | None]) -> None:
        self._org_name = org_name
        self._queue_size = settings.otel_queue_size
        self._send, self._receive = trio.open_memory_channel[Item](settings.otel_queue_size)
        self._propagator = TraceContextTextMapPropagator()
        self._dropped = 0
        self._handed = 0  # sampled spans handed to the SDK's processor
        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "lectr"}))
        self._exporter: _CountingExporter | None = None
        self._tracer_provider: TracerProvider | None = None
        self._tracer: Any = None
        if settings.otel_traces:
            self._exporter = _CountingExporter(OTLPSpanExporter())
            # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
            # No exit hook: `aclose` shuts it down, bounded (the SDK's hook could wait 30 s at exit).
            self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    self._exporter,
                    max_queue_size=settings.otel_queue_size,
                    max_export_batch_size=settings.otel_batch_size,
                )
            )
            self._tracer = self._tracer_provider.get_tracer("lectr")
        self._meter_provider: MeterProvider | None = None
        self._tokens: Histogram | None = None
        self._duration: Histogram | None = None
        if settings.otel_metrics:
            reader = PeriodicExportingMetricReader(OTLPMetricExporter())  # OTEL_METRIC_EXPORT_INTERVAL
            self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
            meter = self._meter_provider.get_meter("lectr")
            self._tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            self._duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
        self.finished = trio.Event()

    # -- called by requests: never blocks --------------------------------------------------

    def record(self, event: Event, headers: Sequence[tuple[bytes, bytes]], origin: Origin | None) -> None:
        """Queue a finished request for export (a plain function: safe from any request task)."""
        parent, state = trace_headers(headers)
        try:
            self._send.send_nowait((event, parent, state, origin))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._dropped += 1

    def statistics(self) -> TelemetryStatistics:
        exporter = self._exporter
        in_sdk = self._handed - exporter.taken if exporter is not None else 0
        return TelemetryStatistics(
            queued=self._send.statistics().current_buffer_used + in_sdk,
            exported=exporter.exported if exporter is not None else 0,
            dropped=self._dropped + (exporter.failed if exporter is not None else 0),
            failed_exports=exporter.failed_exports if exporter is not None else 0,
        )

    # -- the exporter task -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take finished requests off the channel and hand them to the SDK, until `aclose`."""
        try:
            async with self._receive:
                task_status.started()
                async for item in self._receive:  # each receive is a checkpoint: requests go first
                    try:
                        self.export(*item)
                    except Exception:  # a span we cannot build must not stop the others
                        self._dropped += 1
                        log.exception("could not export the span of a request to %s", item[0].endpoint)
        finally:
            self.finished.set()

    def export(self, event: Event, parent: bytes | None, state: bytes | None, origin: Origin | None) -> None:
        """Price the event if the writer has not yet, then build its span and metric points."""
        try:
            event.price()  # idempotent; the writer prices it too (cached rates: µs)
        except Exception:  # the writer logs it; the span goes without a cost
            pass
        attributes = span_attributes(event, self._org_name(event.org_id), origin)
        start = _nanoseconds(event.created_at)
        seconds = (event.latency_ms or 0.0) / 1000
        if self._tracer is not None:
            self._span(attributes, parent, state, start, start + int(seconds * 1e9))
        if self._duration is not None and self._tokens is not None:
            self._measure(attributes, event, seconds)

    def _span(
        self, attributes: dict[str, Any], parent: bytes | None, state: bytes | None, start: int, end: int
    ) -> None:
        assert self._exporter is not None
        if self._handed - self._exporter.taken >= self._queue_size:
            self._dropped += 1  # the SDK's queue is full (collector down or slow): drop it unbuilt
            return
        context = None
        if parent is not None:
            carrier = {"traceparent": parent.decode("latin-1")}
            if state is not None:
                carrier["tracestate"] = state.decode("latin-1")
            context = self._propagator.extract(carrier)
        operation, model = attributes["gen_ai.operation.name"], attributes.get("gen_ai.request.model")
        span = self._tracer.start_span(
            f"{operation} {model}" if model else operation,
            context=context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if "error.type" in attributes:
            span.set_status(Status(StatusCode.ERROR))
        if span.is_recording():  # sampled: it goes to the processor's queue
            self._handed += 1
        span.end(end_time=end)

    def _measure(self, attributes: dict[str, Any], event: Event, seconds: float) -> None:
        assert self._duration is not None and self._tokens is not None
        common = {key: attributes[key] for key in _METRIC_ATTRIBUTES if key in attributes}
        error = attributes.get("error.type")
        self._duration.record(seconds, common if error is None else {**common, "error.type": error})
        if event.input_tokens is not None:
            self._tokens.record(event.input_tokens, {**common, "gen_ai.token.type": "input"})
        if event.output_tokens is not None:
            self._tokens.record(event.output_tokens, {**common, "gen_ai.token.type": "output"})

    async def aclose(self, timeout: float = 5.0) -> None:
        """Export what is queued (at most `timeout` seconds of it: a collector that is down must
        not hold up shutdown), then stop the SDK's threads."""
        await self._send.aclose()
        await self.finished.wait()
        with trio.move_on_after(timeout):
            await trio.to_thread.run_sync(self._shutdown, abandon_on_cancel=True)

    def _shutdown(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


# The attributes both histograms carry (the conventions' list for them); the duration's also
# carries `error.type` for a failed operation.
_METRIC_ATTRIBUTES = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
)

__all__ = ["Telemetry", "TelemetryStatistics", "operation_name", "span_attributes", "trace_headers"]
