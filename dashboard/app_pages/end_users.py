"""End users: which of the org's customers cost what (`X-Lectr-User`, or the body's `user`)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analytics.end_users import UNTAGGED, top_end_users
from dashboard import charts, data
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import empty_period, header, period, period_caption, table

TOP = 15  # end users in the charts

org = require_org()
end = header("End users")
chosen = period()
period_caption(end)
rows = data.end_users(org.id, chosen, end)

if rows.is_empty():
    if data.has_traffic(org.id):
        st.info(
            "No request in this period named an end user. Send `X-Lectr-User: <your customer's id>` with each "
            "request (or `user` in an OpenAI body, `metadata.user_id` in an Anthropic one) to see what each of "
            "your customers costs.",
            icon=":material/person:",
        )
    else:
        empty_period(False)
    st.stop()

labelled = rows.with_columns(pl.col("feature").fill_null(UNTAGGED))
options = sorted(labelled["feature"].unique().to_list())
picked = st.multiselect("Feature", options, placeholder="All features", key="end_users_features")
scoped = labelled.filter(pl.col("feature").is_in(picked)) if picked else labelled
ranked = top_end_users(scoped.lazy(), limit=None).collect()
top = ranked.head(TOP)

users, cost, leader = st.columns(3)
users.metric("End users", fmt.count(ranked.height), border=True)
cost.metric("Their cost", fmt.money(ranked["cost_usd"].sum()), border=True,
            help="Known cost of the requests that named an end user.")
first = ranked.row(0, named=True)
leader.metric("Top end user", first["end_user"], f"{fmt.percent(first['share'])} of cost", delta_color="off",
              border=True)

left, right = st.columns(2)
by_feature = scoped.filter(pl.col("end_user").is_in(top["end_user"].to_list()))
left.altair_chart(
    charts.split_ranked_bars(by_feature, "end_user", "cost_usd", "feature", f"Top {TOP} by cost", fmt.money,
                             charts.MONEY_AXIS),
    width="stretch",
)
right.altair_chart(
    charts.ranked_bars(ranked.sort("requests", descending=True).head(TOP), "end_user", "requests",
                       f"Top {TOP} by requests", fmt.count),
    width="stretch",
)

table(
    ranked,
    {
        "end_user": "End user", "requests": "Requests", "cost_usd": "Cost", "share": "Share of cost",
        "request_share": "Share of requests", "errors": "Errors", "error_rate": "Error rate",
        "latency_ms_avg": "Latency avg", "input_tokens": "Input tokens", "output_tokens": "Output tokens",
        "features": "Features",
    },
    {
        "requests": fmt.count, "cost_usd": fmt.money, "share": fmt.percent, "request_share": fmt.percent,
        "errors": fmt.count, "error_rate": fmt.percent, "latency_ms_avg": fmt.duration,
        "input_tokens": fmt.tokens, "output_tokens": fmt.tokens,
    },
)
st.caption("Requests that name no end user are not counted here. Look one up in the Requests page's "
           "End user filter.")
