"""Lectr analytics: every figure the dashboard shows, as pure functions over polars frames.

Figures read rollup frames (one row per hour, or piece of an hour, and group; see
`analytics.rollups`): load once, compute lazily, collect at the edge::

    import datetime as dt, polars as pl, analytics

    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=7)
    frame = analytics.load_rollups(conn_or_url, org_id, start - dt.timedelta(days=7), now, cuts=[start])
    current, previous = analytics.split_periods(frame, start, now)
    features, daily = pl.collect_all([analytics.by_feature(current, previous),
                                      analytics.timeseries(current, "1d")])

Loading (Postgres → polars, via ADBC; filters run in SQL)
    load_rollups(source, org_id, start, end, *, cuts=(), histograms=HISTOGRAMS, now=None)
        -> LazyFrame (ROLLUP_SCHEMA): whole hours from rollup_hourly, the hours cut by `start`,
        `end` or `cuts` in pieces (the short ones aggregated from raw events), so windows
        whose bounds are among them are exact; `histograms` to load (others null); `days=True`:
        whole UTC days from rollup_daily, one row each
    load_health(source, org_id, end) -> LazyFrame   the frame provider_health(frame, end) reads
        (its figures only; the raw edges read with the few columns they need)
    rollup(events, cuts=(), histograms=HISTOGRAMS) -> LazyFrame   raw events → rollup rows, as
        the writer makes them
    window(frame, start, end) -> LazyFrame   the rows of [start, end)
    quantiles(frame, keys, histogram, {name: q}) -> LazyFrame   merged-histogram quantiles
    load_events(source, org_id, start, end, *, columns=ANALYTICS_COLUMNS, features=None,
                models=None, providers=None, tasks=None, status=None, limit=None) -> LazyFrame
        raw events typed per EVENT_SCHEMA (the request log, tests, notebooks)
    events_frame(records, columns=None) -> LazyFrame      dicts → typed events (tests, notebooks)
    raw_reach(conn, org_id) -> datetime | None   the oldest raw event still stored
    split_periods(frame, start, end) -> (current, previous)   same-length period before

Figures (each returns a LazyFrame; see each docstring for the exact columns)
    breakdown(current, previous=None, by="feature"|[...]) / by_feature / by_model / by_provider
        key(s), requests, errors, error_rate, input_tokens, output_tokens, cached_input_tokens,
        cost_usd (null when nothing priced), unpriced_requests, latency_ms_avg, latency_ms_p95,
        ttft_ms_p95, overhead_ms_avg, overhead_ms_p95, share, previous_cost_usd,
        previous_requests, change
    timeseries(frame, every="1d", by=None, start=None, end=None)   every >= 1h
        bucket, [by], requests, errors, error_rate, cost_usd, unpriced_requests, input_tokens,
        output_tokens, latency_ms_avg, latency_ms_p95 (empty buckets filled)
    sums_series(...)   the same without the p95 (null): cheaper, for cost and count charts
    cost_by_provider(frame, every="1d", start=None, end=None)
        bucket, provider, cost_usd, requests
    provider_health(frame, now)   (frame cut at health_cuts(now))
        provider, requests_1h, errors_1h, error_rate_1h, requests_24h, errors_24h,
        error_rate_24h, latency_ms_p95_1h, last_error_at, status (ok/degraded/failing)
    untagged_share(frame, threshold=0.2)
        one row: requests, untagged_requests, untagged_share, untagged_cost_usd,
        untagged_cost_share, show_tagging_prompt
    unpriced(frame)
        provider, model, requests, input_tokens, output_tokens (successful, no known price)

Recommendations (SPEC §5; within one provider; reasoning never downgraded)
    recommendations(frame, window_days, base_models=None) -> DataFrame (CARD_SCHEMA)
        feature, provider, from_model, to_model, confidence, strength, task,
        monthly_saving_usd, monthly_cost_usd, evidence{requests, error_rate, prompt_tokens_p50,
        response_tokens_p50, task, observed_monthly_cost_usd, window_days}, reason, signals
    recommendation_list(frame, window_days, base_models=None) -> list[Recommendation]
    usage_profile(frame, base_models=None) -> LazyFrame  the evidence per (feature, provider, model, task)
    base_models(events) / azure_base_models(source, org_id, frame)   Azure deployment → model
    protected_features(frame) -> LazyFrame   feature, provider, model, reasoning_requests
    ladder(provider, model) -> tuple[Rung, ...]   the cheaper models of the same provider

Anomalies (trailing median/MAD baseline; only rises)
    anomalies(frame) / cost_anomalies / error_rate_anomalies / latency_anomalies -> LazyFrame
        kind, feature, provider, model, bucket (when), value, baseline, mad, ratio, z, history

Commands (used by `lectr report`, `lectr recommend`, `lectr demo`)
    analytics.commands.report(conn, org_name, days=7, as_json=False) -> str
    analytics.commands.recommend(conn, org_name, as_json=False) -> str
    analytics.demo.generate(conn, days=30, progress=None) -> str   (the demo org's new key)
"""

from __future__ import annotations

from analytics.anomalies import anomalies, cost_anomalies, error_rate_anomalies, latency_anomalies
from analytics.ladders import Rung, family_of, ladder
from analytics.load import ANALYTICS_COLUMNS, EVENT_SCHEMA, events_frame, load_events
from analytics.load_rollups import azure_base_models, load_health, load_rollups, raw_reach
from analytics.metrics import (
    FEATURE,
    UNTAGGED,
    breakdown,
    by_feature,
    by_model,
    by_provider,
    health_cuts,
    provider_health,
    split_periods,
    unpriced,
    untagged_share,
)
from analytics.recommend import (
    CARD_SCHEMA,
    RECOMMEND_HISTOGRAMS,
    TASKS,
    Recommendation,
    base_models,
    protected_features,
    recommendation_list,
    recommendations,
    usage_profile,
)
from analytics.rollups import HISTOGRAMS, ROLLUP_SCHEMA, quantiles, rollup, window
from analytics.timeseries import cost_by_provider, sums_series, timeseries

__all__ = [
    "FEATURE",
    "ANALYTICS_COLUMNS",
    "CARD_SCHEMA",
    "EVENT_SCHEMA",
    "HISTOGRAMS",
    "RECOMMEND_HISTOGRAMS",
    "ROLLUP_SCHEMA",
    "Recommendation",
    "Rung",
    "TASKS",
    "UNTAGGED",
    "anomalies",
    "azure_base_models",
    "base_models",
    "breakdown",
    "by_feature",
    "by_model",
    "by_provider",
    "cost_anomalies",
    "cost_by_provider",
    "error_rate_anomalies",
    "events_frame",
    "family_of",
    "health_cuts",
    "ladder",
    "latency_anomalies",
    "load_events",
    "load_health",
    "load_rollups",
    "protected_features",
    "provider_health",
    "quantiles",
    "raw_reach",
    "recommendation_list",
    "recommendations",
    "rollup",
    "split_periods",
    "sums_series",
    "timeseries",
    "unpriced",
    "untagged_share",
    "usage_profile",
    "window",
]
