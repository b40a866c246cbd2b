"""Anomalies: a feature's cost, a provider's error rate or a model's p95 latency that left its
own recent baseline (median and MAD of the buckets before it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import altair as alt
import polars as pl
import streamlit as st

from dashboard import data
from dashboard import format as fmt
from dashboard.auth import require_org
from dashboard.components import empty_period, header, period, period_caption

KINDS: dict[str, tuple[str, str, Callable[[Any], str]]] = {  # kind → (label, subject column, formatter)
    "feature_cost": ("Feature cost (daily)", "feature", fmt.money),
    "provider_error_rate": ("Provider error rate (hourly)", "provider", fmt.percent),
    "model_latency_p95": ("Model p95 latency (daily)", "model", fmt.duration),
}

org = require_org()
end = header("Anomalies")
chosen = period()
period_caption(end)
found = data.anomalies(org.id, chosen, end)

if found.is_empty():
    if data.has_traffic(org.id):
        st.success("Nothing unusual in this period: every cost, error rate and latency stayed near its own "
                   "recent baseline.")
    else:
        empty_period(False)
    st.stop()

rows = found.with_columns(
    pl.col("kind").replace_strict({k: v[0] for k, v in KINDS.items()}).alias("what"),
    pl.coalesce("feature", "model", "provider").alias("subject"),
)
start = data.period_start(chosen, end)
st.altair_chart(
    alt.Chart(rows, height=260, title="How far each anomaly left its baseline (hover for details)")
    .mark_circle(size=140, opacity=0.85)
    .encode(
        x=alt.X("bucket:T", title=None, axis=alt.Axis(format="%b %d", labelAngle=0),
                scale=alt.Scale(domain=[start.isoformat(), end.isoformat()])),
        y=alt.Y("ratio:Q", title="× baseline", scale=alt.Scale(zero=True), axis=alt.Axis(format=".1~f")),
        color=alt.Color("what:N", title=None, legend=None),  # the cards below name each one
        tooltip=[alt.Tooltip("what:N", title="What"), alt.Tooltip("subject:N", title="Where"),
                 alt.Tooltip("bucket:T", title="When", format="%Y-%m-%d %H:%M UTC"),
                 alt.Tooltip("ratio:Q", title="× baseline", format=".1f")],
    ),
    width="stretch",
)

for row in found.iter_rows(named=True):
    label, subject_column, formatter = KINDS.get(row["kind"], (row["kind"], "feature", str))
    subject = row[subject_column] or row["provider"]
    where = f"{subject} ({row['provider']})" if subject_column == "model" else subject
    with st.container(border=True):
        left, right = st.columns([3, 1])
        left.markdown(f"**{label}: {where}**")
        left.caption(f"{fmt.timestamp(row['bucket'])} · {row['z']:.1f} robust σ above a baseline of "
                     f"{row['history']} buckets")
        ratio = f"{row['ratio']:.1f}× baseline" if row["ratio"] is not None else None
        right.metric(label.split(" (")[0], formatter(row["value"]), ratio, delta_color="inverse",
                     help=f"Baseline {formatter(row['baseline'])}")
