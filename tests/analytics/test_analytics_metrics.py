"""Breakdowns, provider health, untagged and unpriced traffic, against hand-computed figures."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics import (
    by_feature,
    by_model,
    by_provider,
    provider_health,
    split_periods,
    unpriced,
    untagged_share,
)
from tests.analytics._build import T0, ev, frame

F = pl.Float64
INT = pl.Int64

CURRENT = frame(
    ev(feature="a", cost_usd=1.0, latency_ms=100.0, upstream_ms=90.0, input_tokens=10, output_tokens=5,
       cached_input_tokens=2),
    ev(feature="a", cost_usd=3.0, latency_ms=300.0, upstream_ms=280.0, ttft_ms=50.0, input_tokens=20,
       output_tokens=15),
    ev(feature="a", status_code=500, error_type="upstream_error", latency_ms=200.0, upstream_ms=200.0),
    ev(feature=None, latency_ms=400.0, upstream_ms=395.0, input_tokens=30, output_tokens=10),  # unpriced
    ev(feature=None, cost_usd=4.0, latency_ms=50.0, upstream_ms=45.0, input_tokens=5, output_tokens=5),
)
PREVIOUS = frame(ev(feature="a", cost_usd=2.0, at=-24))


def test_by_feature_matches_hand_computed_figures() -> None:
    got = by_feature(CURRENT, PREVIOUS).collect()
    expected = pl.DataFrame(
        {
            "feature": ["a", "untagged"],
            "requests": [3, 2],
            "errors": [1, 0],
            "error_rate": [1 / 3, 0.0],
            "input_tokens": [30, 35],
            "output_tokens": [20, 15],
            "cached_input_tokens": [2, 0],
            "cost_usd": [4.0, 4.0],
            "unpriced_requests": [0, 1],
            "latency_ms_avg": [200.0, 225.0],
            # linear interpolation: [100, 200, 300] → 200 + 0.9 * 100; [50, 400] → 50 + 0.95 * 350
            # (the histograms promise these within 2 %: compared below with that tolerance)
            "latency_ms_p95": [290.0, 382.5],
            "ttft_ms_p95": [50.0, None],
            "overhead_ms_avg": [10.0, 5.0],
            "overhead_ms_p95": [19.0, 5.0],
            "share": [0.5, 0.5],
            "previous_cost_usd": [2.0, None],
            "previous_requests": [1, None],
            "change": [1.0, None],
        },
        schema_overrides={"requests": INT, "errors": INT, "input_tokens": INT, "output_tokens": INT,
                          "cached_input_tokens": INT, "unpriced_requests": INT, "previous_requests": INT,
                          "ttft_ms_p95": F, "previous_cost_usd": F, "change": F},
    )
    p95s = ["latency_ms_p95", "ttft_ms_p95", "overhead_ms_p95"]
    assert_frame_equal(got.drop(p95s), expected.drop(p95s))
    assert_frame_equal(got.select(p95s), expected.select(p95s), rel_tol=0.02)


def test_without_previous_period_change_is_null() -> None:
    got = by_feature(CURRENT).collect()
    assert got["change"].null_count() == got.height == 2
    assert got["previous_cost_usd"].null_count() == 2


def test_empty_events_give_an_empty_typed_frame() -> None:
    got = by_feature(frame(), frame()).collect()
    assert got.height == 0
    assert got.schema["cost_usd"] == pl.Float64 and got.schema["requests"] == pl.Int64


def test_one_row() -> None:
    got = by_feature(frame(ev(feature="x", cost_usd=0.5, latency_ms=120.0, upstream_ms=100.0))).collect()
    assert got.select("feature", "requests", "cost_usd", "share").row(0) == ("x", 1, 0.5, 1.0)
    assert got.select("latency_ms_p95", "overhead_ms_p95").row(0) == (pytest.approx(120.0, rel=0.015),
                                                                     pytest.approx(20.0, rel=0.015))


def test_all_untagged_and_all_unpriced_cost_is_unknown_not_zero() -> None:
    events = frame(ev(feature=None, input_tokens=None, output_tokens=None), ev(feature=None, input_tokens=7))
    got = by_feature(events).collect()
    expected = pl.DataFrame(
        {"feature": ["untagged"], "requests": [2], "cost_usd": [None], "unpriced_requests": [2],
         "share": [None], "input_tokens": [7], "output_tokens": [0]},
        schema_overrides={"requests": INT, "cost_usd": F, "unpriced_requests": INT, "share": F,
                          "input_tokens": INT, "output_tokens": INT},
    )
    assert_frame_equal(got.select(expected.columns), expected)


def test_errors_without_a_price_are_not_counted_as_unpriced() -> None:
    events = frame(ev(status_code=429, error_type="rate_limited"), ev(status_code=200, error_type="timeout"))
    got = by_feature(events).collect().row(0, named=True)
    assert (got["errors"], got["error_rate"], got["unpriced_requests"], got["cost_usd"]) == (2, 1.0, 0, None)


def test_by_model_and_by_provider_keys() -> None:
    events = frame(
        ev(provider="openai", model="gpt-4o", cost_usd=1.0),
        ev(provider="openai", model="gpt-4o-mini", cost_usd=0.25),
        ev(provider="groq", model="llama-3.1-8b-instant", cost_usd=0.75),
    )
    models = by_model(events).collect().select("provider", "model", "cost_usd", "share")
    assert_frame_equal(
        models,
        pl.DataFrame({"provider": ["openai", "groq", "openai"],
                      "model": ["gpt-4o", "llama-3.1-8b-instant", "gpt-4o-mini"],
                      "cost_usd": [1.0, 0.75, 0.25], "share": [0.5, 0.375, 0.125]}),
    )
    providers = by_provider(events).collect().select("provider", "requests", "cost_usd")
    assert_frame_equal(
        providers,
        pl.DataFrame({"provider": ["openai", "groq"], "requests": [2, 1], "cost_usd": [1.25, 0.75]},
                     schema_overrides={"requests": INT}),
    )


def test_split_periods_uses_the_same_length_just_before() -> None:
    events = frame(ev(at=-49), ev(at=-47), ev(at=-1), ev(at=0), ev(at=47), ev(at=48))
    current, previous = split_periods(events, T0, T0 + dt.timedelta(hours=48))
    assert current.collect().height == 2  # 0 and 47; 48 is the exclusive end
    assert previous.collect().height == 2  # -47 and -1; -49 is outside


def test_provider_health() -> None:
    now = T0 + dt.timedelta(hours=30)
    events = frame(
        # openai: 10 requests in the last hour, 3 failing → failing (30 %)
        *[ev(provider="openai", at=29.5, status_code=500 if i < 3 else 200) for i in range(10)],
        # groq: quiet last hour (2 requests), so the 24 h rate decides: 1 of 20 → degraded (5 %)
        *[ev(provider="groq", at=10, status_code=429 if i == 0 else 200) for i in range(18)],
        ev(provider="groq", at=29.9), ev(provider="groq", at=29.8),
        # anthropic: fine; an old error outside 24 h is ignored
        ev(provider="anthropic", at=20), ev(provider="anthropic", at=1, status_code=500),
    )
    got = provider_health(events, now).collect()
    expected = pl.DataFrame(
        {
            "provider": ["anthropic", "groq", "openai"],
            "requests_1h": [0, 2, 10],
            "errors_1h": [0, 0, 3],
            "error_rate_1h": [None, 0.0, 0.3],
            "requests_24h": [1, 20, 10],
            "errors_24h": [0, 1, 3],
            "error_rate_24h": [0.0, 0.05, 0.3],
            "status": ["ok", "degraded", "failing"],
        },
        schema_overrides={c: INT for c in ("requests_1h", "errors_1h", "requests_24h", "errors_24h")}
        | {"error_rate_1h": F},
    )
    assert_frame_equal(got.select(expected.columns), expected)
    assert got["last_error_at"].to_list()[1:] == [T0 + dt.timedelta(hours=10), T0 + dt.timedelta(hours=29.5)]


def test_untagged_share_and_prompt() -> None:
    events = frame(ev(feature=None, cost_usd=1.0), ev(feature="a", cost_usd=3.0), ev(feature="b"), ev(feature="c"))
    got = untagged_share(events).collect()
    expected = pl.DataFrame(
        {"requests": [4], "untagged_requests": [1], "untagged_share": [0.25], "untagged_cost_usd": [1.0],
         "untagged_cost_share": [0.25], "show_tagging_prompt": [True]},
        schema_overrides={"requests": INT, "untagged_requests": INT},
    )
    assert_frame_equal(got, expected)
    assert untagged_share(events, threshold=0.25).collect()["show_tagging_prompt"].item() is False
    empty = untagged_share(frame()).collect().row(0, named=True)
    assert empty["requests"] == 0 and empty["untagged_share"] is None and empty["show_tagging_prompt"] is False


def test_unpriced_models() -> None:
    events = frame(
        ev(model="my-llm", input_tokens=10, output_tokens=1),
        ev(model="my-llm", input_tokens=None, output_tokens=2),
        ev(model="my-llm", status_code=500),
        ev(model="gpt-4o", cost_usd=0.1),
    )
    got = unpriced(events).collect()
    expected = pl.DataFrame(
        {"provider": ["openai"], "model": ["my-llm"], "requests": [2], "input_tokens": [10], "output_tokens": [3]},
        schema_overrides={"requests": INT, "input_tokens": INT, "output_tokens": INT},
    )
    assert_frame_equal(got, expected)
