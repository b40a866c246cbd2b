"""Time series and anomalies on hand-built frames."""

from __future__ import annotations

import datetime as dt

import polars as pl
from polars.testing import assert_frame_equal

from analytics import cost_anomalies, cost_by_provider, error_rate_anomalies, latency_anomalies, timeseries
from tests.analytics._build import T0, ev, frame

INT = pl.Int64
F = pl.Float64
UTC = pl.Datetime("us", "UTC")


def day(n: int) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_daily_series_fills_quiet_days() -> None:
    events = frame(
        ev(at=1, cost_usd=1.0, latency_ms=100.0),
        ev(at=2, cost_usd=None, status_code=500, error_type="x", latency_ms=300.0),
        ev(at=49, cost_usd=2.0, latency_ms=50.0, input_tokens=4),
    )
    got = timeseries(events, "1d").collect()
    expected = pl.DataFrame(
        {
            "bucket": [day(0), day(1), day(2)],
            "requests": [2, 0, 1],
            "errors": [1, 0, 0],
            "error_rate": [0.5, None, 0.0],
            "cost_usd": [1.0, 0.0, 2.0],
            "unpriced_requests": [0, 0, 0],
            "input_tokens": [0, 0, 4],
            "output_tokens": [0, 0, 0],
            "latency_ms_avg": [200.0, None, 50.0],
            "latency_ms_p95": [290.0, None, 50.0],
        },
        schema_overrides={"bucket": UTC, "requests": INT, "errors": INT, "unpriced_requests": INT,
                          "input_tokens": INT, "output_tokens": INT},
    )
    assert_frame_equal(got.drop("latency_ms_p95"), expected.drop("latency_ms_p95"))
    # [100, 300] → 290 and [50]: from the histograms, within their 2 %
    assert_frame_equal(got.select("latency_ms_p95"), expected.select("latency_ms_p95"), rel_tol=0.02)


def test_hourly_series_over_an_explicit_range() -> None:
    got = timeseries(frame(ev(at=1.5)), "1h", start=T0, end=T0 + dt.timedelta(hours=3)).collect()
    assert got["bucket"].to_list() == [T0 + dt.timedelta(hours=h) for h in range(3)]
    assert got["requests"].to_list() == [0, 1, 0]


def test_unpriced_bucket_cost_is_null_not_zero() -> None:
    got = timeseries(frame(ev(at=1)), "1d").collect()
    assert got["cost_usd"].to_list() == [None] and got["unpriced_requests"].to_list() == [1]


def test_empty_series() -> None:
    assert timeseries(frame(), "1d").collect().height == 0


def test_cost_per_provider_over_time() -> None:
    events = frame(
        ev(provider="openai", at=1, cost_usd=1.0),
        ev(provider="groq", at=25, cost_usd=0.5),
    )
    got = cost_by_provider(events, "1d").collect()
    expected = pl.DataFrame(
        {"bucket": [day(0), day(0), day(1), day(1)], "provider": ["groq", "openai", "groq", "openai"],
         "cost_usd": [0.0, 1.0, 0.5, 0.0], "requests": [0, 1, 1, 0]},
        schema_overrides={"bucket": UTC, "requests": INT},
    )
    assert_frame_equal(got, expected)


def test_feature_series_labels_untagged() -> None:
    got = timeseries(frame(ev(feature=None), ev(feature="a")), "1d", by="feature").collect()
    assert got["feature"].to_list() == ["a", "untagged"]


# Anomalies


def daily_costs(costs: list[float], feature: str = "f") -> pl.LazyFrame:
    return frame(*[ev(feature=feature, at=24 * i + 12, cost_usd=c) for i, c in enumerate(costs)])


def test_cost_spike_is_reported_with_its_baseline() -> None:
    got = cost_anomalies(daily_costs([1.0, 1.2, 0.8, 1.0, 1.1, 0.9, 1.0, 5.0])).collect()
    # baseline: median of the 7 days before = 1.0; MAD = median(|x - 1|) = 0.1
    z = (5.0 - 1.0) / (0.1 * 1.4826)
    expected = pl.DataFrame(
        {"kind": ["feature_cost"], "feature": ["f"], "provider": [None], "model": [None], "bucket": [day(7)],
         "value": [5.0], "baseline": [1.0], "mad": [0.1], "ratio": [5.0], "z": [z], "history": [7]},
        schema_overrides={"provider": pl.String, "model": pl.String, "bucket": UTC, "history": INT},
    )
    assert_frame_equal(got, expected, check_exact=False)


def test_steady_or_falling_cost_is_not_an_anomaly() -> None:
    assert cost_anomalies(daily_costs([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.1])).collect().height == 0
    assert cost_anomalies(daily_costs([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 0.1])).collect().height == 0


def test_too_little_history_is_not_judged() -> None:
    assert cost_anomalies(daily_costs([1.0, 1.0, 1.0, 9.0])).collect().height == 0


def test_provider_error_rate_spike() -> None:
    events = [
        ev(provider="groq", at=h + 0.5, status_code=500 if (h == 30 and i < 12) or (h < 30 and i == 0) else 200)
        for h in range(31)
        for i in range(40)
    ]
    got = error_rate_anomalies(frame(*events)).collect()
    assert got.select("kind", "provider", "bucket", "value", "baseline").rows() == [
        ("provider_error_rate", "groq", T0 + dt.timedelta(hours=30), 0.3, 0.025)
    ]


def test_sparse_error_buckets_are_ignored() -> None:
    events = [ev(provider="groq", at=h + 0.5, status_code=500 if h == 30 else 200) for h in range(31) for _ in range(3)]
    assert error_rate_anomalies(frame(*events)).collect().height == 0


def test_model_latency_spike() -> None:
    events = [
        ev(model="gpt-4o", at=24 * d + 1, latency_ms=(1000.0 if d == 8 else 100.0) + i)
        for d in range(9)
        for i in range(60)
    ]
    got = latency_anomalies(frame(*events)).collect()
    assert got.select("kind", "provider", "model", "bucket").rows() == [
        ("model_latency_p95", "openai", "gpt-4o", day(8))
    ]
    assert got["ratio"].item() > 5
