"""Features: cost, share and change per feature, latency and errors, as a chart and a table."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import empty_period, header, period, period_caption, table

org = require_org()
end = header("Features")
chosen = period()
period_caption(end)
view = data.features(org.id, chosen, end)

if view.table.is_empty():
    empty_period(data.has_traffic(org.id))
    st.stop()

left, right = st.columns([2, 3])
left.altair_chart(charts.ranked_bars(view.table, "feature", "cost_usd", "Cost per feature", fmt.money,
                                     charts.MONEY_AXIS), width="stretch")
right.altair_chart(
    charts.stacked_bars(view.series, "cost_usd", "feature", "Cost per feature over time",
                        data.PERIODS[chosen].every, fmt.money, charts.MONEY_AXIS,
                        order=view.table["feature"].to_list()),
    width="stretch",
)

table(
    view.table,
    {
        "feature": "Feature", "requests": "Requests", "cost_usd": "Cost", "share": "Share",
        "change": "Change", "latency_ms_avg": "Latency avg", "latency_ms_p95": "Latency p95",
        "errors": "Errors", "error_rate": "Error rate", "input_tokens": "Input tokens",
        "output_tokens": "Output tokens",
    },
    {
        "requests": fmt.count, "cost_usd": fmt.money, "share": fmt.percent, "change": fmt.change,
        "latency_ms_avg": fmt.duration, "latency_ms_p95": fmt.duration, "errors": fmt.count,
        "error_rate": fmt.percent, "input_tokens": fmt.tokens, "output_tokens": fmt.tokens,
    },
)
st.caption("`untagged` is traffic sent without an `X-Lectr-Feature` header. Change compares cost with the "
           "period before; — means there was no cost to compare with.")
