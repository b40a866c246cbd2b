"""Overview: cost, requests, latency and errors over the period, against the period before."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import charts, data
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import empty_period, header, period, period_caption, reach_note

org = require_org()
end = header("Overview")
chosen = period()
period_caption(end)
reach_note(data.reach(org.id), data.period_start(chosen, end))
view = data.overview(org.id, chosen, end)
every = data.PERIODS[chosen].every


def _change(now: dict[str, Any], before: dict[str, Any] | None, column: str) -> str | None:
    if before is None or not before.get(column):
        return None
    return fmt.change(now[column] / before[column] - 1)


if view.totals is None:
    empty_period(data.has_traffic(org.id))
    st.stop()

totals, before = view.totals, view.previous
cost, requests, latency, errors = st.columns(4)
cost.metric("Cost", fmt.money(totals["cost_usd"]), fmt.change(totals["change"]) if totals["change"] is not None
            else None, delta_color="inverse", border=True, help="Known cost; unpriced requests are not counted as $0.")
requests.metric("Requests", fmt.count(totals["requests"]), _change(totals, before, "requests"),
                delta_color="off", border=True)
latency.metric("Latency (avg)", fmt.duration(totals["latency_ms_avg"]),
               fmt.delta_duration(totals["latency_ms_avg"], before["latency_ms_avg"] if before else None),
               delta_color="inverse", border=True, help=f"p95 {fmt.duration(totals['latency_ms_p95'])}")
errors.metric("Error rate", fmt.percent(totals["error_rate"]),
              fmt.delta_points(totals["error_rate"], before["error_rate"] if before else None),
              delta_color="inverse", border=True, help=f"{fmt.count(totals['errors'])} failed requests")

if totals["unpriced_requests"]:
    st.caption(f"{fmt.count(totals['unpriced_requests'])} successful requests used models without a known price; "
               "their cost is unknown and not included (see Providers & models).")

untagged = view.untagged
if untagged["show_tagging_prompt"]:
    st.warning(
        f"**{fmt.percent(untagged['untagged_share'])} of requests are untagged** "
        f"({fmt.money(untagged['untagged_cost_usd'])} of cost). Add an `X-Lectr-Feature` header naming the part "
        "of your product that sends each request, e.g. `X-Lectr-Feature: chat`, to see cost, latency and errors "
        "per feature.",
        icon=":material/sell:",
    )

left, right = st.columns(2)
left.altair_chart(charts.time_bars(view.series, "cost_usd", "Cost", every, fmt.money, charts.MONEY_AXIS),
                  width="stretch")
right.altair_chart(charts.time_bars(view.series, "requests", "Requests", every, fmt.count), width="stretch")
left, right = st.columns(2)
left.altair_chart(
    charts.time_lines(view.series, {"latency_ms_avg": "average", "latency_ms_p95": "p95"}, "Latency", every,
                      fmt.duration, charts.DURATION_LABELS),
    width="stretch",
)
right.altair_chart(
    charts.time_lines(view.series, {"error_rate": "error rate"}, "Error rate", every, fmt.percent,
                      charts.PERCENT_AXIS),
    width="stretch",
)
