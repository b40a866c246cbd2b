"""Every page under AppTest against the seeded demo org: no exception, and the figures shown are
the ones `analytics` computes for the same org and window."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

import analytics
from analytics.commands import RECOMMEND_DAYS
from dashboard import format as fmt
from dashboard.data import PERIODS, current_span, period_start, recent_start
from tests.dashboard.conftest import PAGES, SeededOrg, open_page, page_text


def _events(
    pg_url: str, org: SeededOrg, start: dt.datetime, end: dt.datetime, cuts: tuple[dt.datetime, ...] = ()
) -> pl.LazyFrame:
    """The org's rollups over the window, loaded on their own (not through the dashboard's caches)."""
    return analytics.load_rollups(pg_url, org.id, start, end, cuts=cuts).collect().lazy()


def _period(pg_url: str, org: SeededOrg, period: str, end: dt.datetime) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    start = period_start(period, end)
    previous = start - PERIODS[period].length
    frame = _events(pg_url, org, previous, end, (start,))
    return analytics.window(frame, start, end), analytics.window(frame, previous, start)


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(as_demo: AppTest, page: str) -> None:
    at = open_page(as_demo, page)
    assert not at.exception
    assert at.title[0].value


@pytest.mark.parametrize("period", ["24h", "7d", "30d", "90d"])
def test_overview_totals_match_analytics(
    as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime, period: str
) -> None:
    at = open_page(as_demo, "overview", period)
    current, previous = _period(pg_url, demo_org, period, end)
    features = analytics.by_feature(current, previous).collect()
    assert _metric(at, "Cost") == fmt.money(float(features["cost_usd"].sum()))
    assert _metric(at, "Requests") == fmt.count(int(features["requests"].sum()))
    errors = int(features["errors"].sum())
    assert _metric(at, "Error rate") == fmt.percent(errors / int(features["requests"].sum()))
    untagged = analytics.untagged_share(current).collect().row(0, named=True)
    prompted = any("untagged" in w.value for w in at.warning)
    assert prompted == untagged["show_tagging_prompt"]


def test_overview_shows_change_against_previous_period(
    as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime
) -> None:
    at = open_page(as_demo, "overview", "7d")
    current, previous = _period(pg_url, demo_org, "7d", end)
    change = analytics.breakdown(
        current.with_columns(k=pl.lit(1)), previous.with_columns(k=pl.lit(1)), by="k"
    ).collect()["change"][0]
    cost = next(m for m in at.metric if m.label == "Cost")
    assert cost.delta == fmt.change(change)


def test_features_table_is_by_feature(as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime) -> None:
    at = open_page(as_demo, "features", "30d")
    current, previous = _period(pg_url, demo_org, "30d", end)
    expected = analytics.by_feature(current, previous).collect()
    shown = at.dataframe[0].value
    assert list(shown["feature"]) == expected["feature"].to_list()
    assert list(shown["requests"]) == expected["requests"].to_list()
    unknown_as_nan = [math.nan if v is None else v for v in expected["cost_usd"].to_list()]
    assert list(shown["cost_usd"]) == pytest.approx(unknown_as_nan, nan_ok=True)
    assert "untagged" in list(shown["feature"])


def test_providers_models_table_filters_by_provider(
    as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime
) -> None:
    at = open_page(as_demo, "providers", "7d")
    current, previous = _period(pg_url, demo_org, "7d", end)
    models = analytics.by_model(current, previous).collect()
    tables = {tuple(t.value.columns): t.value for t in at.dataframe}
    model_table = next(v for cols, v in tables.items() if "model" in cols and "share" in cols)
    assert len(model_table) == len(models)
    assert list(model_table["requests"]) == models["requests"].to_list()
    at.multiselect(key="models_provider").set_value(["anthropic"]).run()
    assert not at.exception
    filtered = next(t.value for t in at.dataframe if "model" in t.value.columns and "share" in t.value.columns)
    assert set(filtered["provider"]) == {"anthropic"}
    assert len(filtered) == models.filter(pl.col("provider") == "anthropic").height
    recent = _events(pg_url, demo_org, end - dt.timedelta(days=2), end, tuple(analytics.health_cuts(end)))
    health = analytics.provider_health(recent, end).collect()
    text = page_text(at)
    for provider in health["provider"]:
        assert provider in text


def test_recommendations_cards_and_protection(
    as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime
) -> None:
    at = open_page(as_demo, "recommendations")
    start = recent_start(end)
    assert start == end.replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=RECOMMEND_DAYS)
    recent = _events(pg_url, demo_org, start, end)
    cards = analytics.recommendations(recent, (end - start) / dt.timedelta(days=1),
                                      analytics.azure_base_models(pg_url, demo_org.id, recent))
    savings = [m.value for m in at.metric if m.label == "Monthly saving"]
    assert savings == [fmt.money(v) for v in cards["monthly_saving_usd"]]
    assert len(savings) > 0
    protected = analytics.protected_features(recent).collect()
    assert "planner" in protected["feature"].to_list()
    text = "\n".join(m.value for m in at.markdown)
    assert "never downgraded" in text and "planner" in text
    assert all(c != "planner" for c in cards["feature"])  # the rule, as the page shows it


def test_anomalies_match_analytics(as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime) -> None:
    at = open_page(as_demo, "anomalies", "30d")
    # The page's window and kind of anomaly: 30 days from the hour, whole days, error rates per day.
    since, cuts = current_span("30d", end)
    start = period_start("30d", end)
    frame = analytics.load_rollups(pg_url, demo_org.id, since, end, cuts=cuts, days=True).collect().lazy()
    found = analytics.anomalies(frame, daily=True).collect()
    in_period = found.filter(pl.col("bucket") >= start.replace(hour=0, minute=0))
    assert in_period.height > 0  # the demo's runaway day and provider incident
    shown = [m for m in at.metric if m.delta and "baseline" in m.delta]
    assert len(shown) == in_period.height
    assert any("doc-summary" in m.value for m in at.markdown)  # the runaway feature


def test_sidebar_period_and_sign_out(as_demo: AppTest) -> None:
    at = open_page(as_demo, "overview", "24h")
    assert "Last 24 hours" in at.caption[0].value
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert at.text_input[0].label == "Org key"
    assert "lectr_org" not in at.session_state


@pytest.mark.parametrize("period", ["24h", "7d"])
def test_end_users_are_ranked_by_cost_and_narrow_to_a_feature(
    as_demo: AppTest, pg_url: str, demo_org: SeededOrg, end: dt.datetime, period: str
) -> None:
    from analytics.end_users import load_end_users, top_end_users
    from proxy.store.db import connect

    at = open_page(as_demo, "end_users", period)
    start = period_start(period, end)
    expected = top_end_users(load_end_users(pg_url, demo_org.id, start, end), limit=None).collect()
    assert expected.height > 0
    with connect(pg_url) as conn:  # the rollup's whole days and the raw edges add up to every request
        raw = conn.execute(
            "SELECT count(*), count(DISTINCT end_user) FROM events"
            " WHERE org_id = %s AND end_user IS NOT NULL AND created_at >= %s AND created_at < %s",
            (demo_org.id, start, end),
        ).fetchone()
    assert (int(expected["requests"].sum()), expected.height) == raw
    shown = at.dataframe[0].value
    assert list(shown["end_user"]) == expected["end_user"].to_list()
    assert list(shown["requests"]) == expected["requests"].to_list()
    assert list(shown["cost_usd"]) == pytest.approx(expected["cost_usd"].to_list())
    assert _metric(at, "End users") == fmt.count(expected.height)
    charts = page_text(at)
    assert "Top 15 by cost" in charts and "Top 15 by requests" in charts
    at.multiselect(key="end_users_features").set_value(["support-bot"]).run()
    narrowed = top_end_users(
        load_end_users(pg_url, demo_org.id, start, end, features=["support-bot"]), limit=None
    ).collect()
    assert list(at.dataframe[0].value["requests"]) == narrowed["requests"].to_list()
