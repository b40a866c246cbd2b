"""Providers & models: the model distribution (filterable by provider), cost per provider over
time, and each provider's health from the org's own recent traffic."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard import charts, data
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import empty_period, header, period, period_caption, table

HEALTH_BADGE = {"ok": ("green", "ok"), "degraded": ("orange", "degraded"), "failing": ("red", "failing")}

org = require_org()
end = header("Providers & models")
chosen = period()
period_caption(end)
view = data.providers(org.id, chosen, end)

if view.models.is_empty():
    empty_period(data.has_traffic(org.id))
    st.stop()

st.subheader("Provider health")
st.caption("Error rate of your own traffic: the last hour once it has 5 requests, otherwise the last 24 hours.")
health_cols = st.columns(max(1, min(len(view.health), 5)))
for index, row in enumerate(view.health.iter_rows(named=True)):
    color, label = HEALTH_BADGE.get(row["status"], ("gray", row["status"]))
    with health_cols[index % len(health_cols)].container(border=True):
        st.markdown(f"**{row['provider']}**")
        st.badge(label, color=color)  # type: ignore[arg-type]
        lines = [
            f"Last hour: {fmt.percent(row['error_rate_1h'])} errors of {fmt.count(row['requests_1h'])}"
            if row["requests_1h"] else "Last hour: no requests",
            f"Last 24 h: {fmt.percent(row['error_rate_24h'])} errors of {fmt.count(row['requests_24h'])}",
            f"p95 latency (1 h): {fmt.duration(row['latency_ms_p95_1h'])}",
        ]
        if row["last_error_at"] is not None:
            lines.append(f"Last error {fmt.timestamp(row['last_error_at'])}")
        st.caption("  \n".join(lines))

st.altair_chart(
    charts.stacked_bars(view.cost, "cost_usd", "provider", "Cost per provider", data.PERIODS[chosen].every,
                        fmt.money, charts.MONEY_AXIS, order=view.providers["provider"].to_list()),
    width="stretch",
)
table(
    view.providers,
    {"provider": "Provider", "requests": "Requests", "cost_usd": "Cost", "share": "Share", "change": "Change",
     "latency_ms_avg": "Latency avg", "latency_ms_p95": "Latency p95", "error_rate": "Error rate"},
    {"requests": fmt.count, "cost_usd": fmt.money, "share": fmt.percent, "change": fmt.change,
     "latency_ms_avg": fmt.duration, "latency_ms_p95": fmt.duration, "error_rate": fmt.percent},
)

st.subheader("Models")
names = view.providers["provider"].to_list()
picked = st.multiselect("Provider", names, placeholder="All providers", key="models_provider")
models = view.models.filter(pl.col("provider").is_in(picked)) if picked else view.models
table(
    models,
    {"provider": "Provider", "model": "Model", "requests": "Requests", "cost_usd": "Cost", "share": "Share",
     "change": "Change", "input_tokens": "Input tokens", "output_tokens": "Output tokens",
     "latency_ms_avg": "Latency avg", "latency_ms_p95": "Latency p95", "ttft_ms_p95": "TTFT p95",
     "error_rate": "Error rate"},
    {"requests": fmt.count, "cost_usd": fmt.money, "share": fmt.percent, "change": fmt.change,
     "input_tokens": fmt.tokens, "output_tokens": fmt.tokens, "latency_ms_avg": fmt.duration,
     "latency_ms_p95": fmt.duration, "ttft_ms_p95": fmt.duration, "error_rate": fmt.percent},
)
st.caption("Share is of the period's known cost across all providers.")

if not view.unpriced.is_empty():
    with st.expander(f"Models without a known price ({len(view.unpriced)})"):
        st.caption("Their requests succeeded but Lectr has no price for the model, so their cost is unknown "
                   "(shown as —, never as $0).")
        table(view.unpriced, {"provider": "Provider", "model": "Model", "requests": "Requests",
                              "input_tokens": "Input tokens", "output_tokens": "Output tokens"},
              {"requests": fmt.count, "input_tokens": fmt.tokens, "output_tokens": fmt.tokens})
