"""Recommendations: cheaper models of the same provider, as cards, and what the reasoning rule
protects from ever being downgraded."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import data, routing_editor
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import header, period

CONFIDENCE_COLOR = {"high": "green", "medium": "blue", "low": "gray"}
STRENGTH_COLOR = {"strong": "violet", "aggressive": "violet", "moderate": "blue", "conservative": "gray"}

org = require_org()
end = header("Recommendations")
view = data.recommendations(org.id, period(), end)
st.caption(
    f"From the last {view.window_days} days of traffic; each card moves one feature to a cheaper model of the "
    "same provider. Savings price your observed tokens at both models' list prices, scaled to a month."
)


def card(rec: dict[str, Any], index: int) -> None:
    evidence = rec["evidence"]
    with st.container(border=True):
        title, saving = st.columns([3, 1])
        title.markdown(f"#### {rec['feature']}")
        title.markdown(f"`{rec['from_model']}` → `{rec['to_model']}` · {rec['provider']}")
        saving.metric("Monthly saving", fmt.money(rec["monthly_saving_usd"]),
                      help=f"Now about {fmt.money(rec['monthly_cost_usd'])} a month")
        badges = st.container(horizontal=True)
        with badges:
            st.badge(f"{rec['confidence']} confidence", color=CONFIDENCE_COLOR.get(rec["confidence"], "gray"))  # type: ignore[arg-type]
            st.badge(rec["strength"], color=STRENGTH_COLOR.get(rec["strength"], "gray"))  # type: ignore[arg-type]
            st.badge(f"task: {rec['task'] or 'not declared'}", color="gray")
        st.markdown(rec["reason"])
        st.caption(
            f"Evidence: {fmt.count(evidence['requests'])} requests · typical prompt "
            f"{fmt.tokens(evidence['prompt_tokens_p50'])} tokens · typical response "
            f"{fmt.tokens(evidence['response_tokens_p50'])} tokens · errors {fmt.percent(evidence['error_rate'])} · "
            f"observed {fmt.money(evidence['observed_monthly_cost_usd'])}/month"
        )
        routing_editor.apply_button(org, rec, index)


if not view.cards and view.protected.is_empty():
    if data.has_traffic(org.id):
        st.success("Nothing to recommend: every feature already runs on the cheapest sensible model we know of.")
    else:
        st.info("Recommendations appear once traffic arrives. Tag it with `X-Lectr-Task` (classification, "
                "summarisation, extraction, generation, reasoning) for high-confidence cards.")
for index, rec in enumerate(view.cards):
    card(rec, index)

if not view.protected.is_empty():
    st.subheader("Protected")
    st.caption("Requests tagged `X-Lectr-Task: reasoning` are never recommended for a downgrade, whatever "
               "else the traffic looks like.")
    for row in view.protected.iter_rows(named=True):
        st.markdown(
            f":material/lock: **{row['feature']}** on `{row['model']}` ({row['provider']}): "
            f"{fmt.count(row['reasoning_requests'])} reasoning requests, never downgraded"
        )
