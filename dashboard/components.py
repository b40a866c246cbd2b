"""Pieces every page shares: the period, formatted tables, empty states and the quickstart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl
import streamlit as st

from dashboard import format as fmt
from dashboard.data import DEFAULT_PERIOD, PERIODS, Reach, window_end
from proxy.core.config import Settings

PERIOD_KEY = "period"
ROW_HEIGHT = 35  # st.dataframe's default row height, in pixels


def proxy_url() -> str:
    """The proxy's base URL as apps should use it (`LECTR_PROXY_URL`, set by `lectr up`)."""
    return Settings.from_env().proxy_url


def period() -> str:
    """The period chosen in the sidebar (24h / 7d / 30d / 90d)."""
    value = st.session_state.get(PERIOD_KEY)
    return value if value in PERIODS else DEFAULT_PERIOD


def period_selector() -> None:
    """The sidebar's period control, shared by every page (rendered by the entry file)."""
    st.sidebar.segmented_control(
        "Period", list(PERIODS), key=PERIOD_KEY, default=DEFAULT_PERIOD, required=True,
        help="Figures cover this period; changes compare with the period of the same length before it.",
    )


def header(title: str, caption: str | None = None) -> dt.datetime:
    """The page title and the window it covers; returns the window end (now, to the minute)."""
    end = window_end()
    st.title(title)
    if caption:
        st.caption(caption)
    return end


def period_caption(end: dt.datetime) -> None:
    label = PERIODS[period()].label
    before = label.removeprefix("Last ")
    st.caption(f"{label}, up to {end:%Y-%m-%d %H:%M} UTC · changes compare with the {before} before")


def reach_note(reach: Reach, start: dt.datetime, log: bool = False) -> None:
    """Say how far back raw events go when retention has dropped older ones (the rollups, and
    so every figure, may reach further back): on the request log always, elsewhere only when
    the period reaches past the raw events."""
    if reach.raw is None:
        return
    months = Settings.from_env().retention_months
    kept = f" (raw events are kept {months} months)" if months else ""
    older_rollups = reach.rollups is not None and reach.rollups < reach.raw
    if log and (older_rollups or start < reach.raw):
        st.caption(f"The request log reaches back to {reach.raw:%Y-%m-%d %H:%M} UTC{kept}; older requests are "
                   "counted in every figure (hourly rollups) but no longer listed one by one.")
    elif not log and older_rollups and start < reach.raw:
        st.caption(f"Figures come from hourly rollups kept since {reach.rollups:%Y-%m-%d}; raw events (the request "
                   f"log) reach back to {reach.raw:%Y-%m-%d %H:%M} UTC{kept}.")


def quickstart(extra_headers: Mapping[str, str] | None = None) -> None:
    """What to do when nothing has arrived yet: point an app at the proxy with the org key."""
    headers = {"X-Lectr-Key": "<your org key>", **(extra_headers or {})}
    header_lines = "\n".join(f'        "{name}": "{value}",' for name, value in headers.items())
    st.markdown("**No requests yet.** Point your OpenAI-compatible client at Lectr and send one:")
    st.code(
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f'    base_url="{proxy_url()}",\n'
        "    default_headers={\n"
        f"{header_lines}\n"
        '        "X-Lectr-Feature": "chat",  # which part of your product sent it\n'
        "    },\n"
        ")\n"
        'client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])',
        language="python",
    )
    st.code(
        f"curl {proxy_url()}/chat/completions \\\n"
        '  -H "Authorization: Bearer $OPENAI_API_KEY" \\\n'
        '  -H "X-Lectr-Key: $LECTR_KEY" -H "X-Lectr-Feature: chat" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        """  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'""",
        language="bash",
    )
    st.caption("Requests show up here within a few seconds. Your provider key passes through; it is never stored.")


def empty_period(has_traffic: bool) -> None:
    """The empty state of a page: the quickstart for a new org, else a hint to widen the period."""
    if has_traffic:
        st.info("No requests in this period. Pick a longer period in the sidebar.", icon=":material/schedule:")
    else:
        quickstart()


def table(
    frame: pl.DataFrame, columns: Mapping[str, str], formats: Mapping[str, Callable[[Any], str]] | None = None,
    height: int | None = None,
) -> None:
    """A table that keeps numbers sortable but shows them formatted (`columns`: name → heading)."""
    data = frame.select(list(columns)).to_pandas()
    styled = data.style.format({c: f for c, f in (formats or {}).items() if c in columns}, na_rep="—")
    column_config = {c: st.column_config.Column(label) for c, label in columns.items()}
    # Tall enough for every row (up to a screenful), so short tables never hide their last rows.
    fitted = height if height is not None else min(ROW_HEIGHT * (len(data) + 1) + 3, 640)
    st.dataframe(styled, hide_index=True, column_config=column_config, height=fitted,  # type: ignore[arg-type]
                 placeholder=fmt.UNKNOWN)

