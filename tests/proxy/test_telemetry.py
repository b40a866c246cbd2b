"""The OpenTelemetry exporter's parts (proxy/events/telemetry.py): operation names, attributes per
provider, the switch, the queue caps, and `/metrics`' telemetry lines. End to end through a proxy
process: tests/test_telemetry_e2e.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
import trio

from proxy.accounting.record import Event
from proxy.core.config import Settings
from proxy.events.telemetry import Telemetry, TelemetryStatistics, operation_name, span_attributes, trace_headers
from proxy.ops.metrics import Metrics, render
from tests.fakes import wait_for
from tests.otlp import Collector, attributes


@pytest.mark.parametrize(
    ("endpoint", "operation"),
    [
        ("chat/completions", "chat"),
        ("responses", "chat"),
        ("messages", "chat"),
        ("completions", "text_completion"),
        ("embeddings", "embeddings"),
        ("models/gemini-2.0-flash:generateContent", "generate_content"),
        ("models/gemini-2.0-flash:streamGenerateContent?alt=sse", "generate_content"),
        ("models", "models"),
        ("files/file-abc123", "files"),
        ("made-up-path-9f8e7d", "other"),  # a client cannot mint operation (span) names
    ],
)
def test_operation_names(endpoint: str, operation: str) -> None:
    assert operation_name(endpoint) == operation


def _event(**fields: Any) -> Event:
    base: dict[str, Any] = {
        "org_id": 1,
        "created_at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        "provider": "openai",
        "endpoint": "chat/completions",
        "status_code": 200,
        "model": "gpt-4o",
    }
    return Event(**{**base, **fields})


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("groq", "groq"),
        ("gemini", "gcp.gemini"),
        ("azure", "azure.ai.openai"),
    ],
)
def test_provider_names_are_the_conventions_well_known_values(provider: str, name: str) -> None:
    assert span_attributes(_event(provider=provider), None, None)["gen_ai.provider.name"] == name


def test_attributes_of_a_routed_priced_request_with_every_usage_kind() -> None:
    event = _event(
        routed_model="claude-sonnet-4",
        provider="anthropic",
        response_model="claude-sonnet-4-20250514",
        route_rule_id=7,
        attempts=2,
        feature="search",
        task="rerank",
        cost_usd=Decimal("0.0123"),
        upstream_ms=812.5,
        stream=True,
        ttft_ms=120.0,
        input_tokens=1000,
        output_tokens=300,
        cached_input_tokens=600,
        cache_write_tokens=200,
        reasoning_tokens=100,
        request_id="ab" * 16,
    )
    found = span_attributes(event, "acme", (b"https", b"api.anthropic.com", 443))
    assert found == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4",
        "gen_ai.response.model": "claude-sonnet-4-20250514",
        "gen_ai.request.stream": True,
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_creation.input_tokens": 200,
        "gen_ai.usage.reasoning.output_tokens": 100,
        "gen_ai.response.time_to_first_chunk": 0.12,
        "http.response.status_code": 200,
        "server.address": "api.anthropic.com",
        "server.port": 443,
        "lectr.org": "acme",
        "lectr.feature": "search",
        "lectr.task": "rerank",
        "lectr.cost_usd": 0.0123,
        "lectr.route_rule_id": 7,
        "lectr.upstream_ms": 812.5,
        "lectr.ttft_ms": 120.0,
        "lectr.request_id": "ab" * 16,
        "lectr.requested_model": "gpt-4o",
        "lectr.attempts": 2,
    }


def test_end_user_and_errors() -> None:
    assert span_attributes(_event(end_user="u-42"), None, None)["lectr.end_user"] == "u-42"
    assert "lectr.end_user" not in span_attributes(_event(), None, None)
    assert span_attributes(_event(status_code=503), None, None)["error.type"] == "503"
    assert span_attributes(_event(status_code=429, error_type="rate_limit_error"), None, None)["error.type"] == (
        "rate_limit_error"
    )
    assert "error.type" not in span_attributes(_event(), None, None)


def test_trace_headers() -> None:
    headers = [(b"content-type", b"application/json"), (b"traceparent", b"00-a-b-01"), (b"tracestate", b"k=v")]
    assert trace_headers(headers) == (b"00-a-b-01", b"k=v")
    assert trace_headers([(b"authorization", b"Bearer x")]) == (None, None)


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, False, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True, False),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, False, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}, True, False),
    ],
)
def test_the_switch(env: dict[str, str], traces: bool, metrics: bool) -> None:
    settings = Settings.from_env(env)
    assert (settings.otel_traces, settings.otel_metrics) == (traces, metrics)


def test_export_off_loads_nothing() -> None:
    """Off (the default), a worker does not even import the SDK: `Proxy.telemetry` stays None."""
    code = (
        "import sys, trio; from proxy.app import Proxy; from proxy.core.config import Settings\n"
        "proxy = Proxy(Settings.from_env({}))\n"
        "loaded = ('opentelemetry', 'proxy.events.telemetry')\n"
        "print(proxy.telemetry, sorted(m for m in sys.modules if m.startswith(loaded)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "[]"]


def test_queue_caps_come_from_the_sdk_variables() -> None:
    settings = Settings.from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"})
    assert (settings.otel_queue_size, settings.otel_batch_size) == (100, 100)  # a batch never exceeds the queue


async def test_a_full_channel_drops_and_counts_and_the_rest_is_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = Collector().start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)  # read by the SDK's exporter
        settings = Settings(otel_traces=True, otel_queue_size=3, otel_batch_size=3)
        telemetry = Telemetry(settings, {1: "acme"}.get)
        for number in range(5):  # the exporter task is not running yet: 3 fit, 2 are dropped
            telemetry.record(_event(request_id=str(number), latency_ms=5.0), [], None)
        assert telemetry.statistics() == TelemetryStatistics(queued=3, exported=0, dropped=2, failed_exports=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(telemetry.run)
            await telemetry.aclose()
        assert telemetry.statistics() == TelemetryStatistics(queued=0, exported=3, dropped=2, failed_exports=0)
        spans = wait_for(lambda: collector.spans() if len(collector.spans()) == 3 else None)
        assert sorted(attributes(s.attributes)["lectr.request_id"] for s in spans) == ["0", "1", "2"]
        assert {attributes(s.attributes)["lectr.org"] for s in spans} == {"acme"}
        assert {s.end_time_unix_nano - s.start_time_unix_nano for s in spans} == {5_000_000}
    finally:
        collector.stop()


def test_metrics_show_spans_exported_dropped_and_queued() -> None:
    live = Metrics().snapshot(None, TelemetryStatistics(queued=4, exported=100, dropped=7, failed_exports=1))
    gone = Metrics().snapshot(None, TelemetryStatistics(queued=9, exported=50, dropped=3, failed_exports=0))
    off = Metrics().snapshot(None)
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in render([live, gone, off], 1).splitlines()
        if line[0] != "#"
    }
    assert values["lectr_telemetry_spans_exported_total"] == 150
    assert values["lectr_telemetry_spans_dropped_total"] == 10
    assert values["lectr_telemetry_failed_exports_total"] == 1
    assert values["lectr_telemetry_spans_queued"] == 4  # a gauge: the live workers only
    assert "lectr_telemetry_spans_exported_total" not in render([off], 1)  # export off: no lines
