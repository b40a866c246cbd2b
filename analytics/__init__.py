"""Lectr analytics: every figure the dashboard shows, as pure functions over polars frames.

Load once, compute lazily, collect at the edge::

    import datetime as dt, polars as pl, analytics

    now = dt.datetime.now(dt.UTC)
    events = analytics.load_events(conn_or_url, org_id, now - dt.timedelta(days=14), now)
    current, previous = analytics.split_periods(events, now - dt.timedelta(days=7), now)
    features, daily = pl.collect_all([analytics.by_feature(current, previous),
                                      analytics.timeseries(current, "1d")])
    cards = analytics.recommendations(events, window_days=14)

Loading (Postgres → polars, via ADBC; filters run in SQL)
    load_events(source, org_id, start, end, *, columns=ANALYTICS_COLUMNS, features=None,
                models=None, providers=None, tasks=None, status=None, limit=None) -> LazyFrame
        events typed per EVENT_SCHEMA; None in `features`/`tasks` selects untagged rows;
        status: "ok" | "error" | [codes]; limit keeps the newest rows (request log).
    events_frame(records, columns=None) -> LazyFrame      dicts → typed events (tests, notebooks)
    split_periods(events, start, end) -> (current, previous)   same-length period before

Figures (each returns a LazyFrame; see each docstring for the exact columns)
    breakdown(current, previous=None, by="feature"|[...]) / by_feature / by_model / by_provider
        key(s), requests, errors, error_rate, input_tokens, output_tokens, cached_input_tokens,
        cost_usd (null when nothing priced), unpriced_requests, latency_ms_avg, latency_ms_p95,
        ttft_ms_p95, overhead_ms_avg, overhead_ms_p95, share, previous_cost_usd,
        previous_requests, change
    timeseries(events, every="1d", by=None, start=None, end=None)
        bucket, [by], requests, errors, error_rate, cost_usd, unpriced_requests, input_tokens,
        output_tokens, latency_ms_avg, latency_ms_p95 (empty buckets filled)
    cost_by_provider(events, every="1d", start=None, end=None)
        bucket, provider, cost_usd, requests
    provider_health(events, now)
        provider, requests_1h, errors_1h, error_rate_1h, requests_24h, errors_24h,
        error_rate_24h, latency_ms_p95_1h, last_error_at, status (ok/degraded/failing)
    untagged_share(events, threshold=0.2)
        one row: requests, untagged_requests, untagged_share, untagged_cost_usd,
        untagged_cost_share, show_tagging_prompt
    unpriced(events)
        provider, model, requests, input_tokens, output_tokens (successful, no known price)

Recommendations (SPEC §5; within one provider; reasoning never downgraded)
    recommendations(events, window_days) -> DataFrame (CARD_SCHEMA)
        feature, provider, from_model, to_model, confidence, strength, task,
        monthly_saving_usd, monthly_cost_usd, evidence{requests, error_rate, prompt_tokens_p50,
        response_tokens_p50, task, observed_monthly_cost_usd, window_days}, reason, signals
    recommendation_list(events, window_days) -> list[Recommendation]   same, as objects
    usage_profile(events) -> LazyFrame        the evidence per (feature, provider, model, task)
    protected_features(events) -> LazyFrame   feature, provider, model, reasoning_requests
    ladder(provider, model) -> tuple[Rung, ...]   the cheaper models of the same provider

Anomalies (trailing median/MAD baseline; only rises)
    anomalies(events) / cost_anomalies / error_rate_anomalies / latency_anomalies -> LazyFrame
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
from analytics.metrics import (
    UNTAGGED,
    breakdown,
    by_feature,
    by_model,
    by_provider,
    provider_health,
    split_periods,
    unpriced,
    untagged_share,
)
from analytics.recommend import (
    CARD_SCHEMA,
    TASKS,
    Recommendation,
    protected_features,
    recommendation_list,
    recommendations,
    usage_profile,
)
from analytics.timeseries import cost_by_provider, timeseries

__all__ = [
    "ANALYTICS_COLUMNS",
    "CARD_SCHEMA",
    "EVENT_SCHEMA",
    "TASKS",
    "UNTAGGED",
    "Recommendation",
    "Rung",
    "anomalies",
    "breakdown",
    "by_feature",
    "by_model",
    "by_provider",
    "cost_anomalies",
    "cost_by_provider",
    "error_rate_anomalies",
    "events_frame",
    "family_of",
    "ladder",
    "latency_anomalies",
    "load_events",
    "protected_features",
    "provider_health",
    "recommendation_list",
    "recommendations",
    "split_periods",
    "timeseries",
    "unpriced",
    "untagged_share",
    "usage_profile",
]
