"""Budgets and alert webhooks (Settings): each budget's spend so far as a bar with its thresholds,
add and remove; webhooks added (URL checked by SPEC §9's rule), removed and tested; the delivery log.

All writes go through `proxy.store.budgets` and `proxy.store.webhooks`, which scope each operation to the
signed-in org. Spend here is the rollups' (what the proxy has written: a few seconds behind).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import altair as alt
import polars as pl
import streamlit as st

from dashboard.auth import SignedIn
from dashboard.db import database
from proxy.core.config import Settings
from proxy.store.budgets import add_budget, list_budgets, parse_alert_at, remove_budget
from proxy.store.orgs import OrgError
from proxy.store.webhooks import FORMATS, add_webhook, delivery_log, list_webhooks, remove_webhook


def _write(action: Any) -> Any:
    """Run a write; on a refusal (`OrgError`) show it and return None instead of failing the page."""
    try:
        with database().write() as conn:
            result = action(conn)
    except OrgError as exc:
        st.error(str(exc))
        return None
    return True if result is None else result


def _send_test(org_name: str) -> list[str]:
    """`lectr alert test ORG`, run as the command: sending alerts is the proxy's machinery (its HTTP
    client and the alert sender), which the dashboard does not import (docs/ARCHITECTURE.md). One
    line per webhook: "webhook 3 (slack): delivered (HTTP 200, 41 ms)"."""
    command = [sys.executable, "-m", "proxy.cli", "alert", "test", org_name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return ["the test alert did not finish within 120 s"]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        lines = [(done.stderr.strip().splitlines() or ["the test alert failed"])[-1]]
    return lines


def _bar(budget: dict[str, Any]) -> alt.LayerChart:
    """Spend as a bar on a scale of the limit, a tick at each alert threshold."""
    limit = budget["limit_usd"]
    top = max(limit, budget["spend_usd"]) * 1.05
    spend = pl.DataFrame({"what": ["spent"], "usd": [budget["spend_usd"]]})
    at = budget["alert_at"]
    ticks = pl.DataFrame({"at": [f"{p} %" for p in at], "usd": [limit * p / 100 for p in at]})
    colour = "#d62728" if budget["spend_usd"] >= limit else "#1f77b4"
    x = alt.X("usd:Q", title=None, scale=alt.Scale(domain=[0, top]), axis=alt.Axis(format="$,.2f"))
    bar = alt.Chart(spend).mark_bar(color=colour, height=18).encode(x=x, tooltip=[alt.Tooltip("usd:Q", format="$,.4f")])
    rules = alt.Chart(ticks).mark_rule(color="#555", strokeDash=[4, 2], strokeWidth=2).encode(
        x="usd:Q", tooltip=["at", alt.Tooltip("usd:Q", format="$,.2f")])
    return (bar + rules).properties(height=40)


def budgets(org: SignedIn) -> None:
    st.caption("A budget limits what the org (or one feature) spends per UTC day or month. Alerts go to the "
               "webhooks below at each threshold, once per period; a hard budget also refuses requests "
               "(`429 budget_exceeded`) once reached, until the period resets.")
    with st.form("add_budget", border=True):
        st.markdown("**Add a budget**")
        left, right = st.columns(2)
        limit = left.number_input("Limit (USD)", min_value=0.01, value=100.0, step=10.0, key="budget_limit")
        period = right.selectbox("Per", ["month", "day"], key="budget_period")
        feature = left.text_input("Feature (empty: the whole org)", key="budget_feature")
        alert_at = right.text_input("Alert at (% of the limit)", value="80,100", key="budget_alert_at")
        hard = st.checkbox("Hard: refuse requests once the limit is reached", key="budget_hard")
        added = st.form_submit_button("Add budget")
    if added:
        budget_id = _write(lambda conn: add_budget(
            conn, org.name, limit_usd=str(limit), period=period, feature=feature.strip() or None, hard=hard,
            alert_at=parse_alert_at(alert_at)))
        if budget_id is not None:
            st.success(f"Budget #{budget_id} added; every proxy worker applies it within seconds.")
    with database().read() as conn:
        found = list_budgets(conn, org.name)
    if not found:
        st.info("No budgets yet.", icon=":material/savings:")
    for budget in found:
        scope = f"feature `{budget['feature']}`" if budget["feature"] is not None else "whole org"
        kind = "hard" if budget["hard"] else "soft"
        resets = budget["resets_at"][:16].replace("T", " ")
        described, delete = st.columns([7, 1], vertical_alignment="center")
        described.markdown(
            f"**#{budget['id']}** · {scope} · ${budget['limit_usd']:,.2f} a {budget['period']} ({kind}) · "
            f"spent **${budget['spend_usd']:,.2f}** ({budget['percent']:.0f} %) · alerts at "
            f"{', '.join(f'{p} %' for p in budget['alert_at'])} · resets {resets} UTC")
        if delete.button("Delete", key=f"budget_rm_{budget['id']}"):
            _write(lambda conn, b=budget: remove_budget(conn, org.name, b["id"]))
            st.rerun()
        st.altair_chart(_bar(budget), width="stretch")


def webhooks(org: SignedIn) -> None:
    st.caption("Budget thresholds and anomalies (when they start) are posted here: `json` (the object in the "
               "README) or `slack` (an incoming webhook). URLs must be `https://` to a public address.")
    with st.form("add_webhook", border=True):
        st.markdown("**Add a webhook**")
        left, right = st.columns([4, 1])
        url = left.text_input("URL", placeholder="https://hooks.slack.com/services/...", key="hook_url")
        fmt = right.selectbox("Format", list(FORMATS), key="hook_format")
        added = st.form_submit_button("Add webhook")
    if added:
        allow = Settings.from_env().allow_private_upstreams
        hook_id = _write(lambda conn: add_webhook(conn, org.name, url, fmt, allow_private=allow))
        if hook_id is not None:
            st.success(f"Webhook #{hook_id} added.")
    with database().read() as conn:
        hooks = list_webhooks(conn, org.name)
        log = delivery_log(conn, org.id)
    for hook in hooks:
        described, delete = st.columns([7, 1], vertical_alignment="center")
        # The host only: a Slack webhook's path is its secret.
        described.markdown(f"**#{hook['id']}** · `{hook['format']}` · `{urlsplit(hook['url']).netloc}/…`")
        if delete.button("Delete", key=f"hook_rm_{hook['id']}"):
            _write(lambda conn, h=hook: remove_webhook(conn, org.name, h["id"]))
            st.rerun()
    if hooks and st.button("Send a test alert", key="hook_test"):
        with st.spinner("Sending a test alert to each webhook…"):
            lines = _send_test(org.name)
        for line in lines:
            (st.error if "NOT delivered" in line or not line.startswith("webhook") else st.success)(line)
        with database().read() as conn:
            log = delivery_log(conn, org.id)
    st.markdown("**Delivery log**")
    if not log:
        st.caption("No alerts sent yet.")
        return
    st.dataframe(pl.DataFrame(log, infer_schema_length=None), hide_index=True, width="stretch")
